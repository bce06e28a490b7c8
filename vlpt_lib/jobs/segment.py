"""ADE20K semantic segmentation job: UperNet on the (pre-trained or scratch) BEiT backbone; mIoU on val.

    run(cfg, run_dir) -> {"miou": ..., "history": [...], "rows": [tidy row], "examples": file, ...}

BEiT's ADE20K recipe as parameters: crop 512, random rescale of (2048, 512) by 0.5-2.0, random
crop with at most 75 % of one class, flip, photometric distortion; AdamW, layer decay 0.65, poly
schedule (power 1) with linear warm-up; auxiliary FCN head weight 0.4; iteration-based (160k x 16).
Test: the image rescaled to the short side of img_scale, sliding window (crop, stride), logits resized
to the label's size, mIoU from dataset-wide intersections and unions (vlpt_lib.metrics), label 0
ignored via reduce_zero_label (done by the ADE20K loader).
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..training import checkpoint
from ..utils import distributed
from ..utils.device import autocast, grad_scaler
from .pretrain import make_optimizer, make_scheduler, per_rank_batch, scaled_lr, setup
from ..utils.progress import bar, get_logger
from ..utils.metrics import IGNORE_INDEX, MeanIoU
from ..models.mvp import IMAGENET_MEAN, IMAGENET_STD, create_backbone
from ..models.segmentation import BeitUperNet, layer_decay_param_groups, seg_loss, slide_inference


# ----- joint image + mask transforms (torchvision.transforms.v2 on tv_tensors) -------------------
def _to_tv(image, mask):
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    if not isinstance(image, torch.Tensor):
        image = TF.pil_to_tensor(image) if hasattr(image, "mode") else torch.as_tensor(np.asarray(image)).permute(2, 0, 1)
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(np.array(mask))
    if mask.ndim == 3:
        mask = mask[0]
    return tv_tensors.Image(image), tv_tensors.Mask(mask.long())


class SegTrain:
    """Rescale (img_scale x U(ratio)), pad, crop with cat_max_ratio, flip, photometric, normalise."""

    def __init__(self, crop: int, img_scale=(2048, 512), ratio_range=(0.5, 2.0), cat_max_ratio: float = 0.75,
                 photometric: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        from torchvision.transforms import v2

        self.crop, self.img_scale, self.ratio = crop, tuple(img_scale), tuple(ratio_range)
        self.cat_max_ratio, self.mean, self.std = cat_max_ratio, list(mean), list(std)
        # mmseg PhotoMetricDistortion: brightness +-32, contrast/saturation 0.5-1.5, hue +-18 degrees
        self.photo = v2.ColorJitter(32 / 255, (0.5, 1.5), (0.5, 1.5), 18 / 360) if photometric else None

    def __call__(self, image, mask):
        from torchvision.transforms.v2 import functional as TF

        img, m = _to_tv(image, mask)
        h, w = img.shape[-2:]
        r = random.uniform(*self.ratio)
        long_side, short_side = max(self.img_scale) * r, min(self.img_scale) * r
        scale = min(long_side / max(h, w), short_side / min(h, w))
        size = [max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))]
        img = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        m = TF.resize(m, size)  # masks resize with nearest
        ph, pw = max(self.crop - size[0], 0), max(self.crop - size[1], 0)
        if ph or pw:
            img, m = TF.pad(img, [0, 0, pw, ph], fill=0), TF.pad(m, [0, 0, pw, ph], fill=IGNORE_INDEX)
        H, W = img.shape[-2:]
        for _ in range(10):  # mmseg RandomCrop(cat_max_ratio): retry crops dominated by one class
            top, left = random.randint(0, H - self.crop), random.randint(0, W - self.crop)
            window = m[top:top + self.crop, left:left + self.crop]
            labels, counts = torch.unique(window[window != IGNORE_INDEX], return_counts=True)
            if self.cat_max_ratio >= 1 or (len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio):
                break
        img = TF.crop(img, top, left, self.crop, self.crop)
        m = TF.crop(m, top, left, self.crop, self.crop)
        if random.random() < 0.5:
            img, m = TF.horizontal_flip(img), TF.horizontal_flip(m)
        if self.photo is not None:
            img = self.photo(img)
        x = TF.normalize(TF.to_dtype(img, torch.float32, scale=True), self.mean, self.std)
        return x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).long()


class SegVal:
    """Rescale the image to fit img_scale (keep ratio); the label keeps its original size."""

    def __init__(self, img_scale=(2048, 512), mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.img_scale, self.mean, self.std = tuple(img_scale), list(mean), list(std)

    def __call__(self, image, mask):
        from torchvision.transforms.v2 import functional as TF

        img, m = _to_tv(image, mask)
        h, w = img.shape[-2:]
        scale = min(max(self.img_scale) / max(h, w), min(self.img_scale) / min(h, w))
        img = TF.resize(img, [int(h * scale + 0.5), int(w * scale + 0.5)],
                        interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        x = TF.normalize(TF.to_dtype(img, torch.float32, scale=True), self.mean, self.std)
        return x.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).long()


class SyntheticScenes(Dataset):
    """Random rectangles on a background, labels 0..k-1 and some 255 (tests; no files)."""

    def __init__(self, n: int, size: int, num_classes: int, transform, seed: int = 0):
        self.n, self.size, self.k, self.transform, self.seed = n, size, num_classes, transform, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, i])
        img = np.full((self.size, self.size, 3), 30, np.uint8)
        mask = np.zeros((self.size, self.size), np.uint8)
        for c in range(1, self.k):
            y, x = rng.integers(0, self.size // 2, 2)
            s = int(rng.integers(self.size // 4, self.size // 2))
            img[y:y + s, x:x + s] = (40 * c) % 255
            mask[y:y + s, x:x + s] = c
        mask[:2] = IGNORE_INDEX
        return self.transform(img, mask)


def ade_num_classes(root: Path) -> int:
    info = root / "objectInfo150.txt"
    if info.exists():
        return sum(1 for line in info.read_text().splitlines()[1:] if line.strip())
    return 150


def build_data(cfg: dict, mean, std):
    d = cfg.get("data", {})
    crop, img_scale = int(d.get("crop", 512)), tuple(d.get("img_scale", (2048, 512)))
    train_tf = SegTrain(crop, img_scale, tuple(d.get("ratio_range", (0.5, 2.0))), float(d.get("cat_max_ratio", 0.75)),
                        bool(d.get("photometric", True)), mean, std)
    val_tf = SegVal(img_scale, mean, std)
    seed = int(cfg.get("seed", 0))
    if d.get("kind", "ade20k") == "synthetic":
        k = int(d.get("num_classes", 4))
        return (SyntheticScenes(int(d.get("n", 16)), int(d.get("size", crop)), k, train_tf, seed),
                SyntheticScenes(int(d.get("n_val", 4)), int(d.get("size", crop)), k, val_tf, seed + 1), k)
    from ..data.ade20k import ADE20K

    root = Path(d["root"]).expanduser()
    root = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    train = ADE20K(root, "training", train_tf, reduce_zero_label=True)
    val = ADE20K(root, "validation", val_tf, reduce_zero_label=True)
    k = int(d.get("num_classes") or getattr(train, "num_classes", 0) or ade_num_classes(root))
    from .pretrain import limit

    return limit(train, d.get("max_train"), seed), limit(val, d.get("max_val"), seed), k


def build_model(cfg: dict, num_classes: int) -> tuple[BeitUperNet, dict]:
    init, m = cfg["init"], cfg.get("model", {})
    kwargs = dict(init["kwargs"])
    kwargs["img_size"] = int(cfg.get("data", {}).get("crop", kwargs.get("img_size", 224)))
    backbone, report = create_backbone(init["model_name"], kwargs, init.get("checkpoint"), num_classes=0,
                                       drop_path_rate=float(cfg["optim"].get("drop_path", 0.1)))
    if init.get("checkpoint"):
        extra = [k for k in report["missing"] if not k.startswith("head.")]
        if extra or report["unexpected"]:
            raise RuntimeError(f"segmentation init from {init['checkpoint']}: unexpected load report {report}")
    model = BeitUperNet(backbone, num_classes, decoder_channels=int(m.get("decoder_channels", 512)),
                        aux_channels=int(m.get("aux_channels", 256)), out_indices=m.get("out_indices"))
    backbone.prune_intermediate_layers(model.out_indices, prune_norm=True, prune_head=True)
    return model, report


@torch.no_grad()
def evaluate(model, dataset, num_classes: int, device, cfg: dict, keep_examples: int = 0):
    d = cfg.get("data", {})
    crop = int(d.get("crop", 512))
    stride = int(d.get("stride", math.ceil(crop * 2 / 3)))
    model.eval()
    metric = MeanIoU(num_classes)
    sampler = distributed.shard(dataset, shuffle=False)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, shuffle=False,
                        num_workers=int(d.get("num_workers", 0)))
    examples = []
    for x, y in loader:
        x = x.to(device)
        with autocast(device, cfg.get("precision", "auto")):
            logits = slide_inference(model, x, num_classes, crop, stride)
        logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1).cpu()
        metric.update(pred, y)
        if len(examples) < keep_examples:
            examples.append({"image": x[0].cpu(), "label": y[0].to(torch.int16), "pred": pred[0].to(torch.int16)})
    state = metric.state().to(device)
    distributed.all_reduce_sum(state)
    metric.load_state(state)
    return metric.compute(), examples


def run(cfg: dict, run_dir) -> dict:
    run_dir = Path(run_dir)
    device = setup(cfg)
    log = get_logger()
    ocfg = cfg["optim"]
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    train, val, k = build_data(cfg, mean, std)
    model, report = build_model(cfg, k)
    if distributed.is_dist():
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    seed = int(cfg.get("seed", 0))
    sampler = distributed.shard(train, shuffle=True, seed=seed, drop_last=True)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=per_rank_batch(int(ocfg["batch_size"])), sampler=sampler,
                        shuffle=sampler is None, generator=gen, drop_last=True,
                        num_workers=int(cfg.get("data", {}).get("num_workers", 0)), pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise ValueError(f"{len(train)} training images are fewer than one batch ({ocfg['batch_size']})")
    lr = scaled_lr(ocfg)
    opt = make_optimizer(layer_decay_param_groups(model, float(ocfg.get("weight_decay", 0.05)),
                                                  float(ocfg.get("layer_decay", 0.65))), lr, ocfg, device)
    sched = make_scheduler(opt, ocfg, len(loader), "poly")
    precision = cfg.get("precision", "auto")
    scaler = grad_scaler(device, precision)
    iters, aux_w = int(ocfg["iters"]), float(cfg.get("model", {}).get("aux_weight", 0.4))
    ckpt_every = int(cfg.get("ckpt_every", max(1, len(loader))))
    eval_every = int(cfg.get("eval_every", 0))

    it, history, evals = 0, [], []
    state = checkpoint.restore(run_dir, model, opt, scaler)
    if state is not None:
        it, history, evals = state["iter"], state["history"], state.get("evals", [])
        log.info("segment: resumed at iteration %d", it)
    ddp = distributed.wrap_ddp(model, device)
    t0, epoch = time.time(), it // len(loader)
    pbar = bar(total=iters, initial=it, desc=f"segment[{cfg.get('method', '')}]", leave=False)
    running = torch.zeros(2, device=device)
    while it < iters:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in loader:
            if it >= iters:
                break
            ddp.train()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sched.step_update(it)
            with autocast(device, precision):
                out = ddp(x)
            loss = seg_loss({k_: v.float() for k_, v in out.items()}, y, aux_w)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if ocfg.get("clip_grad"):
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(ocfg["clip_grad"]))
            scaler.step(opt)
            scaler.update()
            running += torch.stack([loss.detach(), torch.ones((), device=device)])
            it += 1
            pbar.update()
            if it % ckpt_every == 0 or it == iters:
                distributed.all_reduce_sum(running)
                history.append({"iter": it, "train_loss": float(running[0] / running[1]),
                                "lr": max(g["lr"] for g in opt.param_groups), "elapsed_s": round(time.time() - t0, 2)})
                running.zero_()
                if eval_every and it % eval_every == 0 and it != iters:
                    evals.append({"iter": it, "miou": evaluate(model, val, k, device, cfg)[0]["miou"]})
                checkpoint.save(run_dir, {"model": model.state_dict(), "opt": opt.state_dict(),
                                          "scaler": scaler.state_dict(), "iter": it, "history": history,
                                          "evals": evals})
        epoch += 1
    pbar.close()
    scores, examples = evaluate(model, val, k, device, cfg, keep_examples=int(cfg.get("examples", 4)))
    evals.append({"iter": it, "miou": scores["miou"]})
    log.info("segment[%s]: mIoU %.2f", cfg.get("method", ""), scores["miou"])
    ex_path = run_dir / "examples.pt"
    if distributed.is_main() and examples:
        import io
        from ..utils.io import atomic_write

        buf = io.BytesIO()
        torch.save({"examples": examples, "mean": mean, "std": std}, buf)
        atomic_write(ex_path, buf.getvalue())
    row = {"table": "ade20k_segmentation", "method": cfg.get("method", "MVP"), "dataset": "ADE20K", "split": "val",
           "seed": seed, "metric": "miou", "value": scores["miou"], "run_id": run_dir.name}
    return {"miou": scores["miou"], "macc": scores["macc"], "aacc": scores["aacc"],
            "per_class_iou": scores["per_class_iou"], "history": history, "evals": evals, "rows": [row],
            "examples": str(ex_path) if examples else None, "num_classes": k, "load_report": report, "lr": lr,
            "train_images": len(train), "val_images": len(val), "world_size": distributed.world_size()}


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
