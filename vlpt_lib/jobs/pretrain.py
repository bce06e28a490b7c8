"""MVP pre-training job: a BEiT student regresses CLIP patch features (or normalised pixels) at masked patches.

    run(cfg, run_dir) -> {"export": <timm state dict file>, "history": [...], ...}

What is this job's own: the student and its target (frozen CLIP image tower, or per-patch pixels),
the masked-image data and the masked-patch loss. The loop, AdamW with timm's no-weight-decay rule
(biases, norms, layer scales, the cls/mask tokens, the relative position tables), the per-iteration
cosine schedule, DDP and resume come from `vlpt_lib.training`. The learning rate is quoted at
`optim.lr_ref_batch` and scales linearly with the global batch (`optim.batch_size`, split evenly
over DDP ranks). At the end rank 0 exports the backbone as a plain timm `Beit` state dict.

Defaults = the paper recipe (ViT-B/16 student, CLIP ViT-B/16 teacher, ImageNet-1K, 300 epochs).
[V] facts from the MVP paper; [A] assumptions the paper text leaves open, each with its public source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..data.imagefolder import ImageNetFolder, limit
from ..data.synthetic import SyntheticImages
from ..models.clip import load_clip
from ..models.masking import BlockMaskGenerator
from ..models.mvp import IMAGENET_MEAN, IMAGENET_STD, MVPStudent, arch_spec, build_target, masked_loss, save_exported
from ..training import loop, optim
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything

EXPORT_NAME = "student_timm.pth"


class Strict(BaseModel):
    """Every config block refuses unknown keys (a typo fails before any work starts)."""
    model_config = ConfigDict(extra="forbid")


class Clip(Strict):
    """The teacher: an open_clip model name + pretrained tag or weights file."""
    model_name: str = "ViT-B-16"            # [V] CLIP ViT-B/16
    pretrained: str = "openai"              # [V] OpenAI's weights (or a local file)
    quick_gelu: bool | None = None          # True for a local OpenAI file loaded as ViT-B-16


class Student(Strict):
    arch: str | dict = "beit_base"          # [V] ViT-B/16 (models.mvp.STUDENT_ARCHS: beit_base | mini | smoke | dict)
    layer_scale_init: float = 0.1           # [A] BEiT/beit2 pre-training (--layer_scale_init_value 0.1)
    shared_rel_pos_bias: bool = True        # [A] BEiT/beit2 pre-training: shared relative position bias, no abs pos
    drop_path: float = 0.0                  # [A] beit2 PRETRAINING.md, 300-epoch settings
    mean: tuple[float, float, float] = IMAGENET_MEAN  # [A] beit2 --imagenet_default_mean_and_std (teacher: CLIP's own)
    std: tuple[float, float, float] = IMAGENET_STD


class Data(Strict):
    kind: Literal["imagenet", "synthetic"] = "imagenet"  # synthetic: in-memory images (tests, benchmarks)
    root: str | None = None                 # folder holding imagenet/images/{train,val} (or imagenet/ itself)
    split: str = "train"                    # [V] ImageNet-1K train
    max_images: int | None = None           # cap on the pre-training images (None: the whole split)
    min_crop_scale: float = 0.2             # [A] random resized crop scale (0.2, 1), bicubic (beit2 --min_crop_scale)
    hflip: float = 0.5                      # [A] BEiT pre-training flip
    color_jitter: float = 0.0               # [A] beit2: no colour jitter
    num_workers: int = 0                    # [env] DataLoader workers (the notebook passes its knob)
    n: int = 64                             # synthetic only: number of images


class Mask(Strict):
    ratio: float = 0.3827                   # [A] BEiT block masking: 75 of 196 patches (75/196 = 0.3827)
    min_block_fraction: float = 0.0816      # [A] blocks of at least 16 of 196 patches (16/196 = 0.0816)
    min_aspect: float = 0.3                 # [A] BEiT: aspect ratio 0.3 .. 1/0.3
    num_masking_patches: int | None = None  # an exact count instead of `ratio` (then min/max_num_patches apply)
    min_num_patches: int = 16               # [A] BEiT (only with num_masking_patches)
    max_num_patches: int | None = None      # [A] BEiT: None = the remaining count (only with num_masking_patches)


class Optim(Strict):
    epochs: int = 300                       # [V] 300 epochs on ImageNet-1K
    batch_size: int = 2048                  # [A] global batch (beit2 PRETRAINING.md: 128 per GPU x 16 GPUs)
    lr: float = 1.5e-3                      # [A] beit2 300-epoch recipe, quoted at batch 2048
    lr_ref_batch: int | None = 2048         # the batch `lr` is quoted at; None: no scaling
    min_lr: float = 1e-5                    # [A] beit2: cosine to 1e-5
    warmup_lr: float = 1e-6                 # [A] beit2: linear warm-up from 1e-6
    warmup_epochs: float = 10               # [A] beit2: 10 warm-up epochs
    weight_decay: float = 0.05              # [A] beit2
    betas: tuple[float, float] = (0.9, 0.98)  # [A] beit2 --opt_betas 0.9 0.98
    eps: float = 1e-8                       # [A] beit2 --opt_eps 1e-8
    clip_grad: float | None = 3.0           # [A] beit2 --clip_grad 3.0


class Config(Strict):
    seed: int = 0
    device: str = "auto"                    # [env]
    precision: str = "auto"                 # [env] auto: bf16 autocast on CUDA, fp32 on CPU
    threads: int | None = None              # [env] CPU intra-op threads (None: torch's default)
    compile: bool = False                   # torch.compile the student
    target: Literal["clip", "pixel"] = "clip"  # clip = MVP; pixel = MAE's norm_pix target (unimodal baseline)
    # [A] target = CLIP patch tokens after ln_post x visual proj (beit2 VQ-KD teacher, EVA-01);
    # loss auto: 1 - cosine for the CLIP target (EVA-01 "negative cosine"), MSE for pixels (MAE)
    loss: Literal["auto", "cosine", "mse"] = "auto"
    clip: Clip = Clip()
    student: Student = Student()
    data: Data = Data()
    mask: Mask = Mask()
    optim: Optim = Optim()


class Init(Strict):
    """Where a downstream job (finetune, segment) starts: an exported student, or scratch."""
    checkpoint: str | None = None           # the export of this job (None: random init = the Scratch row)
    model_name: str = "beit_base_patch16_224"
    # MVPStudent("beit_base").timm_kwargs(): the layout this job exports
    kwargs: dict = {"img_size": 224, "init_values": 0.1, "use_abs_pos_emb": False, "use_rel_pos_bias": True,
                    "use_shared_rel_pos_bias": False}


# ----- data ---------------------------------------------------------------------------------------
class MaskedImages(Dataset):
    """(image in [0, 1], block mask) pairs; each mask seeded by (seed, epoch, index)."""

    def __init__(self, base: Dataset, masker: BlockMaskGenerator, seed: int = 0):
        self.base, self.masker, self.seed, self.epoch = base, masker, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by the training loop
        self.epoch = epoch

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        img = item[0] if isinstance(item, (tuple, list)) else item
        mask = self.masker(np.random.default_rng([self.seed, self.epoch, i]))
        return img, torch.from_numpy(mask)


def pretrain_transform(img_size: int, data: Data):
    """BEiT's pre-training view: random resized crop (scale min_crop_scale..1, bicubic) + flip (+ jitter)."""
    ops = [v2.ToImage(),
           v2.RandomResizedCrop(img_size, scale=(data.min_crop_scale, 1.0),
                                interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
           v2.RandomHorizontalFlip(data.hflip)]
    if data.color_jitter:
        ops.append(v2.ColorJitter(data.color_jitter, data.color_jitter, data.color_jitter))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(ops)


def build_masker(mask: Mask, grid) -> BlockMaskGenerator:
    if mask.num_masking_patches is not None:
        return BlockMaskGenerator(grid, mask.num_masking_patches, mask.min_num_patches, mask.max_num_patches,
                                  mask.min_aspect)
    return BlockMaskGenerator.from_ratio(grid, mask.ratio, mask.min_block_fraction, min_aspect=mask.min_aspect)


def build_pretrain_data(cfg: Config, student: MVPStudent) -> MaskedImages:
    if cfg.data.kind == "synthetic":
        base = SyntheticImages(cfg.data.n, student.img_size, seed=cfg.seed)
    else:
        if cfg.data.root is None:
            raise ValueError("pretrain: data.root is not set (the folder holding imagenet/)")
        base = ImageNetFolder(cfg.data.root, cfg.data.split, pretrain_transform(student.img_size, cfg.data))
    base = limit(base, cfg.data.max_images, cfg.seed)
    return MaskedImages(base, build_masker(cfg.mask, student.grid), seed=cfg.seed)


# ----- model and target ---------------------------------------------------------------------------
def load_teacher_model(clip: Clip) -> torch.nn.Module:
    return load_clip(clip.model_name, clip.pretrained, quick_gelu=clip.quick_gelu).model


def build_student_and_target(cfg: Config, device: torch.device):
    s = cfg.student
    clip_model = load_teacher_model(cfg.clip) if cfg.target == "clip" else None
    patch = int(arch_spec(s.arch)[1].get("patch_size", 16))
    target = build_target(cfg.target, None, clip_model, precision=cfg.precision, patch=patch, mean=s.mean, std=s.std)
    student = MVPStudent(s.arch, target_dim=target.out_dim, layer_scale_init=s.layer_scale_init,
                         shared_rel_pos_bias=s.shared_rel_pos_bias, drop_path=s.drop_path, mean=s.mean, std=s.std)
    return student.to(device), target.to(device)


def loss_kind(cfg: Config) -> str:
    if cfg.loss == "auto":
        return "cosine" if cfg.target == "clip" else "mse"
    return cfg.loss


# ----- the job ------------------------------------------------------------------------------------
def run(cfg: dict, run_dir) -> dict:
    cfg = Config.model_validate(cfg)
    run_dir = Path(run_dir)
    limit_cpu_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    o = cfg.optim
    student, target = build_student_and_target(cfg, device)
    data = build_pretrain_data(cfg, student)
    loader = loop.make_loader(data, batch_size=o.batch_size, seed=cfg.seed, drop_last=True,
                              num_workers=cfg.data.num_workers, device=device)
    lr = optim.scaled_lr(o.lr, o.batch_size, o.lr_ref_batch)
    opt = optim.create_optimizer(student, opt="adamw", lr=lr, weight_decay=o.weight_decay, betas=o.betas,
                                 eps=o.eps, device=device)
    sched = optim.create_scheduler(opt, "cosine", steps_per_epoch=len(loader), epochs=o.epochs,
                                   warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr, min_lr=o.min_lr,
                                   warmup_prefix=False)
    kind = loss_kind(cfg)
    grid = student.grid

    def step_fn(model, batch):
        images, mask = batch
        mask = mask.flatten(1)
        return masked_loss(model(images, mask), target(images, grid)[mask], kind)

    history = loop.train(student, data, step_fn, opt, sched, run_dir, device=device, epochs=o.epochs,
                         batch_size=o.batch_size, seed=cfg.seed, clip_grad=o.clip_grad, precision=cfg.precision,
                         num_workers=cfg.data.num_workers, compile=cfg.compile, loader=loader,
                         desc=f"pretrain[{cfg.target}]")
    export = run_dir / EXPORT_NAME
    if distributed.is_main():
        save_exported(student, export, extra={"target": cfg.target, "epochs": o.epochs})
    distributed.barrier()
    steps = history[-1]["step"] if history else 0
    return {"export": str(export), "model_name": student.model_name, "kwargs": student.timm_kwargs(),
            "target": cfg.target, "loss_kind": kind, "history": history,
            "final_loss": history[-1]["loss"] if history else None, "lr": lr,
            "global_batch": o.batch_size, "world_size": distributed.world_size(),
            "steps": steps, "images_seen": steps * o.batch_size,
            "train_images": len(data), "num_masking_patches": data.masker.num_masking_patches,
            "grid": list(grid)}


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
