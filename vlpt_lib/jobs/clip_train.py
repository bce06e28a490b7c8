"""Job: train the small CLIP of the smoke/mini world on its captions, then test it zero-shot.

open_clip builds the model from the registered config ("vlpt-mini-clip" / "vlpt-smoke-clip"), its
own ClipLoss trains it (AdamW, warm-up + cosine), and the final weights are written as a plain
open_clip state dict (`mini_clip.pt`), the file `open_clip.create_model_and_transforms(name,
pretrained=path)` loads. Every epoch is checkpointed; an interrupted run resumes.

cfg keys: profile, model_name, world_root (None = the profile's world), world_hash, epochs,
batch_size, lr, weight_decay, warmup_steps, seed, num_workers (+ optional threads, device,
eval_batch_size, max_train_s, eval_each_epoch = a list of dataset names).
"""
from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..training import checkpoint
from ..utils import distributed
from ..utils.device import pick_device, seed_everything
from ..utils.progress import bar, get_logger

CHECKPOINT = "mini_clip.pt"

PROFILE_DEFAULTS = {
    "smoke": {"epochs": 2, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.1, "warmup_steps": 3},
    # mini: 5 x 93 steps of batch 128, about 64 s per epoch on 2 CPU cores (measured with 2 pinned
    # cores), so world (~40-60 s) + CLIP stay within the 8 min budget. Longer helps (7 epochs: ImageNet
    # 48 -> 55 %, DTD 46 -> 63 %; 12 epochs: ImageNet 65 %) but does not fit.
    "mini": {"epochs": 5, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 100},
}


def default_clip_train_cfg(profile: str) -> dict:
    """The cfg the lead's ensure_mini_clip(profile) runs (its hash keys the cached run)."""
    from ..data.mini_world import config_hash, world_config

    if profile not in PROFILE_DEFAULTS:
        raise ValueError(f"the mini CLIP is trained for profiles {tuple(PROFILE_DEFAULTS)}, not {profile!r}")
    return {"profile": profile, "model_name": f"vlpt-{profile}-clip", "world_root": None,
            "world_hash": config_hash(world_config(profile)), "seed": 0, "num_workers": 0,
            **PROFILE_DEFAULTS[profile]}


# ----------------------------------------------------------------------------- data
def read_captions(csv_path: Path) -> list[tuple[Path, str]]:
    """open_clip's CSV format: tab-separated, header 'filepath<TAB>title'; relative paths are
    resolved against the CSV's folder."""
    from ..data import DatasetError

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
    from PIL import Image

    from ..data.coop import open_image

    pairs = read_captions(csv_path)
    images = np.empty((len(pairs), image_size, image_size, 3), np.uint8)
    for i, (path, _) in enumerate(bar(pairs, desc="loading captions", leave=False)):
        im = open_image(path)
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BICUBIC)
        images[i] = np.asarray(im)
    titles = [t for _, t in pairs]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), tokenizer(titles), titles


def _normalizer(model):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD)).view(1, 3, 1, 1)
    return lambda x: (x.float() / 255.0 - mean.to(x.device)) / std.to(x.device)


def _augment(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """A small random translation (reflect padding): keeps shapes, colours and rough positions."""
    if max_shift <= 0:
        return x
    n, _, s, _ = x.shape
    padded = F.pad(x.float(), (max_shift,) * 4, mode="reflect")
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + s, dx:dx + s]


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "embedding" in name or "token" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------- evaluation
def zero_shot_rows(model, tokenizer, preprocess, world_root: Path, device, seed: int, profile: str,
                   batch_size: int = 256, num_workers: int = 0, datasets=None) -> list[dict]:
    """Zero-shot accuracy on the test split of every mini dataset and ImageNet variant, plus chance rows."""
    from torch.utils.data import DataLoader

    from ..data.coop import ImageListDataset, load_dataset
    from ..data.mini_world import MINI_DATASETS, MINI_VARIANTS
    from ..training.evaluate import evaluate
    from ..models.zeroshot import zeroshot_classifier

    rows = []
    for name in datasets or (MINI_DATASETS + MINI_VARIANTS):
        ds = load_dataset(name, world_root)
        loader = DataLoader(ImageListDataset(ds.test, preprocess), batch_size=batch_size, num_workers=num_workers)
        clf = zeroshot_classifier(model, tokenizer, ds.classnames, ds.template, device)
        res = evaluate(model, clf, loader, device)
        common = {"table": "mini_clip_zeroshot", "dataset": name, "split": "test", "seed": seed, "metric": "acc"}
        rows.append({**common, "method": "CLIP (mini)", "value": round(res["acc"], 2), "n_classes": ds.num_classes,
                     "n_images": res["n"]})
        rows.append({**common, "method": "chance", "value": round(100.0 / ds.num_classes, 2),
                     "n_classes": ds.num_classes, "n_images": res["n"]})
    return rows


