"""Job: zero-shot CLIP, CoOp or CoCoOp on a frozen open_clip CLIP; train on one dataset, test on many.

    run({"method": "CoCoOp", "data_root": "/data", "clip": {"model_name": "ViT-B-16", "pretrained": "openai"},
         "dataset": "Caltech101", "subsample": "base", "seed": 1}, run_dir)

`Config` holds every default: CoCoOp's published recipe; CoOp's differences are in METHOD_DEFAULTS
(filled in for the keys a cfg does not set). The recipe: SGD, the first `warmup_epochs` at the
constant `warmup_lr` (Dassl's ConstantWarmupScheduler), then cosine per epoch over `epochs`
(`training.optim.DasslCosine`); the final-epoch model is evaluated.

Training runs through the one loop (`vlpt_lib.training.loop`): the global batch is split over ranks,
DDP averages the prompt learner's gradients (CLIP is frozen), the checkpoint holds only the prompt
learner (+ optimizer, loss scaler, schedule) and a re-run resumes from it. Evaluation scores every
test image exactly once under DDP (`training.evaluate.evaluate_classifier`). `load_from` (a finished
run folder of this job) evaluates its learned prompts without training. Returns {"rows": [...], ...}.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, model_validator
from torchvision import transforms as T

from ..data import coop
from ..models.clip import load_clip
from ..models.prompt import PromptCLIP
from ..training import checkpoint, loop, optim
from ..training.evaluate import evaluate_classifier
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything
from ..utils.progress import get_logger

# Sources (github.com/KaiyangZhou/CoOp): configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml (the
# Config defaults), scripts/cocoop/base2new_train.sh and xd_train.sh (16 shots, seeds 1 2 3), Dassl's
# optimiser defaults (OPTIM.MOMENTUM 0.9, OPTIM.WEIGHT_DECAY 5e-4), TEST.FINAL_MODEL "last_step".
#
# CoOp's own recipe, where it differs from CoCoOp's (the values a CoOp cfg gets for keys it leaves out):
METHOD_DEFAULTS: dict[str, dict] = {
    # configs/trainers/CoOp/vit_b16_ctxv1.yaml (named by the base2new scripts: "CFG=vit_b16_ctxv1  # uncomment
    # this when TRAINER=CoOp"; CoOp issues #27, #70): 200 epochs, batch 32, init "a photo of a" (M=4).
    "CoOp": {"epochs": 200, "batch_size": 32,
             # configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml ("... when TRAINER=CoOp and DATASET=imagenet")
             "by_dataset": {"ImageNet": {"epochs": 50}}},
}


class ClipSpec(BaseModel):
    """The frozen CLIP: an open_clip model name + a tag or weights file (vlpt_lib.models.clip.load_clip)."""
    model_config = ConfigDict(extra="forbid")
    model_name: str = "ViT-B-16"       # CoCoOp paper: CLIP ViT-B/16
    pretrained: str | None = "openai"  # OpenAI's weights (a tag, or a local file)
    quick_gelu: bool | None = None     # None: the tag's own setting; True for a local OpenAI file


class EvalTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    subsample: Literal["all", "base", "new"] = "all"
    split: str | None = None           # the rows' split label; None: "base"/"new", or "test" for "all"

    def label(self) -> str:
        return self.split or (self.subsample if self.subsample in ("base", "new") else "test")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["CLIP", "CoOp", "CoCoOp"] = "CoCoOp"
    data_root: str                     # the folder holding imagenet/, caltech-101/, ... (or a generated world)
    clip: ClipSpec = ClipSpec()
    # what to train on
    dataset: str = "Caltech101"         # [A] any dataset of Table 1; the notebooks always name one
    subsample: Literal["all", "base", "new"] = "base"  # base2new_train.sh: DATASET.SUBSAMPLE_CLASSES base
    shots: int = 16                    # DATASET.NUM_SHOTS 16
    seed: int = 1                      # the scripts' seeds are 1, 2, 3
    eval: list[EvalTarget] | None = None  # None: base + new of `dataset` (subsample base), else its test set
    # the recipe: vit_b16_c4_ep10_batch1_ctxv1.yaml
    n_ctx: int = 4                     # TRAINER.COCOOP.N_CTX 4 (ignored when ctx_init sets the words)
    ctx_init: str | None = "a photo of a"  # TRAINER.COCOOP.CTX_INIT; None or "": random N(0, 0.02)
    epochs: int = 10                   # OPTIM.MAX_EPOCH 10
    batch_size: int = 1                # DATALOADER.TRAIN_X.BATCH_SIZE 1 (global; split over DDP ranks)
    lr: float = 0.002                  # OPTIM.LR 0.002, OPTIM.NAME sgd, LR_SCHEDULER cosine
    momentum: float = 0.9              # Dassl default
    weight_decay: float = 5e-4         # Dassl default, on every learned parameter
    warmup_epochs: int = 1             # OPTIM.WARMUP_EPOCH 1, WARMUP_TYPE constant
    warmup_lr: float = 1e-5            # OPTIM.WARMUP_CONS_LR 1e-5
    augment: bool = True               # INPUT.TRANSFORMS random_resized_crop, random_flip, normalize
    crop_scale: tuple[float, float] = (0.08, 1.0)  # torchvision's RandomResizedCrop default (Dassl's)
    test_batch_size: int = 100         # DATALOADER.TEST.BATCH_SIZE 100
    # how to run
    precision: str = "auto"            # CPU fp32, CUDA bf16 autocast (the official code runs CLIP in fp16)
    device: str = "auto"
    num_workers: int = 0
    threads: int | None = None         # CPU threads (None: torch's default)
    text_chunk: int = 2048             # most prompts per text-encoder pass (bounds memory; exact)
    load_from: str | None = None       # a finished run folder of this job: evaluate its prompts, no training

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data):
        """CoOp's recipe for the keys a cfg leaves out (METHOD_DEFAULTS)."""
        if not isinstance(data, dict):
            return data
        spec = METHOD_DEFAULTS.get(data.get("method", "CoCoOp"), {})
        dataset = data.get("dataset", cls.model_fields["dataset"].default)
        fill = {**{k: v for k, v in spec.items() if k != "by_dataset"}, **spec.get("by_dataset", {}).get(dataset, {})}
        return {**fill, **data}


