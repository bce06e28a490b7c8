"""Job: zero-shot CLIP, CoOp or CoCoOp on a frozen open_clip CLIP; train on one dataset, test on many.

cfg (JSON-able; the run folder is keyed by its hash):
    method        "CLIP" | "CoOp" | "CoCoOp"
    profile       "smoke" | "mini" | "paper" (smoke/mini read the generated world)
    data_root     the paper profile's dataset root (None: $VLPT_DATA_ROOT; smoke/mini: the world)
    clip_model, clip_pretrained   open_clip name + tag or weights file (vlpt_lib.models.clip.clip_spec)
    dataset, subsample, shots, seed          what to train on (subsample "base" or "all")
    eval          list of {"dataset", "subsample" ("all"|"base"|"new"), "split" (row label)}
    n_ctx, ctx_init                          context length / init words ("" or None: random N(0, 0.02))
    epochs, batch_size, lr, momentum, weight_decay, warmup_epochs, warmup_lr   (paper recipe, params/)
    test_batch_size, precision ("auto": CPU fp32, CUDA bf16), device, num_workers, threads, text_chunk
    load_from     a finished run folder of this job: evaluate its learned prompts, no training
The recipe: SGD, cosine decay per epoch over `epochs`, the first `warmup_epochs` at the constant
`warmup_lr` (Dassl's ConstantWarmupScheduler), the final-epoch model is evaluated.

Runs on every rank under torchrun: the global batch is split over ranks, DDP averages the prompt
learner's gradients (CLIP is frozen), evaluation is sharded and the hit counts summed. A checkpoint
is written after every epoch; a re-run resumes from it. Returns {"rows": [tidy rows], ...}.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..training import checkpoint
from ..utils import distributed
from ..utils.device import autocast, grad_scaler, pick_device, seed_everything
from ..utils.progress import bar, get_logger

DEFAULTS = {
    "method": "CoCoOp", "profile": "smoke", "data_root": None, "clip_model": None, "clip_pretrained": None,
    "dataset": "Caltech101", "subsample": "base", "shots": 16, "seed": 1,
    "eval": None, "n_ctx": 4, "ctx_init": "a photo of a",
    "epochs": 10, "batch_size": 1, "lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4,
    "warmup_epochs": 1, "warmup_lr": 1e-5, "test_batch_size": 100, "precision": "auto", "device": "auto",
    "num_workers": 0, "threads": None, "text_chunk": 2048, "augment": True, "crop_scale": [0.08, 1.0],
    "load_from": None,
}
RECIPE_KEYS = ("shots", "n_ctx", "ctx_init", "epochs", "batch_size", "lr", "momentum", "weight_decay",
               "warmup_epochs", "warmup_lr", "augment", "crop_scale")
RUN_KEYS = ("test_batch_size", "precision", "device", "num_workers", "threads", "text_chunk")


def lr_at(epoch: int, cfg: dict) -> float:
    """Learning rate used during `epoch` (0-based): constant warm-up, then cosine over all epochs."""
    if epoch < cfg["warmup_epochs"]:
        return float(cfg["warmup_lr"])
    return 0.5 * cfg["lr"] * (1 + math.cos(math.pi * epoch / cfg["epochs"]))


def train_transform(clip_model, augment: bool = True, crop_scale=(0.08, 1.0)):
    """CoOp's training pipeline: random resized crop (bicubic) + horizontal flip + CLIP normalisation.

    crop_scale (0.08, 1) is torchvision's and CoOp's default; the mini world's classes name sizes and
    positions, which such crops destroy, so its params use a milder range."""
    from torchvision import transforms as T

    pcfg = getattr(clip_model.visual, "preprocess_cfg", {}) or {}
    size = clip_model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
    std = pcfg.get("std", (0.26862954, 0.26130258, 0.27577711))
    bicubic = T.InterpolationMode.BICUBIC
    if not augment:
        return T.Compose([T.Resize(size, interpolation=bicubic), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    return T.Compose([T.RandomResizedCrop(size, scale=tuple(crop_scale), interpolation=bicubic),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def resolve_data_root(cfg: dict) -> Path:
    if cfg["profile"] == "paper":
        from ..paths import paper_data_root
        return paper_data_root(cfg.get("data_root"))
    if cfg.get("data_root"):
        return Path(cfg["data_root"])
    from ..data.mini_world import ensure_world
    return ensure_world(cfg["profile"])


_CLIP_CACHE: dict = {}


def build_model(cfg: dict, device: torch.device):
    """PromptCLIP on the cfg's CLIP. The frozen CLIP is loaded once per process (a notebook running many
    inline jobs reuses it; nothing in a job modifies CLIP's weights)."""
    from ..models.clip import clip_spec, load_clip
    from ..models.prompt import PromptCLIP

    name, pretrained = clip_spec(cfg["profile"], cfg.get("clip_model"), cfg.get("clip_pretrained"))
    key = (name, str(pretrained), str(device))
    if key not in _CLIP_CACHE:
        _CLIP_CACHE.clear()  # keep one CLIP in memory at most
        _CLIP_CACHE[key] = load_clip(name, pretrained, device)
    bundle = _CLIP_CACHE[key]
    seed_everything(cfg["seed"])  # the Meta-Net's init must not depend on whether CLIP came from the cache
    model = PromptCLIP(bundle.model, bundle.tokenizer, method=cfg["method"], n_ctx=cfg["n_ctx"],
                       ctx_init=cfg["ctx_init"] or None, text_chunk=cfg["text_chunk"], seed_ctx=cfg["seed"])
    return model.to(device), bundle


