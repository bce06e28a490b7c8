"""ImageNet fine-tuning job (BEiT recipe, built from timm's pieces); top-1 on the val split.

    run(cfg, run_dir) -> {"top1": ..., "history": [...], "rows": [tidy row], ...}

cfg.init: the exported student of the pretrain job (checkpoint, model_name, kwargs), or no checkpoint
(from scratch). What is this job's own: timm's create_transform (RandAugment rand-m9-mstd0.5-inc1,
random erasing 0.25, bicubic), Mixup/CutMix with label smoothing -> SoftTargetCrossEntropy, drop
path, mean pooling + fc_norm (global_pool='avg'; fc_norm starts at weight 1, bias 0 and the pre-training
final norm is unused, as in beit2's fine-tuning: models.mvp.create_backbone), no EMA, BEiT's parameter
groups (layer-wise lr decay and weight decay as its optim_factory: models.mvp.beit_finetune_param_groups),
and top-1 on val after every epoch (exact under DDP). The result and the table carry the best top-1 over the evaluated
epochs (BEiT's max_accuracy, the papers' practice: metric "acc") and the last epoch's ("acc_final").
The loop, AdamW, BEiT's per-iteration cosine_scheduler, DDP and resume come from `vlpt_lib.training`.

Defaults = BEiT/beit2's public fine-tuning recipe for the base model (300-epoch checkpoint); every
field names its source in `Field(description=...)` (the notebooks' recipe card).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from PIL import Image, ImageOps
from pydantic import Field
from timm.data import Mixup, create_transform
from timm.data.auto_augment import RandAugment
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from ..data.imagefolder import ImageNetFolder, limit
from ..data.synthetic import SyntheticImages
from ..models.mvp import IMAGENET_MEAN, IMAGENET_STD, beit_finetune_param_groups, create_backbone
from ..training import loop, optim
from ..training.evaluate import evaluate_classifier
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything
from ..utils.fields import Count, Index, NonNegative, Positive, Probability
from .pretrain import Init, RunSettings, Strict, imagenet_paths


# Sources: "BEiT" = microsoft/unilm beit/ and beit2/ run_class_finetuning.py (argument defaults) and
# beit2 get_started_for_image_classification.md (the base model's command: "for pretrained models");
# "[A]" where we choose, with the reason; "[env]" how to run (left off the recipe card).
class Data(Strict):
    kind: Literal["imagenet", "synthetic"] = Field("imagenet", description="workbook parameter: an image folder, "
                                                                           "or synthetic in-memory images (tests)")
    root: str | None = Field(None, description="workbook parameter: the profile's data root (holds imagenet/)")
    max_train: Count | None = Field(None, description="workbook parameter: cap on the train images (None: all)")
    max_val: Count | None = Field(None, description="workbook parameter: cap on the val images (None: all)")
    num_workers: Index = Field(0, description="[env] DataLoader workers (the notebook passes its knob)")
    n: Count = Field(32, description="[env] synthetic only: train images")
    n_val: Count = Field(16, description="[env] synthetic only: val images")
    num_classes: Count = Field(4, description="[env] synthetic only: classes (ImageNet: from the folder)")


class Aug(Strict):
    """timm's create_transform + Mixup arguments (BEiT run_class_finetuning.py defaults)."""
    scale: tuple[Probability, Probability] = Field((0.08, 1.0), description="BEiT datasets.build_transform: timm "
                                                                            "create_transform's default crop scale")
    hflip: Probability = Field(0.5, description="BEiT datasets.build_transform: timm create_transform's default flip")
    color_jitter: NonNegative = Field(0.4, description="BEiT run_class_finetuning.py --color_jitter 0.4")
    auto_augment: str = Field("rand-m9-mstd0.5-inc1", description="BEiT run_class_finetuning.py --aa")
    interpolation: Literal["bicubic", "bilinear", "nearest", "random"] = Field("bicubic",
        description="BEiT run_class_finetuning.py --train_interpolation bicubic")
    re_prob: Probability = Field(0.25, description="BEiT run_class_finetuning.py --reprob 0.25")
    re_mode: Literal["const", "rand", "pixel"] = Field("pixel",
        description="BEiT run_class_finetuning.py --remode pixel")
    re_count: Count = Field(1, description="BEiT run_class_finetuning.py --recount 1")
    crop_pct: Probability = Field(0.875, description="BEiT datasets.build_transform: crop_pct 224/256 below 384 px "
                                                     "(val: resize to size / crop_pct, centre crop)")
    mixup: NonNegative = Field(0.8, description="beit2 get_started: --mixup 0.8 for pretrained models")
    cutmix: NonNegative = Field(1.0, description="beit2 get_started: --cutmix 1.0 for pretrained models")
    mixup_prob: Probability = Field(1.0, description="BEiT run_class_finetuning.py --mixup_prob 1.0")
    mixup_switch_prob: Probability = Field(0.5, description="BEiT run_class_finetuning.py --mixup_switch_prob 0.5")
    mixup_mode: Literal["batch", "pair", "elem"] = Field("batch",
        description="BEiT run_class_finetuning.py --mixup_mode batch")
    smoothing: Probability = Field(0.1, description="BEiT run_class_finetuning.py --smoothing 0.1")