def train_transform(clip_model, augment: bool = True, crop_scale=(0.08, 1.0)):
    """CoOp's training pipeline: random resized crop (bicubic) + horizontal flip + CLIP normalisation.

    crop_scale (0.08, 1) is torchvision's and CoOp's default; the mini world's classes name sizes and
    positions, which such crops destroy, so its params use a milder range."""
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


def make_optimizer(params, cfg: Config) -> torch.optim.Optimizer:
    """SGD with momentum (no Nesterov), weight decay on every learned parameter (Dassl's build_optimizer)."""
    return optim.create_optimizer(list(params), opt="momentum", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  momentum=cfg.momentum)


def make_scheduler(optimizer, cfg: Config, steps_per_epoch: int):
    """Constant warm-up at warmup_lr, then cosine per epoch counted from epoch 0 over all epochs."""
    return optim.create_scheduler(optimizer, "dassl_cosine", steps_per_epoch=steps_per_epoch, epochs=cfg.epochs,
                                  warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, lr=cfg.lr)


_CLIP_CACHE: dict = {}


def build_model(cfg: Config, device: torch.device):
    """PromptCLIP on the cfg's CLIP. The frozen CLIP is loaded once per process (a notebook running many
    inline jobs reuses it; nothing in a job modifies CLIP's weights)."""
    spec = cfg.clip
    key = (spec.model_name, str(spec.pretrained), spec.quick_gelu, str(device))
    if key not in _CLIP_CACHE:
        _CLIP_CACHE.clear()  # keep one CLIP in memory at most
        _CLIP_CACHE[key] = load_clip(spec.model_name, spec.pretrained, device, quick_gelu=spec.quick_gelu)
    bundle = _CLIP_CACHE[key]
    seed_everything(cfg.seed)  # the Meta-Net's init must not depend on whether CLIP came from the cache
    model = PromptCLIP(bundle.model, bundle.tokenizer, method=cfg.method, n_ctx=cfg.n_ctx,
                       ctx_init=cfg.ctx_init or None, text_chunk=cfg.text_chunk, seed_ctx=cfg.seed)
    return model.to(device), bundle


