"""Job: train the small CLIP of a generated world on its captions, then test it zero-shot.

open_clip builds the model from the registered config ("vlpt-mini-clip" / "vlpt-smoke-clip"), its
own ClipLoss trains it (AdamW, linear warm-up + cosine, open_clip's no-decay rule), and the final
weights are written as a plain open_clip state dict (`mini_clip.pt`), the file
`open_clip.create_model_and_transforms(name, pretrained=path)` loads. Training runs through the one
loop (`vlpt_lib.training.loop`): every epoch is checkpointed and an interrupted run resumes.

The job is given the world's folder (`world_root`); which profile it serves is the workbook's
business (`vlpt_lib.workbook.profiles.MINI_CLIP` holds the per-profile recipes).
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.loss import ClipLoss
from PIL import Image
from pydantic import BaseModel, ConfigDict
from timm.optim import param_groups_weight_decay
from torch.utils.data import TensorDataset

from ..data import DatasetError
from ..data.coop import ImageListDataset, load_dataset, open_image
from ..data.world_layout import MINI_DATASETS, MINI_VARIANTS, STAMP
from ..models import clip as _clip  # registers the vlpt-*-clip configs with open_clip
from ..models.zeroshot import ZeroShotHead, zeroshot_classifier
from ..training import checkpoint, loop, optim
from ..training.evaluate import evaluate_classifier
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything
from ..utils.fields import Count, Device, Index, NonNegative, Positive, Precision, Probability
from ..utils.progress import bar

CHECKPOINT = "mini_clip.pt"

# open_clip's training script excludes from weight decay: p.ndim < 2 or "bn" / "ln" / "bias" /
# "logit_scale" in the name (open_clip/src/open_clip_train/main.py); [A] embeddings and tokens too
# (positional / class embeddings, the token table). The 1-D rule is timm's own (weight_decay_exclude_1d).
NO_WEIGHT_DECAY = ("*bn*", "*ln*", "*bias*", "*logit_scale*", "*embedding*", "*token*")


class Config(BaseModel):
    """Every default of the job. The recipe defaults are the mini profile's (workbook.profiles.MINI_CLIP)."""
    model_config = ConfigDict(extra="forbid")
    world_root: str                    # the generated world (captions/train.csv and the CoOp-format datasets)
    model_name: str = "vlpt-mini-clip"  # an open_clip config registered by vlpt_lib.models.clip
    world_hash: str | None = None      # a label (the world's config hash): a regenerated world retrains
    seed: Index = 0
    epochs: Count = 4
    batch_size: Count = 128            # global batch, split over DDP ranks (open_clip's contrastive batch)
    lr: Positive = 1e-3
    weight_decay: NonNegative = 0.1    # open_clip's default --wd 0.2 halved [A]: small model, few pairs
    warmup_steps: Index = 100          # linear warm-up from 0, then cosine to 0 (open_clip's cosine_lr)
    betas: tuple[Probability, Probability] = (0.9, 0.98)  # open_clip's ViT defaults (beta2 0.98, eps 1e-6)
    eps: Positive = 1e-6
    max_logit_scale: Positive = 100.0  # clamp exp(logit_scale) to [1, 100] after every step (open_clip)
    max_shift: int | None = None       # random translation in pixels; None: image_size // 16 [A]
    precision: Precision = "fp32"      # [A] training ran in fp32 (the model is tiny; CPU runs fp32 anyway)
    eval_precision: Precision = "auto"  # zero-shot evaluation: CPU fp32, CUDA bf16
    eval_batch_size: Count = 256
    eval_each_epoch: list[str] | None = None  # dataset names: a zero-shot learning curve (costs seconds)
    device: Device = "auto"
    threads: Count | None = 2          # CPU threads (None: torch's default)
    num_workers: Index = 0


# ----------------------------------------------------------------------------- data
def read_captions(csv_path: Path) -> list[tuple[Path, str]]:
    """open_clip's CSV format: tab-separated, header 'filepath<TAB>title'; relative paths are
    resolved against the CSV's folder."""
    if not csv_path.is_file():
        raise DatasetError(f"caption file not found: {csv_path}", csv_path,
                           "captions/\n  train.csv   filepath<TAB>title (header row)\n  images/...")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "filepath" not in rows[0] or "title" not in rows[0]:
        raise DatasetError(f"{csv_path} needs the columns 'filepath' and 'title' (tab-separated)", csv_path)
    return [(csv_path.parent / r["filepath"], r["title"]) for r in rows]


def load_pairs(csv_path: Path, image_size: int, tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All caption images as one uint8 tensor (N, 3, S, S) and their tokens (N, context)."""
    pairs = read_captions(csv_path)
    images = np.empty((len(pairs), image_size, image_size, 3), np.uint8)
    for i, (path, _) in enumerate(bar(pairs, desc="loading captions", leave=False)):
        im = open_image(path)
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BICUBIC)
        images[i] = np.asarray(im)
    titles = [t for _, t in pairs]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), tokenizer(titles), titles


def normalizer(model):
    """uint8 images -> CLIP-normalised floats (the model's own mean/std)."""
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD)).view(1, 3, 1, 1)
    return lambda x: (x.float() / 255.0 - mean.to(x.device)) / std.to(x.device)