class Optim(Strict):
    epochs: Count = Field(100, description="beit2 get_started: --epochs 100 for pretrained models")
    batch_size: Count = Field(1024, description="beit2 get_started: 128 per GPU x 8 GPUs = global 1024")
    lr: Positive = Field(5e-4, description="beit2 get_started: --lr 5e-4 for pretrained models (at batch 1024)")
    lr_ref_batch: Count | None = Field(1024, description="[A] the batch `lr` is quoted at; linear scaling for another "
                                                         "batch (BEiT does not scale); None: lr used as is")
    schedule: Literal["beit_cosine"] = Field("beit_cosine", description="BEiT utils.cosine_scheduler per iteration: "
                                                                        "linear warm-up (linspace), then cosine to "
                                                                        "min_lr; lr x lr_scale per group")
    min_lr: NonNegative = Field(1e-6, description="BEiT run_class_finetuning.py --min_lr 1e-6")
    warmup_lr: NonNegative = Field(0.0, description="BEiT run_class_finetuning.py calls cosine_scheduler without "
                                                    "start_warmup_value: the warm-up starts at 0 (--warmup_lr 1e-6 is "
                                                    "parsed, unused)")
    warmup_epochs: NonNegative = Field(20, description="beit2 get_started: --warmup_epochs 20")
    weight_decay: NonNegative = Field(0.05, description="beit2 get_started: --weight_decay 0.05, constant; not on 1-D, "
                                                        ".bias, pos_embed, cls_token: the per-layer rel-pos tables ARE "
                                                        "decayed (optim_factory)")
    layer_decay: Probability = Field(0.65, description="beit2 get_started: --layer_decay 0.65 for 300-epoch models; "
                                                       "scale 0.65^(L+1-id), id 0 embeddings, i+1 block i "
                                                       "(optim_factory)")
    drop_path: Probability = Field(0.1, description="beit2 get_started: --drop_path 0.1 for 300-epoch models")
    head_init_scale: Positive = Field(0.001, description="BEiT run_class_finetuning.py --init_scale 0.001")
    betas: tuple[Probability, Probability] = Field((0.9, 0.999),
        description="BEiT run_class_finetuning.py --opt_betas None "
                    "(torch AdamW's 0.9, 0.999)")
    eps: Positive = Field(1e-8, description="BEiT run_class_finetuning.py --opt_eps 1e-8")
    clip_grad: Positive | None = Field(None, description="BEiT run_class_finetuning.py --clip_grad None")


class Config(RunSettings):
    method: str = Field("MVP", description="workbook parameter: the table row this run fills")
    eval_every: int = Field(1, description="BEiT evaluates after every epoch (max_accuracy: the best of them)")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="beit2 get_started "
                                                                        "--imagenet_default_mean_and_std")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="beit2 get_started "
                                                                      "--imagenet_default_mean_and_std")
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


# The table's two numbers per run: BEiT's practice (run_class_finetuning.py keeps max_accuracy, the best val
# top-1 over the evaluated epochs: what the papers report) under the metric the reference rows use, and
# the last epoch's top-1 beside it.
METRIC_BEST = "acc"
METRIC_FINAL = "acc_final"


def with_running_best(history: list[dict]) -> list[dict]:
    """Each evaluated epoch also gets `val_top1_best`: the best val top-1 so far (BEiT's max_accuracy)."""
    best, out = None, []
    for h in history:
        h = dict(h)
        if h.get("val_top1") is not None:
            best = h["val_top1"] if best is None else max(best, h["val_top1"])
            h["val_top1_best"] = best
        out.append(h)
    return out


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
    opt = optim.create_optimizer(beit_finetune_param_groups(model, o.weight_decay, o.layer_decay), opt="adamw",
                                 lr=lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps, device=device)
    sched = optim.create_scheduler(opt, o.schedule, steps_per_epoch=len(loader), epochs=o.epochs,
                                   warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr, min_lr=o.min_lr)

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
                         max_steps=cfg.max_steps,
                         batch_size=o.batch_size, seed=cfg.seed, clip_grad=o.clip_grad, precision=cfg.precision,
                         num_workers=cfg.data.num_workers, loader=loader, evaluate=evaluate,
                         eval_every=cfg.eval_every, desc=f"finetune[{cfg.method}]")
    history = with_running_best(history)
    final = history[-1].get("val_top1") if history else None
    best = history[-1].get("val_top1_best") if history else None
    best_epoch = next((h["epoch"] for h in history if h.get("val_top1") == best), None)
    base = {"table": "imagenet_finetune", "method": cfg.method, "dataset": "ImageNet", "split": "val",
            "seed": cfg.seed, "run_id": run_dir.name}
    rows = [{**base, "metric": METRIC_BEST, "value": best}, {**base, "metric": METRIC_FINAL, "value": final}]
    return {"top1": best, "top1_best": best, "top1_final": final, "best_epoch": best_epoch, "history": history,
            "rows": rows, "load_report": report, "lr": lr, "num_classes": num_classes, "train_images": len(train),
            "val_images": len(val), "world_size": distributed.world_size()}


# ----- what a run reads: its cache key and input fingerprint (vlpt_lib.jobs.launch) ------------------------
def data_paths(cfg: dict) -> list[str]:
    """ImageNet train and val (kind imagenet) and the exported student it starts from (a pretrain run's file)."""
    data, checkpoint = cfg["data"], cfg["init"]["checkpoint"]
    images = imagenet_paths(data["root"], ["train", "val"]) if data["kind"] == "imagenet" else []
    return images + ([checkpoint] if checkpoint else [])


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