def run(cfg: dict, run_dir) -> dict:
    cfg = {**DEFAULTS, **cfg}
    run_dir = Path(run_dir)
    log = get_logger("prompt")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(cfg["seed"])
    device = pick_device(cfg["device"])
    if distributed.is_dist() and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    start = time.time()
    from ..data import coop

    root = resolve_data_root(cfg)
    model, bundle = build_model(cfg, device)
    history: list[dict] = []
    train_info = {}
    if cfg.get("load_from"):
        state = checkpoint.load(Path(cfg["load_from"]), map_location="cpu")
        if state is None:
            raise FileNotFoundError(f"no trained prompts (last.pt) in {cfg['load_from']}")
        model.prompt_learner.load_state_dict(state["prompt_learner"])
        train_info = {"loaded_from": str(cfg["load_from"]), "epoch": state["epoch"] + 1}
    elif cfg["method"] != "CLIP":
        full = coop.load_dataset(cfg["dataset"], root)
        train_ds = coop.subsample_classes(coop.few_shot(full, cfg["shots"], cfg["seed"]), cfg["subsample"])
        model.set_classnames(train_ds.classnames)
        train_info = {"dataset": train_ds.name, "subsample": cfg["subsample"], "classes": train_ds.num_classes,
                      "images": len(train_ds.train)}
        history = _train(model, train_ds, cfg, device, run_dir, log)
    results = _evaluate_all(model, bundle, cfg, root, device, log)
    rows = [{"method": cfg["method"], "dataset": r["dataset"], "split": r["split"], "seed": cfg["seed"],
             "metric": "acc", "value": r["acc"], "run_id": run_dir.name} for r in results]
    return {"rows": rows, "eval": results, "train": train_info, "history": history,
            "world_size": distributed.world_size(), "device": str(device), "seconds": round(time.time() - start, 2)}


