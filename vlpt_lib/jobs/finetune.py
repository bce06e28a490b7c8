"""ImageNet fine-tuning job (BEiT recipe, built from timm's pieces); top-1 on the val split.

    run(cfg, run_dir) -> {"top1": ..., "history": [...], "rows": [tidy row], ...}

cfg.init: the exported student of the pretrain job (checkpoint, model_name, kwargs), or no checkpoint
(from scratch). What is this job's own: timm's create_transform (RandAugment rand-m9-mstd0.5-inc1,
random erasing 0.25, bicubic), Mixup/CutMix with label smoothing -> SoftTargetCrossEntropy, drop
path, mean pooling + fc_norm (global_pool='avg'), no EMA, and top-1 on val (exact under DDP). The
loop, AdamW with BEiT's layer-wise lr decay (timm's, through Beit.group_matcher), the per-iteration
cosine schedule with warm-up, DDP and resume come from `vlpt_lib.training`.

Defaults = BEiT/beit2's public fine-tuning recipe for the base model (300-epoch checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from PIL import Image, ImageOps
from timm.data import Mixup, create_transform
from timm.data.auto_augment import RandAugment
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from ..data.imagefolder import ImageNetFolder, limit
from ..data.synthetic import SyntheticImages
from ..models.mvp import IMAGENET_MEAN, IMAGENET_STD, create_backbone
from ..training import loop, optim
from ..training.evaluate import evaluate_classifier
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything
from .pretrain import Init, Strict


class Data(Strict):
    kind: Literal["imagenet", "synthetic"] = "imagenet"  # synthetic: in-memory images (tests)
    root: str | None = None                 # folder holding imagenet/images/{train,val} (or imagenet/ itself)
    max_train: int | None = None            # caps (None: the whole split)
    max_val: int | None = None
    num_workers: int = 0                    # [env] DataLoader workers (the notebook passes its knob)
    n: int = 32                             # synthetic only: train / val sizes and classes
    n_val: int = 16
    num_classes: int = 4


class Aug(Strict):
    """timm's create_transform + Mixup arguments (BEiT run_class_finetuning.py defaults)."""
    scale: tuple[float, float] = (0.08, 1.0)  # random resized crop scale
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str = "rand-m9-mstd0.5-inc1"  # [V] BEiT --aa
    interpolation: str = "bicubic"
    re_prob: float = 0.25                   # [V] BEiT --reprob
    re_mode: str = "pixel"
    re_count: int = 1
    crop_pct: float = 0.875                 # val: resize to size / crop_pct, centre crop
    mixup: float = 0.8                      # [V] BEiT --mixup
    cutmix: float = 1.0                     # [V] BEiT --cutmix
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1                  # [V] BEiT --smoothing


class Optim(Strict):
    epochs: int = 100                       # [V] BEiT base fine-tuning: 100 epochs
    batch_size: int = 1024                  # [V] global batch
    lr: float = 5e-4                        # [V] BEiT base, quoted at batch 1024
    lr_ref_batch: int | None = 1024         # [A] the batch `lr` is quoted at; None: no scaling
    min_lr: float = 1e-6                    # [V] BEiT --min_lr
    warmup_lr: float = 1e-6                 # [V] BEiT --warmup_lr
    warmup_epochs: float = 20               # [V] BEiT base: 20 warm-up epochs
    weight_decay: float = 0.05              # [V] BEiT --weight_decay
    layer_decay: float = 0.65               # [V] BEiT base --layer_decay 0.65
    drop_path: float = 0.1                  # [V] BEiT base --drop_path 0.1
    head_init_scale: float = 0.001          # [V] BEiT --init_scale 0.001
    betas: tuple[float, float] = (0.9, 0.999)  # [V] BEiT fine-tuning AdamW (torch defaults)
    eps: float = 1e-8
    clip_grad: float | None = None          # [V] BEiT fine-tuning: no clipping


class Config(Strict):
    seed: int = 0
    device: str = "auto"                    # [env]
    precision: str = "auto"                 # [env] auto: bf16 autocast on CUDA, fp32 on CPU
    threads: int | None = None              # [env]
    method: str = "MVP"                     # the table row this run fills
    eval_every: int = 1                     # evaluate every n epochs (and after the last)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # [A] BEiT: ImageNet mean/std
    std: tuple[float, float, float] = IMAGENET_STD
    init: Init = Init()
    data: Data = Data()
    aug: Aug = Aug()
    optim: Optim = Optim()


# ----- data ---------------------------------------------------------------------------------------
def transforms(img_size: int, aug: Aug, mean, std):
    train = create_transform(
        img_size, is_training=True, scale=tuple(aug.scale), hflip=aug.hflip, color_jitter=aug.color_jitter,
        auto_augment=aug.auto_augment, interpolation=aug.interpolation, re_prob=aug.re_prob, re_mode=aug.re_mode,
        re_count=aug.re_count, mean=tuple(mean), std=tuple(std))
    _guard_posterize(train)
    val = create_transform(img_size, is_training=False, interpolation=aug.interpolation, crop_pct=aug.crop_pct,
                           mean=tuple(mean), std=tuple(std))
    return train, val


