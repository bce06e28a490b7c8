"""ImageNet fine-tuning job (BEiT recipe, built from timm's pieces); top-1 on the val split.

    run(cfg, run_dir) -> {"top1": ..., "history": [...], "rows": [tidy row], ...}

cfg["init"]: {"checkpoint": exported student file or None (from scratch), "model_name", "kwargs"}.
timm pieces: create_transform (RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, bicubic),
Mixup/CutMix with label smoothing -> SoftTargetCrossEntropy, layer-wise lr decay through
timm.optim.param_groups_layer_decay (Beit.group_matcher), step-wise cosine schedule with warm-up,
drop path, mean pooling + fc_norm (global_pool='avg'), no EMA.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..training import checkpoint
from ..utils import distributed
from ..utils.device import autocast, grad_scaler
from .pretrain import (SyntheticImages, image_folder, limit, make_optimizer, make_scheduler, per_rank_batch,
                       scaled_lr, setup)
from ..utils.progress import bar, get_logger
from ..utils.metrics import topk_correct
from ..models.mvp import IMAGENET_MEAN, IMAGENET_STD, create_backbone


def transforms(img_size: int, aug: dict, mean, std):
    from timm.data import create_transform

    train = create_transform(
        img_size, is_training=True, scale=tuple(aug.get("scale", (0.08, 1.0))),
        hflip=float(aug.get("hflip", 0.5)), color_jitter=float(aug.get("color_jitter", 0.4)),
        auto_augment=aug.get("auto_augment", "rand-m9-mstd0.5-inc1"), interpolation=aug.get("interpolation", "bicubic"),
        re_prob=float(aug.get("re_prob", 0.25)), re_mode=aug.get("re_mode", "pixel"), re_count=int(aug.get("re_count", 1)),
        mean=tuple(mean), std=tuple(std))
    _guard_posterize(train)
    val = create_transform(img_size, is_training=False, interpolation=aug.get("interpolation", "bicubic"),
                           crop_pct=float(aug.get("crop_pct", 0.875)), mean=tuple(mean), std=tuple(std))
    return train, val


def _posterize_zero_ok(img, bits_to_keep, **_):
    """Pillow >= 11 refuses 0 bits, which timm's 'inc1' posterize reaches at magnitude 10 (m9 + mstd noise);
    older Pillow (BEiT's era) returned a black image there: keep that behaviour."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _guard_posterize(transform) -> None:
    from timm.data.auto_augment import RandAugment

    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize_zero_ok


class _Normalized(torch.utils.data.Dataset):
    """Synthetic images normalised like the real transforms (tests)."""

    def __init__(self, base, mean, std):
        self.base, self.mean, self.std = base, torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return (x - self.mean) / self.std, y


def build_data(cfg: dict, img_size: int, mean, std):
    data_cfg, aug = cfg.get("data", {}), cfg.get("aug", {})
    seed = int(cfg.get("seed", 0))
    if data_cfg.get("kind", "imagenet") == "synthetic":
        k = int(data_cfg.get("num_classes", 4))
        train = _Normalized(SyntheticImages(int(data_cfg.get("n", 32)), img_size, k, seed), mean, std)
        val = _Normalized(SyntheticImages(int(data_cfg.get("n_val", 16)), img_size, k, seed + 1), mean, std)
        return train, val, k
    t_train, t_val = transforms(img_size, aug, mean, std)
    train = image_folder(data_cfg, "train", t_train)
    val = image_folder(data_cfg, "val", t_val)
    k = len(getattr(train, "classnames", None) or getattr(train, "classes"))
    return limit(train, data_cfg.get("max_train"), seed), limit(val, data_cfg.get("max_val"), seed), k


@torch.no_grad()
def evaluate(model, loader, device, precision="auto") -> tuple[float, float]:
    """(top-1 %, mean cross-entropy) over the whole (sharded) val set."""
    model.eval()
    stats = torch.zeros(3, device=device, dtype=torch.float64)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x)
        stats[0] += topk_correct(logits.float(), y, 1)
        stats[1] += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        stats[2] += y.numel()
    distributed.all_reduce_sum(stats)
    return float(stats[0] / stats[2] * 100), float(stats[1] / stats[2])


