"""MVP pre-training job: a BEiT student regresses CLIP patch features (or another MIM target) at masked patches.

    run(cfg, run_dir) -> {"export": <timm state dict file>, "history": [...], ...}

What is this job's own: the student, the masked-image data and the masked-patch loss. The target (frozen CLIP
image tower, per-patch pixels, HOG, or a user's plug-in) and its loss come from the registry
`vlpt_lib.methods.targets` by name (`cfg.target`). The loop, AdamW (no weight decay on 1-D parameters,
biases, pos_embed and cls_token: BEiT's pre-training rule, so the mask token and the shared relative
position table are decayed), BEiT's per-iteration cosine_scheduler, DDP and resume come from
`vlpt_lib.training`. The learning rate is quoted at
`optim.lr_ref_batch` and scales linearly with the global batch (`optim.batch_size`, split evenly
over DDP ranks). At the end rank 0 exports the backbone as a plain timm `Beit` state dict.

Defaults = the paper recipe (ViT-B/16 student, CLIP ViT-B/16 teacher, ImageNet-1K, 300 epochs).
Every field names its source in `Field(description=...)` (the notebooks' recipe card): [V] facts from
the MVP paper; [A] assumptions the paper text leaves open, each with its public source.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..data.imagefolder import SPLITS, ImageNetFolder, limit
from ..data.synthetic import SyntheticImages
from ..methods import targets
from ..models.clip import load_clip
from ..models.masking import BlockMaskGenerator
from ..models.mvp import IMAGENET_MEAN, IMAGENET_STD, MVPStudent, arch_spec, save_exported
from ..training import loop, optim
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything
from ..utils.fields import Count, Device, Index, NonNegative, Positive, Precision, Probability

EXPORT_NAME = "student_timm.pth"


class Strict(BaseModel):
    """Every config block refuses unknown keys (a typo fails before any work starts)."""
    model_config = ConfigDict(extra="forbid")


# Sources: "BEiT" = microsoft/unilm beit/, "beit2" = microsoft/unilm beit2/ (the official code the
# issue #8 comparison used); "[V]" a fact of the MVP paper (shared/reference/mvp.md); "[A]" an assumption
# where the paper leaves it open, with its public source; "[env]" how to run (left off the recipe card).
class Clip(Strict):
    """The teacher: an open_clip model name + pretrained tag or weights file."""
    model_name: str = Field("ViT-B-16", description="[V] MVP paper: the image tower of CLIP ViT-B/16 is the teacher")
    pretrained: str = Field("openai", description="[V] MVP paper: OpenAI's CLIP (400M image-text pairs); "
                                                  "a tag or a local weights file (workbook parameter clip_pretrained)")
    quick_gelu: bool | None = Field(None, description="workbook parameter clip_quick_gelu (the profile's: paper "
                                                      "True, as OpenAI's CLIP is built); None = models.clip.load_clip "
                                                      "decides from the weights")


class Student(Strict):
    arch: str | dict = Field("beit_base", description="[V] MVP paper: ViT-B/16 student = timm beit_base_patch16_224 "
                                                      "(models.mvp.STUDENT_ARCHS: beit_base | mini | smoke | a dict)")
    layer_scale_init: Positive = Field(0.1, description="[A] beit2 PRETRAINING.md --layer_scale_init_value 0.1")
    shared_rel_pos_bias: bool = Field(True, description="[A] beit2 run_beitv2_pretraining.py defaults rel_pos_bias="
                                                        "True (shared table), abs_pos_emb=False")
    drop_path: Probability = Field(0.0, description="[A] beit2 PRETRAINING.md: --drop_path 0. for 300 epochs")
    init_std: Positive = Field(0.02, description="[A] BEiT/beit2 modeling_pretrain.py init_std 0.02: trunc_normal_ "
                                                 "cut at +-std on tokens, head, Linear/Conv weights; fix_init_weight")
    mean: tuple[float, float, float] = Field(IMAGENET_MEAN, description="[A] beit2 PRETRAINING.md "
                                                                        "--imagenet_default_mean_and_std (the teacher "
                                                                        "uses CLIP's own)")
    std: tuple[float, float, float] = Field(IMAGENET_STD, description="[A] beit2 PRETRAINING.md "
                                                                      "--imagenet_default_mean_and_std")


class Data(Strict):
    kind: Literal["imagenet", "synthetic"] = Field("imagenet", description="workbook parameter: an image folder, "
                                                                           "or synthetic in-memory images (tests, "
                                                                           "benchmarks)")
    root: str | None = Field(None, description="workbook parameter: the profile's data root (holds imagenet/)")
    split: str = Field("train", description="[V] MVP paper: ImageNet-1K train set")
    max_images: Count | None = Field(None, description="workbook parameter: cap on the pre-training images "
                                                       "(None: the whole split)")
    min_crop_scale: Probability = Field(0.2,
        description="[A] beit2 PRETRAINING.md --min_crop_scale 0.2: random resized "
                    "crop scale (0.2, 1), bicubic")
    hflip: Probability = Field(0.5, description="[A] BEiT/beit2 datasets.py DataAugmentationForBEiT: "
                                                "RandomHorizontalFlip(p=0.5)")
    color_jitter: NonNegative = Field(0.4, description="[A] BEiT/beit2 datasets.py DataAugmentationForBEiT hard-codes "
                                                       "ColorJitter(0.4, 0.4, 0.4), before flip and crop "
                                                       "(shared/reference/mvp.md)")
    num_workers: Index = Field(0, description="[env] DataLoader workers (the notebook passes its knob)")
    n: Count = Field(64, description="[env] synthetic only: number of images")


class Mask(Strict):
    ratio: Probability = Field(0.3827, description="[A] BEiT/beit2 --num_mask_patches 75 of 196 patches (75/196)")
    min_block_fraction: Probability = Field(0.0816, description="[A] BEiT masking_generator.py min_num_patches 16 of "
                                                                "196 (16/196)")
    min_aspect: Positive = Field(0.3, description="[A] BEiT masking_generator.py min_aspect 0.3 (aspect 0.3 .. 1/0.3)")
    num_masking_patches: Count | None = Field(None, description="[A] an exact count instead of `ratio` (BEiT "
                                                                "--num_mask_patches); None: from the ratio")
    min_num_patches: Count = Field(16, description="[A] BEiT masking_generator.py min_num_patches 16 (only with "
                                                   "num_masking_patches)")
    max_num_patches: Count | None = Field(None, description="[A] BEiT masking_generator.py max_num_patches None = "
                                                            "the remaining count (only with num_masking_patches)")


class Optim(Strict):
    epochs: Count = Field(300, description="[V] MVP paper: 300 epochs on ImageNet-1K")
    batch_size: Count = Field(2048, description="[A] beit2 PRETRAINING.md: 128 per GPU x 16 GPUs = global 2048")
    lr: Positive = Field(1.5e-3, description="[A] beit2 PRETRAINING.md --lr 1.5e-3 (at global batch 2048)")
    lr_ref_batch: Count | None = Field(2048, description="[A] the batch `lr` is quoted at; linear scaling for another "
                                                         "batch (BEiT does not scale); None: lr used as is")
    schedule: Literal["beit_cosine"] = Field("beit_cosine", description="BEiT/beit2 utils.cosine_scheduler per "
                                                                        "iteration: linear warm-up (linspace), then "
                                                                        "cosine to min_lr")
    min_lr: NonNegative = Field(1e-5, description="[A] BEiT/beit2 run_*_pretraining.py --min_lr default 1e-5")
    warmup_lr: NonNegative = Field(0.0, description="[A] BEiT/beit2 run_*_pretraining.py call cosine_scheduler without "
                                                    "start_warmup_value: the warm-up starts at 0 (--warmup_lr 1e-6 is "
                                                    "parsed, unused)")
    warmup_epochs: NonNegative = Field(10, description="[A] beit2 PRETRAINING.md --warmup_epochs 10")
    weight_decay: NonNegative = Field(0.05,
        description="[A] BEiT/beit2 --weight_decay 0.05, constant; not on pos_embed, "
                    "cls_token, 1-D, .bias (optim_factory.py): the mask token and rel-pos table ARE "
                    "decayed")
    betas: tuple[Probability, Probability] = Field((0.9, 0.98),
        description="[A] beit2 PRETRAINING.md: --opt_betas 0.9 0.98 "
                    "for 300 epochs")
    eps: Positive = Field(1e-8, description="[A] beit2 PRETRAINING.md --opt_eps 1e-8")
    clip_grad: Positive | None = Field(3.0, description="[A] beit2 PRETRAINING.md --clip_grad 3.0")


class RunSettings(Strict):
    """How an MVP job runs (not what it learns): shared by pretrain, finetune and segment."""
    seed: Index = Field(0, description="workbook parameter: the run's seed")
    device: Device = Field("auto", description="[env] auto: CUDA if present")
    precision: Precision = Field("auto", description="[env] auto: bf16 autocast on CUDA, fp32 on CPU")
    threads: Count | None = Field(None, description="[env] CPU intra-op threads (None: torch's default)")
    max_steps: Count | None = Field(None, description="[cap] stop training after this many steps (the paper "
                                                      "profile's dry run; None: the whole schedule, which keeps its "
                                                      "length)")


class Config(RunSettings):
    compile: bool = Field(False, description="[env] torch.compile the student")
    target: str = Field("clip", description="[V] clip = MVP: CLIP patch tokens after ln_post x visual proj ([A] "
                                            "beit2 VQ-KD teacher, EVA-01); pixel = normalised pixels (MAE norm_pix), "
                                            "the unimodal "
                                            "baseline row; hog = MaskFeat's HOG; any name registered in "
                                            "vlpt_lib.methods.targets")
    loss: Literal["auto", "cosine", "mse"] = Field("auto", description="[A] auto: the target's own loss on masked "
                                                                       "positions (1 - cosine for CLIP as EVA-01, MSE "
                                                                       "for pixels as MAE "
                                                                       "and HOG as MaskFeat)")
    clip: Clip = Clip()
    student: Student = Student()
    data: Data = Data()
    mask: Mask = Mask()
    optim: Optim = Optim()

    @field_validator("target")
    @classmethod
    def _registered(cls, name: str) -> str:
        targets.get(name)  # ValueError listing the registered names
        return name


class Init(Strict):
    """Where a downstream job (finetune, segment) starts: an exported student, or scratch."""
    checkpoint: str | None = Field(None, description="workbook parameter: notebook 10's export of the row's target "
                                                     "(None: random init = the Scratch row)")
    model_name: str = Field("beit_base_patch16_224", description="[V] ViT-B/16: the timm model the pretrain job "
                                                                 "exports")
    kwargs: dict = Field({"img_size": 224, "init_values": 0.1, "use_abs_pos_emb": False, "use_rel_pos_bias": True,
                          "use_shared_rel_pos_bias": False},
                         description="[A] BEiT fine-tuning layout (run_class_finetuning.py --rel_pos_bias): the shared "
                         "table copied into every block, layer scale 0.1 (models.mvp.export_kwargs)")


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
    """BEiT's pre-training view in BEiT's order (datasets.py DataAugmentationForBEiT): ColorJitter(j, j, j)
    (hue 0), horizontal flip, random resized crop (scale min_crop_scale..1, bicubic)."""
    ops = [v2.ToImage()]
    if data.color_jitter:
        ops.append(v2.ColorJitter(data.color_jitter, data.color_jitter, data.color_jitter))
    ops += [v2.RandomHorizontalFlip(data.hflip),
            v2.RandomResizedCrop(img_size, scale=(data.min_crop_scale, 1.0),
                                 interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.ToDtype(torch.float32, scale=True)]
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
    s, spec = cfg.student, targets.get(cfg.target)
    clip_model = load_teacher_model(cfg.clip) if spec.needs_clip else None
    patch = int(arch_spec(s.arch)[1].get("patch_size", 16))
    target = spec.build(patch, s.mean, s.std, clip_model, cfg.precision)
    student = MVPStudent(s.arch, target_dim=target.out_dim, layer_scale_init=s.layer_scale_init,
                         shared_rel_pos_bias=s.shared_rel_pos_bias, drop_path=s.drop_path, mean=s.mean, std=s.std,
                         init_std=s.init_std)
    return student.to(device), target.to(device)


def loss_kind(cfg: Config) -> str:
    """The loss the run uses: the target's own ("cosine", "mse", or a plug-in's callable's name) unless set."""
    return targets.get(cfg.target).loss_name if cfg.loss == "auto" else cfg.loss


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
    sched = optim.create_scheduler(opt, o.schedule, steps_per_epoch=len(loader), epochs=o.epochs,
                                   warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr, min_lr=o.min_lr)
    kind, spec = loss_kind(cfg), targets.get(cfg.target)
    grid = student.grid

    def step_fn(model, batch):
        images, mask = batch
        mask = mask.flatten(1)
        return spec.masked_loss(model(images, mask), target(images, grid)[mask], cfg.loss)

    history = loop.train(student, data, step_fn, opt, sched, run_dir, device=device, epochs=o.epochs,
                         max_steps=cfg.max_steps,
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


# ----- what a run reads: its cache key and input fingerprint (vlpt_lib.jobs.launch) ------------------------
def imagenet_paths(root: str | None, splits: list[str]) -> list[str]:
    """classnames.txt and images/<split> under both layouts ImageNetFolder accepts (a data root holding
    imagenet/, or the imagenet folder itself); the absent layout reads as "missing"."""
    if not root:
        return []
    bases = [Path(root) / "imagenet", Path(root)]
    return ([str(b / "classnames.txt") for b in bases]
            + [str(b / "images" / SPLITS.get(s, s)) for b in bases for s in splits])


def data_paths(cfg: dict) -> list[str]:
    """ImageNet's split (kind imagenet) and what the target reads (`Target.input_paths`: the teacher's weights
    file for a target that needs CLIP; a plug-in target's own source file)."""
    data = cfg["data"]
    images = imagenet_paths(data["root"], [data["split"]]) if data["kind"] == "imagenet" else []
    return images + targets.get(cfg["target"]).input_paths(cfg["clip"]["pretrained"])


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