def _posterize_zero_ok(img, bits_to_keep, **_):
    """Pillow >= 11 refuses 0 bits, which timm's 'inc1' posterize reaches at magnitude 10 (m9 + mstd noise);
    older Pillow (BEiT's era) returned a black image there: keep that behaviour."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _guard_posterize(transform) -> None:
    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize_zero_ok


def build_data(cfg: Config, img_size: int):
    d = cfg.data
    if d.kind == "synthetic":
        train = SyntheticImages(d.n, img_size, d.num_classes, cfg.seed, mean=cfg.mean, std=cfg.std)
        val = SyntheticImages(d.n_val, img_size, d.num_classes, cfg.seed + 1, mean=cfg.mean, std=cfg.std)
        return train, val, d.num_classes
    if d.root is None:
        raise ValueError("finetune: data.root is not set (the folder holding imagenet/)")
    t_train, t_val = transforms(img_size, cfg.aug, cfg.mean, cfg.std)
    train = ImageNetFolder(d.root, "train", t_train)
    val = ImageNetFolder(d.root, "val", t_val)
    return limit(train, d.max_train, cfg.seed), limit(val, d.max_val, cfg.seed), len(train.classnames)


# ----- the job ------------------------------------------------------------------------------------
def run(cfg: dict, run_dir) -> dict:
    cfg = Config.model_validate(cfg)
    run_dir = Path(run_dir)
    limit_cpu_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    o, aug, init = cfg.optim, cfg.aug, cfg.init
    img_size = int(init.kwargs.get("img_size", 224))
    train, val, num_classes = build_data(cfg, img_size)
    model, report = create_backbone(init.model_name, init.kwargs, init.checkpoint, num_classes=num_classes,
                                    global_pool="avg", drop_path_rate=o.drop_path, head_init_scale=o.head_init_scale)
    if init.checkpoint and sorted(report["missing"]) != ["head.bias", "head.weight"]:
        raise RuntimeError(f"fine-tuning init from {init.checkpoint}: unexpected load report {report}")
    model.to(device)

    loader = loop.make_loader(train, batch_size=o.batch_size, seed=cfg.seed, drop_last=True,
                              num_workers=cfg.data.num_workers, device=device)
    mix_on = aug.mixup > 0 or aug.cutmix > 0
    mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob,
                  switch_prob=aug.mixup_switch_prob, mode=aug.mixup_mode, label_smoothing=aug.smoothing,
                  num_classes=num_classes) if mix_on else None
    criterion = SoftTargetCrossEntropy() if mix_on else (
        LabelSmoothingCrossEntropy(aug.smoothing) if aug.smoothing else torch.nn.CrossEntropyLoss())

    lr = optim.scaled_lr(o.lr, o.batch_size, o.lr_ref_batch)
    opt = optim.create_optimizer(model, opt="adamw", lr=lr, weight_decay=o.weight_decay, layer_decay=o.layer_decay,
                                 betas=o.betas, eps=o.eps, device=device)
    sched = optim.create_scheduler(opt, "cosine", steps_per_epoch=len(loader), epochs=o.epochs,
                                   warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr, min_lr=o.min_lr,
                                   warmup_prefix=False)

    def step_fn(m, batch):
        x, y = batch
        if mixup is not None:
            x, y = mixup(x, y)
        return criterion(m(x).float(), y)

    def evaluate(m) -> dict:
        r = evaluate_classifier(m, val, device=device, batch_size=loader.batch_size, precision=cfg.precision,
                                num_workers=cfg.data.num_workers, num_classes=num_classes, desc="val")
        return {"val_top1": r["top1"], "val_loss": r["loss"]}

    history = loop.train(model, train, step_fn, opt, sched, run_dir, device=device, epochs=o.epochs,
                         batch_size=o.batch_size, seed=cfg.seed, clip_grad=o.clip_grad, precision=cfg.precision,
                         num_workers=cfg.data.num_workers, loader=loader, evaluate=evaluate,
                         eval_every=cfg.eval_every, desc=f"finetune[{cfg.method}]")
    top1 = history[-1].get("val_top1") if history else None
    row = {"table": "imagenet_finetune", "method": cfg.method, "dataset": "ImageNet", "split": "val",
           "seed": cfg.seed, "metric": "acc", "value": top1, "run_id": run_dir.name}
    return {"top1": top1, "history": history, "rows": [row], "load_report": report, "lr": lr,
            "num_classes": num_classes, "train_images": len(train), "val_images": len(val),
            "world_size": distributed.world_size()}


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
