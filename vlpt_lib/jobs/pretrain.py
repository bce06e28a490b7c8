"""MVP pre-training job: a BEiT student regresses CLIP patch features (or normalised pixels) at masked patches.

    run(cfg, run_dir) -> {"export": <timm state dict file>, "history": [...], ...}

Recipe knobs (BEiT / beit2 pre-training, see params/paper/10_mvp_pretrain.yaml for the [A] list):
AdamW (betas 0.9/0.98, eps 1e-8) with weight decay 0.05 except biases, norms, layer scales, the
cls/mask tokens and the relative position tables; step-wise cosine schedule with linear warm-up
from warmup_lr; gradient clipping (3.0); the learning rate is absolute at the stated global batch:
lr_used = lr * global_batch / lr_ref_batch (lr_ref_batch = the batch the lr was tuned at; equal to
batch_size in the paper params, so no scaling unless the batch changes).
Global batch = optim.batch_size, split evenly over DDP ranks. One checkpoint per epoch; a restarted
run resumes from the last one. At the end rank 0 exports the backbone as a timm state dict.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..training import checkpoint
from ..utils import distributed
from ..utils.device import autocast, grad_scaler, limit_cpu_threads, pick_device, seed_everything
from ..utils.progress import bar, get_logger
from ..models.masking import BlockMaskGenerator
from ..models.mvp import MVPStudent, arch_spec, build_target, masked_loss, save_exported

EXPORT_NAME = "student_timm.pth"


# ----- shared by the three MVP jobs ------------------------------------------------------------
def setup(cfg: dict) -> torch.device:
    limit_cpu_threads(cfg.get("threads"))
    seed_everything(int(cfg.get("seed", 0)) + distributed.rank())
    return pick_device(cfg.get("device", "auto"))


def scaled_lr(optim_cfg: dict) -> float:
    ref = optim_cfg.get("lr_ref_batch") or optim_cfg["batch_size"]
    return float(optim_cfg["lr"]) * optim_cfg["batch_size"] / ref


def per_rank_batch(global_batch: int) -> int:
    ws = distributed.world_size()
    if global_batch % ws:
        raise ValueError(f"global batch {global_batch} does not split over {ws} ranks")
    return global_batch // ws


def make_optimizer(params, lr: float, optim_cfg: dict, device: torch.device) -> torch.optim.Optimizer:
    kw = dict(lr=lr, betas=tuple(optim_cfg.get("betas", (0.9, 0.999))), eps=float(optim_cfg.get("eps", 1e-8)))
    if device.type == "cuda" and optim_cfg.get("fused", True):
        kw["fused"] = True
    return torch.optim.AdamW(params, **kw)


def make_scheduler(opt, optim_cfg: dict, steps_per_epoch: int, kind: str = "cosine"):
    """timm's step-wise schedulers: cosine (pre-training, fine-tuning) or poly (segmentation)."""
    from timm.scheduler import CosineLRScheduler, PolyLRScheduler

    total = max(1, int(optim_cfg["epochs"] * steps_per_epoch)) if "epochs" in optim_cfg else int(optim_cfg["iters"])
    warm = int(optim_cfg.get("warmup_epochs", 0) * steps_per_epoch) if "warmup_epochs" in optim_cfg \
        else int(optim_cfg.get("warmup_iters", 0))
    warm = min(warm, total - 1)
    common = dict(t_initial=total, warmup_t=warm, warmup_lr_init=float(optim_cfg.get("warmup_lr", 1e-6)),
                  lr_min=float(optim_cfg.get("min_lr", 0.0)), t_in_epochs=False, warmup_prefix=False)
    if kind == "poly":
        return PolyLRScheduler(opt, power=float(optim_cfg.get("power", 1.0)), **common)
    return CosineLRScheduler(opt, **common)


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """BEiT's rule: no decay on 1-D params (biases, norms, layer scales) and on model.no_weight_decay()."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SyntheticImages(Dataset):
    """Random smooth images with labels (tests and benchmarks; no files)."""

    def __init__(self, n: int, size: int, num_classes: int = 4, seed: int = 0):
        self.n, self.size, self.num_classes, self.seed = n, size, num_classes, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        low = torch.rand(1, 3, 4, 4, generator=g)
        img = torch.nn.functional.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return img.clamp(0, 1), i % self.num_classes


def imagenet_root(data_cfg: dict) -> Path:
    """The ImageNet folder (holding images/{train,val}) from data.root: the world/data root or imagenet/ itself."""
    root = Path(data_cfg["root"]).expanduser()
    return root / "imagenet" if (root / "imagenet").is_dir() else root


def image_folder(data_cfg: dict, split: str, transform):
    from ..data.imagefolder import ImageNetFolder

    return ImageNetFolder(imagenet_root(data_cfg), split, transform)


def limit(dataset, n: int | None, seed: int = 0):
    if not n or n >= len(dataset):
        return dataset
    idx = np.random.default_rng(seed).permutation(len(dataset))[:n]
    return torch.utils.data.Subset(dataset, sorted(idx.tolist()))


# ----- pre-training data ----------------------------------------------------------------------
class MaskedImages(Dataset):
    """(image in [0, 1], block mask) pairs; each mask seeded by (seed, epoch, index)."""

    def __init__(self, base: Dataset, masker: BlockMaskGenerator, seed: int = 0):
        self.base, self.masker, self.seed, self.epoch = base, masker, seed, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        img = item[0] if isinstance(item, (tuple, list)) else item
        mask = self.masker(np.random.default_rng([self.seed, self.epoch, i]))
        return img, torch.from_numpy(mask)


def pretrain_transform(img_size: int, data_cfg: dict):
    """BEiT's pre-training view: random resized crop (scale min_crop_scale..1, bicubic) + flip (+ jitter)."""
    from torchvision.transforms import v2

    ops = [v2.ToImage(),
           v2.RandomResizedCrop(img_size, scale=(float(data_cfg.get("min_crop_scale", 0.2)), 1.0),
                                interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
           v2.RandomHorizontalFlip(float(data_cfg.get("hflip", 0.5)))]
    if data_cfg.get("color_jitter"):
        cj = float(data_cfg["color_jitter"])
        ops.append(v2.ColorJitter(cj, cj, cj))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(ops)


def build_pretrain_data(cfg: dict, student: MVPStudent) -> MaskedImages:
    data_cfg, mask_cfg = cfg.get("data", {}), cfg.get("mask", {})
    if data_cfg.get("kind", "imagenet") == "synthetic":
        base = SyntheticImages(int(data_cfg.get("n", 64)), student.img_size, seed=cfg.get("seed", 0))
    else:
        base = image_folder(data_cfg, data_cfg.get("split", "train"), pretrain_transform(student.img_size, data_cfg))
    base = limit(base, data_cfg.get("max_images"), cfg.get("seed", 0))
    if "num_masking_patches" in mask_cfg:
        masker = BlockMaskGenerator(student.grid, int(mask_cfg["num_masking_patches"]),
                                    int(mask_cfg.get("min_num_patches", 16)), mask_cfg.get("max_num_patches"),
                                    float(mask_cfg.get("min_aspect", 0.3)))
    else:
        masker = BlockMaskGenerator.from_ratio(student.grid, float(mask_cfg.get("ratio", 75 / 196)),
                                               float(mask_cfg.get("min_block_fraction", 16 / 196)),
                                               min_aspect=float(mask_cfg.get("min_aspect", 0.3)))
    return MaskedImages(base, masker, seed=int(cfg.get("seed", 0)))


def load_teacher_model(cfg: dict):
    from ..models.clip import load_clip

    c = cfg["clip"]
    return load_clip(c["model_name"], c["pretrained"], quick_gelu=c.get("quick_gelu")).model


def build_student_and_target(cfg: dict, device: torch.device):
    scfg = cfg.get("student", {})
    target_kind = cfg.get("target", "clip")
    clip_model = load_teacher_model(cfg) if target_kind == "clip" else None
    kw = dict(layer_scale_init=float(scfg.get("layer_scale_init", 0.1)),
              shared_rel_pos_bias=bool(scfg.get("shared_rel_pos_bias", True)),
              drop_path=float(scfg.get("drop_path", 0.0)))
    if "mean" in scfg:
        kw.update(mean=scfg["mean"], std=scfg["std"])
    patch = int(arch_spec(scfg.get("arch", "mini"))[1].get("patch_size", 16))
    target = build_target(target_kind, None, clip_model, precision=cfg.get("precision", "auto"), patch=patch,
                          **{k: scfg[k] for k in ("mean", "std") if k in scfg})
    student = MVPStudent(scfg.get("arch", "mini"), target_dim=target.out_dim, **kw)
    return student.to(device), target.to(device)


def loss_kind(cfg: dict) -> str:
    kind = cfg.get("loss", "auto")
    if kind == "auto":
        return "cosine" if cfg.get("target", "clip") == "clip" else "mse"
    return kind


# ----- the job ----------------------------------------------------------------------------------
def run(cfg: dict, run_dir) -> dict:
    run_dir = Path(run_dir)
    device = setup(cfg)
    log = get_logger()
    ocfg = cfg["optim"]
    student, target = build_student_and_target(cfg, device)
    data = build_pretrain_data(cfg, student)
    sampler = distributed.shard(data, shuffle=True, seed=int(cfg.get("seed", 0)), drop_last=True)
    gen = torch.Generator().manual_seed(int(cfg.get("seed", 0)))
    workers = int(cfg.get("data", {}).get("num_workers", 0))
    loader = DataLoader(data, batch_size=per_rank_batch(int(ocfg["batch_size"])), sampler=sampler,
                        shuffle=sampler is None, generator=gen, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    if len(loader) == 0:
        raise ValueError(f"pre-training set of {len(data)} images is smaller than one batch ({ocfg['batch_size']})")
    lr = scaled_lr(ocfg)
    opt = make_optimizer(weight_decay_groups(student, float(ocfg.get("weight_decay", 0.05))), lr, ocfg, device)
    sched = make_scheduler(opt, ocfg, len(loader), "cosine")
    scaler = grad_scaler(device, cfg.get("precision", "auto"))
    kind = loss_kind(cfg)

    start_epoch, history = 0, []
    state = checkpoint.restore(run_dir, student, opt, scaler)
    if state is not None:
        start_epoch, history = state["epoch"] + 1, state["history"]
        log.info("pretrain: resumed after epoch %d", state["epoch"])
    model = distributed.wrap_ddp(student, device)
    if cfg.get("compile"):
        model = torch.compile(model)
    epochs = int(ocfg["epochs"])
    clip_grad = ocfg.get("clip_grad")
    t0 = time.time()
    step = start_epoch * len(loader)
    for epoch in range(start_epoch, epochs):
        data.epoch = epoch
        gen.manual_seed(int(cfg.get("seed", 0)) * 1000 + epoch)  # same order after a resume
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        total, count = torch.zeros((), device=device), 0
        for images, mask in bar(loader, desc=f"pretrain[{cfg.get('target', 'clip')}] {epoch + 1}/{epochs}",
                                leave=False):
            images = images.to(device, non_blocking=True)
            mask = mask.to(device, non_blocking=True).flatten(1)
            sched.step_update(step)
            tgt = target(images, student.grid)[mask]
            with autocast(device, cfg.get("precision", "auto")):
                pred = model(images, mask)
            loss = masked_loss(pred, tgt, kind)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretrain: loss is {loss.item()} at step {step} (lower lr / beta2, "
                                         "or run in fp32: precision=fp32)")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(student.parameters(), float(clip_grad))
            scaler.step(opt)
            scaler.update()
            total += loss.detach()
            count += 1
            step += 1
        stats = torch.stack([total, torch.tensor(float(count), device=device)])
        distributed.all_reduce_sum(stats)
        history.append({"epoch": epoch + 1, "step": step, "loss": float(stats[0] / stats[1]),
                        "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.time() - t0, 2)})
        log.info("pretrain epoch %d: loss %.4f", epoch + 1, history[-1]["loss"])
        checkpoint.save(run_dir, {"model": student.state_dict(), "opt": opt.state_dict(),
                                  "scaler": scaler.state_dict(), "epoch": epoch, "history": history})
    export = run_dir / EXPORT_NAME
    if distributed.is_main():
        save_exported(student, export, extra={"target": cfg.get("target", "clip"), "epochs": epochs})
    distributed.barrier()
    return {"export": str(export), "model_name": student.model_name, "kwargs": student.timm_kwargs(),
            "target": cfg.get("target", "clip"), "loss_kind": kind, "history": history,
            "final_loss": history[-1]["loss"] if history else None, "lr": lr,
            "global_batch": int(ocfg["batch_size"]), "world_size": distributed.world_size(),
            "steps": step, "images_seen": step * int(ocfg["batch_size"]),
            "train_images": len(data), "num_masking_patches": data.masker.num_masking_patches,
            "grid": list(student.grid)}


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)


# ----- notebook glue: params (params/<profile>/10_mvp_pretrain.yaml) -> cached runs ---------------
def load_notebook_params(name: str, profile: str) -> dict:
    """params/<profile>/<name>.yaml as a dict (what the runner passes to the notebook)."""
    import yaml

    from .. import paths

    path = paths.REPO_ROOT / "params" / profile / f"{name}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def data_root_for(profile: str, data_root=None) -> str:
    from .. import paths

    if profile == "paper":
        return str(paths.paper_data_root(data_root))
    from ..data.mini_world import ensure_world

    return str(ensure_world(profile))


def cfg_from_params(p: dict, profile: str, target: str) -> dict:
    """The pre-training job config for one target from notebook 10's parameters."""
    cfg = {
        "seed": int(p.get("seed", 0)), "device": p.get("device", "auto"), "precision": p.get("precision", "auto"),
        "threads": p.get("threads", 2), "target": target, "loss": p.get("loss", "auto"),
        "student": {"arch": p.get("student_arch", "smoke"), "layer_scale_init": p.get("layer_scale_init", 0.1),
                    "shared_rel_pos_bias": p.get("shared_rel_pos_bias", True), "drop_path": p.get("drop_path", 0.0)},
        "data": {"root": data_root_for(profile, p.get("data_root")), "split": "train",
                 "max_images": p.get("max_images"), "num_workers": p.get("num_workers", 0),
                 "min_crop_scale": p.get("min_crop_scale", 0.2), "color_jitter": p.get("color_jitter", 0.0)},
        "mask": {"ratio": p.get("mask_ratio", 75 / 196), "min_block_fraction": p.get("min_block_fraction", 16 / 196),
                 "min_aspect": p.get("min_aspect", 0.3)},
        "optim": {k: p[k] for k in ("epochs", "batch_size", "lr", "lr_ref_batch", "min_lr", "warmup_lr",
                                    "warmup_epochs", "weight_decay", "betas", "eps", "clip_grad") if k in p},
        "compile": p.get("compile", False),
    }
    for k in ("mean", "std"):
        if p.get(k):
            cfg["student"][k] = list(p[k])
    if target == "clip":
        from ..models.clip import clip_spec

        name, pretrained = clip_spec(profile, p.get("clip_model"), p.get("clip_pretrained"))
        cfg["clip"] = {"model_name": name, "pretrained": str(pretrained), "quick_gelu": p.get("clip_quick_gelu")}
    return cfg


def index_path(profile: str) -> Path:
    """results/<profile>/mvp/pretrained.json: target -> exported student, written by notebook 10."""
    from .. import paths

    return paths.results_dir(profile) / "mvp" / "pretrained.json"


def ensure_pretrained(profile: str, params: dict | None = None, targets=("clip", "pixel"), force: bool = False) -> dict:
    """Run (or fetch from the run cache) the pre-training of each target; write and return the index.

    params: notebook 10's parameters; None reads params/<profile>/10_mvp_pretrain.yaml, so notebooks
    11 and 12 find the same cached runs notebook 10 made (or make them when run on their own).
    """
    import json

    from ..utils.io import atomic_write
    from .launch import run_job

    p = load_notebook_params("10_mvp_pretrain", profile) if params is None else dict(params)
    index = {}
    for target in targets:
        cfg = cfg_from_params(p, profile, target)
        result = run_job("pretrain", cfg, profile, launcher=p.get("launcher", "inline"), nproc=int(p.get("nproc", 1)),
                         slurm=p.get("slurm"), force=force)
        index[target] = {"export": result["export"], "model_name": result["model_name"], "kwargs": result["kwargs"],
                         "run_id": result.get("run_id"), "final_loss": result.get("final_loss")}
    old = json.loads(index_path(profile).read_text()) if index_path(profile).exists() else {}
    atomic_write(index_path(profile), json.dumps({**old, **index}, indent=2))
    return index


def pretrained_exports(profile: str, index_file=None) -> dict:
    """The exported students for notebooks 11/12: the index notebook 10 wrote, else run 10's params."""
    import json

    path = Path(index_file) if index_file else index_path(profile)
    if path.exists():
        index = json.loads(path.read_text())
        if all(Path(v["export"]).exists() for v in index.values()) and {"clip", "pixel"} <= set(index):
            return index
    return ensure_pretrained(profile)