# ----------------------------------------------------------------------------- the job
def run(cfg: dict, run_dir: Path) -> dict:
    import open_clip
    from open_clip.loss import ClipLoss

    from ..models import clip as _clip  # noqa: F401  (registers the vlpt-*-clip configs with open_clip)

    run_dir = Path(run_dir)
    log = get_logger()
    profile = cfg.get("profile", "mini")
    device = pick_device(cfg.get("device", "auto"))
    if device.type == "cpu":
        torch.set_num_threads(int(cfg.get("threads", 2)))
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    world_root = cfg.get("world_root")
    if world_root is None:
        from ..data.mini_world import ensure_world
        world_root = ensure_world(profile)
    world_root = Path(world_root)

    model_name = cfg["model_name"]
    model, _, preprocess_val = open_clip.create_model_and_transforms(model_name, device=device, output_dict=True)
    tokenizer = open_clip.get_tokenizer(model_name)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size)
    images, tokens, _ = load_pairs(world_root / "captions" / "train.csv", image_size, tokenizer)
    normalize = _normalizer(model)

    ws, rank = distributed.world_size(), distributed.rank()
    bs = int(cfg["batch_size"])
    n = images.shape[0]
    steps_per_epoch = max(1, n // bs)
    epochs = int(cfg["epochs"])
    total = epochs * steps_per_epoch
    warmup = int(cfg.get("warmup_steps", 0))
    base_lr = float(cfg["lr"])

    def lr_at(step: int) -> float:
        if step < warmup:
            return base_lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * base_lr * (1 + math.cos(math.pi * min(1.0, t)))

    opt = torch.optim.AdamW(_param_groups(model, float(cfg.get("weight_decay", 0.1))), lr=base_lr,
                            betas=(0.9, 0.98), eps=1e-6)
    start_epoch, history, train_s = 0, [], 0.0
    state = checkpoint.load(run_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history, train_s = state["epoch"] + 1, state["history"], state.get("train_s", 0.0)
        log.info("clip_train: resuming after epoch %d", state["epoch"])
    train_model = distributed.wrap_ddp(model, device) if ws > 1 else model
    loss_fn = ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=ws)
    max_shift = max(1, image_size // 16)

    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        train_model.train()
        gen = torch.Generator().manual_seed(seed * 10_000 + epoch)
        perm = torch.randperm(n, generator=gen)
        losses = []
        pbar = bar(range(steps_per_epoch), desc=f"CLIP epoch {epoch + 1}/{epochs}", leave=False)
        for i in pbar:
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            idx = perm[i * bs:(i + 1) * bs]
            idx = idx[rank::ws] if ws > 1 else idx
            x = normalize(_augment(images[idx], gen, max_shift)).to(device, non_blocking=True)
            out = train_model(x, tokens[idx].to(device))
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            pbar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        train_s += time.time() - t0
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "lr": lr_at(step), "s": round(time.time() - t0, 1)})
        if cfg.get("eval_each_epoch") and distributed.is_main():  # a learning curve (optional; costs seconds)
            model.eval()
            curve = zero_shot_rows(model, tokenizer, preprocess_val, world_root, device, seed, profile,
                                   datasets=cfg["eval_each_epoch"])
            history[-1]["zeroshot"] = {r["dataset"]: r["value"] for r in curve if r["method"] != "chance"}
        log.info("clip_train epoch %d/%d loss %.4f (%.1fs)", epoch + 1, epochs, history[-1]["loss"], history[-1]["s"])
        checkpoint.save(run_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                  "history": history, "train_s": train_s})
        if cfg.get("max_train_s") and train_s > float(cfg["max_train_s"]):
            log.warning("clip_train: stopping early after %.0fs (max_train_s)", train_s)
            break

    if not distributed.is_main():
        return {}
    ckpt_path = checkpoint.save(run_dir, model.state_dict(), CHECKPOINT)
    t0 = time.time()
    model.eval()
    rows = zero_shot_rows(model, tokenizer, preprocess_val, world_root, device, seed, profile,
                          int(cfg.get("eval_batch_size", 256)), int(cfg.get("num_workers", 0)))
    return {"checkpoint": str(ckpt_path), "model_name": model_name, "world_root": str(world_root),
            "n_pairs": n, "history": history, "train_s": round(train_s, 1), "eval_s": round(time.time() - t0, 1),
            "rows": rows}


if __name__ == "__main__":
    from . import launch

    launch.job_main(run)