def augment(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """A small random translation of the whole batch (reflect padding): keeps shapes, colours and rough
    positions. Draws from the global RNG, which the loop seeds per (seed, epoch, rank)."""
    if max_shift <= 0:
        return x.float()
    s = x.shape[-1]
    padded = F.pad(x.float(), (max_shift,) * 4, mode="reflect")
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()
    return padded[:, :, dy:dy + s, dx:dx + s]


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on 1-D tensors and on NO_WEIGHT_DECAY names."""
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=NO_WEIGHT_DECAY)


# ----------------------------------------------------------------------------- evaluation
def zero_shot_rows(model, tokenizer, preprocess, world_root: Path, device, seed: int, batch_size: int = 256,
                   num_workers: int = 0, precision: str = "auto", datasets=None) -> list[dict]:
    """Zero-shot accuracy on the test split of every mini dataset and ImageNet variant, plus chance rows."""
    rows = []
    for name in datasets or (MINI_DATASETS + MINI_VARIANTS):
        ds = load_dataset(name, world_root)
        head = ZeroShotHead(model, zeroshot_classifier(model, tokenizer, ds.classnames, ds.template, device)).eval()
        res = evaluate_classifier(head, ImageListDataset(ds.test, preprocess), device=device, batch_size=batch_size,
                                  precision=precision, num_workers=num_workers, num_classes=ds.num_classes,
                                  desc=f"zero-shot {name}")
        common = {"table": "mini_clip_zeroshot", "dataset": name, "split": "test", "seed": seed, "metric": "acc"}
        rows.append({**common, "method": "CLIP (mini)", "value": round(res["top1"], 2), "n_classes": ds.num_classes,
                     "n_images": res["n"]})
        rows.append({**common, "method": "chance", "value": round(100.0 / ds.num_classes, 2),
                     "n_classes": ds.num_classes, "n_images": res["n"]})
    return rows


# ----------------------------------------------------------------------------- the job
def run(cfg: dict, run_dir) -> dict:
    cfg = Config.model_validate(cfg)
    run_dir = Path(run_dir)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        limit_cpu_threads(cfg.threads)
    seed_everything(cfg.seed)
    world_root = Path(cfg.world_root)

    with _clip.random_init_expected():  # trained from random weights here
        model, _, preprocess_val = open_clip.create_model_and_transforms(cfg.model_name, device=device,
                                                                         output_dict=True)
    tokenizer = open_clip.get_tokenizer(cfg.model_name)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    images, tokens, _ = load_pairs(world_root / "captions" / "train.csv", image_size, tokenizer)
    pairs = TensorDataset(images, tokens)
    normalize = normalizer(model)
    max_shift = cfg.max_shift if cfg.max_shift is not None else max(1, image_size // 16)
    loss_fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=distributed.rank(),
                       world_size=distributed.world_size())

    def step_fn(m, batch):
        x, text = batch
        out = m(normalize(augment(x, max_shift)), text)
        return loss_fn(out["image_features"].float(), out["text_features"].float(), out["logit_scale"].float())

    def clamp_logit_scale():
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(cfg.max_logit_scale))

    def curve(m) -> dict:  # a zero-shot learning curve, only when asked for
        rows = zero_shot_rows(m, tokenizer, preprocess_val, world_root, device, cfg.seed, cfg.eval_batch_size,
                              cfg.num_workers, cfg.eval_precision, datasets=cfg.eval_each_epoch)
        return {"zeroshot": {r["dataset"]: r["value"] for r in rows if r["method"] != "chance"}}

    # drop_last: every step sees a full contrastive batch (n // batch_size steps per epoch)
    loader = loop.make_loader(pairs, batch_size=cfg.batch_size, seed=cfg.seed, drop_last=True,
                              num_workers=cfg.num_workers, device=device)
    opt = optim.create_optimizer(param_groups(model, cfg.weight_decay), opt="adamw", lr=cfg.lr,
                                 weight_decay=cfg.weight_decay, betas=cfg.betas, eps=cfg.eps, device=device)
    sched = optim.create_scheduler(opt, "cosine", steps_per_epoch=len(loader), epochs=cfg.epochs,
                                   warmup_steps=cfg.warmup_steps, warmup_lr=0.0, min_lr=0.0, warmup_prefix=True)
    history = loop.train(model, pairs, step_fn, opt, sched, run_dir, device=device, epochs=cfg.epochs,
                         batch_size=cfg.batch_size, seed=cfg.seed, drop_last=True, precision=cfg.precision,
                         num_workers=cfg.num_workers, after_step=clamp_logit_scale,
                         evaluate=curve if cfg.eval_each_epoch else None, desc="clip_train", loader=loader)
    train_s = history[-1]["elapsed_s"] if history else 0.0

    ckpt_path = checkpoint.save(run_dir, model.state_dict(), CHECKPOINT)  # rank 0 writes it
    model.eval()
    eval_start = time.time()
    rows = zero_shot_rows(model, tokenizer, preprocess_val, world_root, device, cfg.seed, cfg.eval_batch_size,
                          cfg.num_workers, cfg.eval_precision)
    eval_s = time.time() - eval_start
    if not distributed.is_main():
        return {}
    return {"checkpoint": str(ckpt_path), "model_name": cfg.model_name, "world_root": str(world_root),
            "n_pairs": len(pairs), "history": history, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
            "rows": rows}


# ----- what a run reads: its cache key and input fingerprint (vlpt_lib.jobs.launch) ------------------------
def data_paths(cfg: dict) -> list[str]:
    """The generated world's stamp (it changes when the world is regenerated) and its captions."""
    root = Path(cfg["world_root"])
    return [str(root / STAMP), str(root / "captions" / "train.csv")]


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