def run(cfg: dict, run_dir) -> dict:
    cfg = Config.model_validate(cfg)
    run_dir = Path(run_dir)
    log = get_logger("prompt")
    limit_cpu_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if distributed.is_dist() and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    start = time.time()
    root = Path(cfg.data_root)
    model, bundle = build_model(cfg, device)
    history: list[dict] = []
    train_info = {}
    if cfg.load_from:
        state = checkpoint.load(Path(cfg.load_from), map_location="cpu")
        if state is None:
            raise FileNotFoundError(f"no trained prompts (last.pt) in {cfg.load_from}")
        model.prompt_learner.load_state_dict(state["model"])
        train_info = {"loaded_from": str(cfg.load_from), "epoch": state["epoch"] + 1}
    elif cfg.method != "CLIP":
        full = coop.load_dataset(cfg.dataset, root)
        train_ds = coop.subsample_classes(coop.few_shot(full, cfg.shots, cfg.seed), cfg.subsample)
        model.set_classnames(train_ds.classnames)
        train_info = {"dataset": train_ds.name, "subsample": cfg.subsample, "classes": train_ds.num_classes,
                      "images": len(train_ds.train)}
        history = train(model, train_ds, cfg, device, run_dir)
    results = evaluate_all(model, bundle, cfg, root, device, log)
    rows = [{"method": cfg.method, "dataset": r["dataset"], "split": r["split"], "seed": cfg.seed,
             "metric": "acc", "value": r["acc"], "run_id": run_dir.name} for r in results]
    return {"rows": rows, "eval": results, "train": train_info, "history": history,
            "world_size": distributed.world_size(), "device": str(device), "seconds": round(time.time() - start, 2)}


def train(model: PromptCLIP, train_ds, cfg: Config, device: torch.device, run_dir: Path) -> list[dict]:
    """The prompt learner through the one loop; the checkpoint holds the learner only (CLIP is frozen)."""
    data = coop.ImageListDataset(train_ds.train, train_transform(model.clip, cfg.augment, cfg.crop_scale))
    # drop_last=False: the last, smaller batch is trained on too (Dassl's train loader)
    loader = loop.make_loader(data, batch_size=cfg.batch_size, seed=cfg.seed, drop_last=False,
                              num_workers=cfg.num_workers, device=device)
    opt = make_optimizer(model.trainable_parameters(), cfg)
    sched = make_scheduler(opt, cfg, len(loader))

    def step_fn(m, batch):
        images, labels = batch
        logits = m(images).float()
        return {"loss": F.cross_entropy(logits, labels),
                "train_acc": 100.0 * (logits.argmax(-1) == labels).float().mean()}

    return loop.train(model, data, step_fn, opt, sched, run_dir, device=device, epochs=cfg.epochs,
                      batch_size=cfg.batch_size, seed=cfg.seed, drop_last=False, precision=cfg.precision,
                      num_workers=cfg.num_workers, state_module=model.prompt_learner,
                      ddp_kwargs={"broadcast_buffers": False}, desc=f"{cfg.method} {train_ds.name}", loader=loader)


def eval_targets(cfg: Config) -> list[EvalTarget]:
    if cfg.eval:
        return list(cfg.eval)
    if cfg.subsample == "base":
        return [EvalTarget(dataset=cfg.dataset, subsample="base"), EvalTarget(dataset=cfg.dataset, subsample="new")]
    return [EvalTarget(dataset=cfg.dataset, subsample="all")]


@torch.no_grad()
def evaluate_all(model: PromptCLIP, bundle, cfg: Config, root: Path, device: torch.device, log) -> list[dict]:
    model.eval()
    loaded: dict[str, coop.CoopDataset] = {}
    results = []
    for target in eval_targets(cfg):
        name, split = target.dataset, target.label()
        if name not in loaded:
            loaded[name] = coop.load_dataset(name, root)
        ds = coop.subsample_classes(loaded[name], target.subsample)
        model.set_classnames(ds.classnames, template=ds.template)
        res = evaluate_classifier(model, coop.ImageListDataset(ds.test, bundle.preprocess_val), device=device,
                                  batch_size=cfg.test_batch_size, precision=cfg.precision,
                                  num_workers=cfg.num_workers, num_classes=ds.num_classes,
                                  desc=f"eval {cfg.method} {name} {split}")
        results.append({"dataset": ds.name, "split": split, "subsample": target.subsample,
                        "classes": ds.num_classes, "n": res["n"], "acc": res["top1"]})
        log.info("%s on %s (%s, %d classes): %.2f%% of %d", cfg.method, ds.name, split, ds.num_classes,
                 res["top1"], res["n"])
    return results


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