def run(cfg: dict, run_dir) -> dict:
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import param_groups_layer_decay

    run_dir = Path(run_dir)
    device = setup(cfg)
    log = get_logger()
    ocfg, aug, init = cfg["optim"], cfg.get("aug", {}), cfg["init"]
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    img_size = int(init["kwargs"].get("img_size", 224))
    train, val, num_classes = build_data(cfg, img_size, mean, std)
    model, report = create_backbone(init["model_name"], init["kwargs"], init.get("checkpoint"),
                                    num_classes=num_classes, global_pool="avg",
                                    drop_path_rate=float(ocfg.get("drop_path", 0.1)),
                                    head_init_scale=float(ocfg.get("head_init_scale", 0.001)))
    if init.get("checkpoint") and sorted(report["missing"]) != ["head.bias", "head.weight"]:
        raise RuntimeError(f"fine-tuning init from {init['checkpoint']}: unexpected load report {report}")
    model.to(device)

    seed = int(cfg.get("seed", 0))
    bs = per_rank_batch(int(ocfg["batch_size"]))
    sampler = distributed.shard(train, shuffle=True, seed=seed, drop_last=True)
    workers = int(cfg.get("data", {}).get("num_workers", 0))
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=bs, sampler=sampler, shuffle=sampler is None, generator=gen,
                        drop_last=True, num_workers=workers, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val, batch_size=bs, sampler=distributed.shard(val, shuffle=False), shuffle=False,
                            num_workers=workers)
    if len(loader) == 0:
        raise ValueError(f"{len(train)} training images are fewer than one batch ({ocfg['batch_size']})")

    mix_on = float(aug.get("mixup", 0.8)) > 0 or float(aug.get("cutmix", 1.0)) > 0
    smoothing = float(aug.get("smoothing", 0.1))
    mixup = Mixup(mixup_alpha=float(aug.get("mixup", 0.8)), cutmix_alpha=float(aug.get("cutmix", 1.0)),
                  prob=float(aug.get("mixup_prob", 1.0)), switch_prob=float(aug.get("mixup_switch_prob", 0.5)),
                  mode=aug.get("mixup_mode", "batch"), label_smoothing=smoothing,
                  num_classes=num_classes) if mix_on else None
    criterion = SoftTargetCrossEntropy() if mix_on else (
        LabelSmoothingCrossEntropy(smoothing) if smoothing else torch.nn.CrossEntropyLoss())

    lr = scaled_lr(ocfg)
    groups = param_groups_layer_decay(model, weight_decay=float(ocfg.get("weight_decay", 0.05)),
                                      no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=float(ocfg.get("layer_decay", 0.65)))
    opt = make_optimizer(groups, lr, ocfg, device)
    sched = make_scheduler(opt, ocfg, len(loader), "cosine")
    precision = cfg.get("precision", "auto")
    scaler = grad_scaler(device, precision)

    start_epoch, history = 0, []
    state = checkpoint.restore(run_dir, model, opt, scaler)
    if state is not None:
        start_epoch, history = state["epoch"] + 1, state["history"]
    ddp = distributed.wrap_ddp(model, device)
    epochs, clip_grad = int(ocfg["epochs"]), ocfg.get("clip_grad")
    eval_every = int(cfg.get("eval_every", 1))
    step, t0 = start_epoch * len(loader), time.time()
    for epoch in range(start_epoch, epochs):
        gen.manual_seed(seed * 1000 + epoch)  # same order after a resume
        if sampler is not None:
            sampler.set_epoch(epoch)
        ddp.train()
        total = torch.zeros(2, device=device)
        for x, y in bar(loader, desc=f"finetune[{cfg.get('method', '')}] {epoch + 1}/{epochs}", leave=False):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
            sched.step_update(step)
            with autocast(device, precision):
                loss = criterion(ddp(x).float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip_grad))
            scaler.step(opt)
            scaler.update()
            total += torch.stack([loss.detach(), torch.ones((), device=device)])
            step += 1
        distributed.all_reduce_sum(total)
        rec = {"epoch": epoch + 1, "step": step, "train_loss": float(total[0] / total[1]),
               "lr": max(g["lr"] for g in opt.param_groups), "elapsed_s": round(time.time() - t0, 2)}
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            rec["val_top1"], rec["val_loss"] = evaluate(model, val_loader, device, precision)
        history.append(rec)
        log.info("finetune[%s] epoch %d: %s", cfg.get("method", ""), epoch + 1, rec)
        checkpoint.save(run_dir, {"model": model.state_dict(), "opt": opt.state_dict(),
                                  "scaler": scaler.state_dict(), "epoch": epoch, "history": history})
    top1 = history[-1].get("val_top1") if history else None
    row = {"table": "imagenet_finetune", "method": cfg.get("method", "MVP"), "dataset": "ImageNet",
           "split": "val", "seed": seed, "metric": "acc", "value": top1, "run_id": run_dir.name}
    return {"top1": top1, "history": history, "rows": [row], "load_report": report, "lr": lr,
            "num_classes": num_classes, "train_images": len(train), "val_images": len(val),
            "world_size": distributed.world_size()}


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