def _train(model, train_ds, cfg, device, run_dir, log) -> list[dict]:
    from ..data.coop import ImageListDataset

    learner = model.prompt_learner
    params = model.trainable_parameters()
    opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    scaler = grad_scaler(device, cfg["precision"])
    start_epoch, history = 0, []
    state = checkpoint.load(run_dir, map_location="cpu")
    if state is not None:
        learner.load_state_dict(state["prompt_learner"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        log.info("resuming %s from epoch %d", run_dir.name, start_epoch)
    data = ImageListDataset(train_ds.train, train_transform(model.clip, cfg["augment"], cfg.get("crop_scale", (0.08, 1.0))))
    world = distributed.world_size()
    per_rank = max(1, cfg["batch_size"] // world)
    sampler = distributed.shard(data, shuffle=True, seed=cfg["seed"])
    ddp = distributed.wrap_ddp(model, device, broadcast_buffers=False)
    for epoch in range(start_epoch, cfg["epochs"]):
        seed_everything(cfg["seed"] * 1000 + epoch)  # same augmentations and order after a resume
        gen = torch.Generator().manual_seed(cfg["seed"] * 1000 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(data, batch_size=per_rank, shuffle=sampler is None, sampler=sampler, generator=gen,
                            num_workers=cfg["num_workers"], drop_last=False,
                            persistent_workers=False, pin_memory=device.type == "cuda")
        lr = lr_at(epoch, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum, hits, seen = 0.0, 0, 0
        for images, labels in bar(loader, desc=f"{cfg['method']} {train_ds.name} ep {epoch + 1}/{cfg['epochs']}",
                                  leave=False):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device, cfg["precision"]):
                logits = ddp(images)
            loss = F.cross_entropy(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss_sum += loss.item() * labels.numel()
            hits += int((logits.argmax(-1) == labels).sum())
            seen += labels.numel()
        stats = torch.tensor([loss_sum, hits, seen], dtype=torch.float64, device=device)
        distributed.all_reduce_sum(stats)
        history.append({"epoch": epoch + 1, "lr": lr, "loss": float(stats[0] / max(stats[2], 1)),
                        "train_acc": float(100 * stats[1] / max(stats[2], 1))})
        checkpoint.save(run_dir, {"prompt_learner": learner.state_dict(), "optimizer": opt.state_dict(),
                                  "epoch": epoch, "history": history, "cfg": cfg})
        log.info("%s %s epoch %d/%d: loss %.3f train acc %.1f lr %.2e", cfg["method"], train_ds.name, epoch + 1,
                 cfg["epochs"], history[-1]["loss"], history[-1]["train_acc"], lr)
    return history


def eval_targets(cfg: dict) -> list[dict]:
    targets = cfg.get("eval")
    if not targets:
        sub = cfg["subsample"]
        targets = [{"dataset": cfg["dataset"], "subsample": "base"}, {"dataset": cfg["dataset"], "subsample": "new"}] \
            if sub == "base" else [{"dataset": cfg["dataset"], "subsample": "all"}]
    out = []
    for t in targets:
        t = {"subsample": "all", **t}
        t.setdefault("split", t["subsample"] if t["subsample"] in ("base", "new") else "test")
        out.append(t)
    return out


@torch.no_grad()
def _evaluate_all(model, bundle, cfg, root, device, log) -> list[dict]:
    from ..data import coop

    model.eval()
    loaded: dict[str, object] = {}
    results = []
    for target in eval_targets(cfg):
        name = target["dataset"]
        if name not in loaded:
            loaded[name] = coop.load_dataset(name, root)
        ds = coop.subsample_classes(loaded[name], target["subsample"])
        model.set_classnames(ds.classnames, template=ds.template)
        acc, n = evaluate(model, ds.test, bundle.preprocess_val, cfg, device,
                          desc=f"eval {cfg['method']} {name} {target['split']}")
        results.append({"dataset": ds.name, "split": target["split"], "subsample": target["subsample"],
                        "classes": ds.num_classes, "n": n, "acc": acc})
        log.info("%s on %s (%s, %d classes): %.2f%% of %d", cfg["method"], ds.name, target["split"],
                 ds.num_classes, acc, n)
    return results


@torch.no_grad()
def evaluate(model, items, transform, cfg, device, desc="eval") -> tuple[float, int]:
    """Top-1 accuracy (percent) over the Datum list `items`; each rank scores items[rank::world]."""
    from ..data.coop import ImageListDataset

    data = ImageListDataset(items, transform)
    world, rank = distributed.world_size(), distributed.rank()
    if world > 1:
        data = Subset(data, list(range(rank, len(data), world)))
    loader = DataLoader(data, batch_size=cfg["test_batch_size"], shuffle=False, num_workers=cfg["num_workers"],
                        pin_memory=device.type == "cuda")
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for images, labels in bar(loader, desc=desc, leave=False):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, cfg["precision"]):
            logits = model(images)
        counts[0] += (logits.argmax(-1) == labels).sum()
        counts[1] += labels.numel()
    distributed.all_reduce_sum(counts)
    return float(100 * counts[0] / counts[1].clamp(min=1)), int(counts[1])


# ----------------------------------------------------------------------------- notebook helpers
def job_cfg(params: dict, method: str, dataset: str, seed: int, subsample: str = "base",
            eval: list | None = None, load_from: str | None = None) -> dict:
    """The cfg of one run from a notebook's parameters (recipe: common + per-method values).

    params: profile, data_root, clip_model, clip_pretrained, recipe = {"common": {...}, "CoOp": {...},
    "CoCoOp": {...}} where a method block may hold `epochs_by_dataset` overrides, and optional run
    settings (test_batch_size, precision, device, num_workers, threads, text_chunk).
    Zero-shot CLIP gets no recipe (its runs do not depend on it)."""
    recipe = {**params["recipe"].get("common", {}), **params["recipe"].get(method, {})}
    by_dataset = recipe.pop("epochs_by_dataset", None) or {}
    if dataset in by_dataset:
        recipe["epochs"] = by_dataset[dataset]
    cfg = {"method": method, "profile": params["profile"], "data_root": params.get("data_root"),
           "clip_model": params.get("clip_model"), "clip_pretrained": params.get("clip_pretrained"),
           "dataset": dataset, "subsample": subsample, "seed": int(seed)}
    cfg.update({k: params[k] for k in RUN_KEYS if params.get(k) is not None})
    if method != "CLIP":
        cfg.update({k: recipe[k] for k in RECIPE_KEYS if k in recipe})
    elif "test_batch_size" in recipe and "test_batch_size" not in cfg:
        cfg["test_batch_size"] = recipe["test_batch_size"]
    if eval is not None:
        cfg["eval"] = eval
    if load_from is not None:
        cfg["load_from"] = str(load_from)
    return cfg


def transfer_rows(params: dict, method: str, source: str, seed: int, targets: list[str], profile: str,
                  **launch) -> list[dict]:
    """Rows of `method` trained on all classes of `source` (or zero-shot CLIP) tested on source + targets.

    Tables 2 and 3 share the source-trained runs through the run cache. The training run already
    tests on the source, so the evaluation-only run covers the targets alone (one row per seed each).
    """
    from .launch import run_dir_for, run_job

    evals = [{"dataset": n, "subsample": "all", "split": "test"} for n in targets if n != source]
    if method == "CLIP":
        evals = [{"dataset": source, "subsample": "all", "split": "test"}] + evals
        return run_job("prompt", job_cfg(params, "CLIP", source, seed, "all", eval=evals), profile, **launch)["rows"]
    train_cfg = job_cfg(params, method, source, seed, "all")
    trained = run_job("prompt", train_cfg, profile, **launch)
    eval_cfg = job_cfg(params, method, source, seed, "all", eval=evals,
                       load_from=run_dir_for("prompt", train_cfg, profile))
    return trained["rows"] + run_job("prompt", eval_cfg, profile, **launch)["rows"]


def harmonic_mean(base: float, new: float) -> float:
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def base2new_rows(rows: list[dict]) -> list[dict]:
    """Per-seed acc rows + the derived rows of Table 1.

    Per dataset: H of the seed-averaged base and new accuracies (seed left empty). "Average":
    per seed the mean over datasets of base / new, and H of the averaged B and averaged N (the
    paper's rule, not the mean of per-dataset H)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = [dict(r) for r in rows]
    if df.empty:
        return out
    for (method, seed, split), g in df.groupby(["method", "seed", "split"]):
        out.append({"method": method, "dataset": "Average", "split": split, "seed": seed, "metric": "acc",
                    "value": g["value"].mean(), "run_id": None})
    means = df.groupby(["method", "dataset", "split"])["value"].mean()
    for method in df["method"].unique():
        per = means[method].unstack("split")
        for dataset, r in per.iterrows():
            if {"base", "new"} <= set(r.index) and r.notna().all():
                out.append({"method": method, "dataset": dataset, "split": "base2new", "seed": None, "metric": "H",
                            "value": harmonic_mean(r["base"], r["new"]), "run_id": None})
        if {"base", "new"} <= set(per.columns):
            b, n = per["base"].mean(), per["new"].mean()
            out.append({"method": method, "dataset": "Average", "split": "base2new", "seed": None, "metric": "H",
                        "value": harmonic_mean(b, n), "run_id": None})
    return out


def average_rows(rows: list[dict], exclude: tuple = ("ImageNet",)) -> list[dict]:
    """Add per-seed "Average" acc rows over the datasets not in `exclude` (Table 2: the 10 targets)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = [dict(r) for r in rows]
    if df.empty:
        return out
    df = df[~df["dataset"].isin(exclude)]
    for (method, seed, split), g in df.groupby(["method", "seed", "split"]):
        out.append({"method": method, "dataset": "Average", "split": split, "seed": seed, "metric": "acc",
                    "value": g["value"].mean(), "run_id": None})
    return out


def summary_frame(rows: list[dict], reference=None):
    """Wide view: mean over seeds per (method, dataset, split, metric), the paper's value beside it."""
    import pandas as pd

    df = pd.DataFrame(rows)
    ours = df.groupby(["method", "dataset", "split", "metric"], sort=False)["value"].agg(["mean", "count"])
    ours = ours.rename(columns={"mean": "ours", "count": "seeds"}).reset_index()
    if reference is not None and len(reference):
        ref = reference[["method", "dataset", "split", "metric", "value"]].rename(columns={"value": "paper"})
        ours = ours.merge(ref, on=["method", "dataset", "split", "metric"], how="left")
    return ours


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
