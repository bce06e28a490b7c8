"""Job: zero-shot CLIP, CoOp or CoCoOp on a frozen open_clip CLIP; train on one dataset, test on many.

    run({"method": "CoCoOp", "data_root": "/data", "clip": {"model_name": "ViT-B-16", "pretrained": "openai"},
         "dataset": "Caltech101", "subsample": "base", "seed": 1}, run_dir)

`Config` holds every default: CoCoOp's published recipe; CoOp's differences are in METHOD_DEFAULTS
(filled in for the keys a cfg does not set). The recipe: SGD, the first `warmup_epochs` at the
constant `warmup_lr` (Dassl's ConstantWarmupScheduler), then cosine per epoch over `epochs` started
again after the warm-up (WARMUP_RECOUNT; `training.optim.DasslCosine`); Dassl's few-shot draw
(`data.coop.few_shot`); the last partial batch dropped when the data holds a full one; the final-epoch
model is evaluated. Only official splits, unless `allow_folder_split` (rows then say "(folder split)").

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
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torchvision import transforms as T

from ..data import coop
from ..data.imagefolder import limit
from ..models.clip import _is_path, load_clip
from ..models.prompt import PromptCLIP
from ..models.text_encoder import text_chunk_for
from ..training import checkpoint, loop, optim
from ..training.evaluate import evaluate_classifier
from ..utils import distributed
from ..utils.device import limit_cpu_threads, pick_device, seed_everything
from ..utils.progress import get_logger

# Sources (github.com/KaiyangZhou/CoOp): configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml (the
# Config defaults), scripts/cocoop/base2new_train.sh and xd_train.sh (16 shots, seeds 1 2 3), Dassl's
# optimiser defaults (OPTIM.MOMENTUM 0.9, OPTIM.WEIGHT_DECAY 5e-4), TEST.FINAL_MODEL "last_step".
# Every field's `description` names its source: the recipe card (vlpt_lib.workbook.recipe) shows them.
COCOOP_CFG = "CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"
BOTH = "CoOp configs/trainers/{CoCoOp,CoOp}/vit_b16_*ctxv1.yaml"
DASSL_DEFAULTS = "Dassl config/defaults.py"
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
    model_name: str = Field("ViT-B-16", description=f"{BOTH} MODEL.BACKBONE.NAME ViT-B/16")
    pretrained: str | None = Field("openai", description="OpenAI's weights (CoOp clip/clip.py _MODELS): an "
                                                         "open_clip tag or a local file")
    quick_gelu: bool | None = Field(None, description="OpenAI CLIP's QuickGELU (CoOp clip/model.py); None: the "
                                                      "tag's open_clip cfg (openai: True)")


class EvalTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(description="workbook parameter (targets / variants)")
    subsample: Literal["all", "base", "new"] = Field("all", description="CoOp scripts/cocoop/base2new_test.sh "
                                                                        "DATASET.SUBSAMPLE_CLASSES")
    split: str | None = Field(None, description="workbook parameter: the rows' split label (None: base/new/test)")

    def label(self) -> str:
        return self.split or (self.subsample if self.subsample in ("base", "new") else "test")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["CLIP", "CoOp", "CoCoOp"] = Field(
        "CoCoOp", description="workbook parameter (methods): CoOp trainers/zsclip.py, coop.py, cocoop.py")
    data_root: str = Field(description="workbook parameter: the folder holding imagenet/, caltech-101/, ...")
    clip: ClipSpec = ClipSpec()
    # what to train on
    dataset: str = Field("Caltech101", description="workbook parameter (datasets / source)")
    subsample: Literal["all", "base", "new"] = Field(
        "base", description="CoOp scripts/cocoop/base2new_train.sh DATASET.SUBSAMPLE_CLASSES base (xd_train.sh: all)")
    shots: int = Field(16, description="CoOp scripts/cocoop/base2new_train.sh, xd_train.sh SHOTS=16")
    seed: int = Field(1, description="workbook parameter (seeds; CoOp's scripts run 1, 2, 3)")
    eval: list[EvalTarget] | None = Field(
        None, description="workbook parameter: None = base + new of `dataset` (base2new_test.sh), else these sets")
    allow_folder_split: bool = Field(
        False, description="[A] official split_zhou_<Name>.json only (CoOp DATASETS.md); True: your own data "
                           "split from class folders, rows labelled '(folder split)'")
    # the recipe
    n_ctx: int = Field(4, description=f"{COCOOP_CFG} N_CTX 4 (with ctx_init: its word count)")
    ctx_init: str | None = Field("a photo of a", description=f"{BOTH} CTX_INIT ('' : random N(0, 0.02))")
    epochs: int = Field(10, description="CoOp configs/trainers/ OPTIM.MAX_EPOCH: 10 (CoCoOp/vit_b16_c4_ep10_batch1_"
                                        "ctxv1.yaml); CoOp 200 (CoOp/vit_b16_ctxv1.yaml), ImageNet 50 "
                                        "(CoOp/vit_b16_ep50_ctxv1.yaml)")
    batch_size: int = Field(1, description=f"{BOTH} DATALOADER.TRAIN_X.BATCH_SIZE: CoCoOp 1, CoOp 32 (global); "
                                           "partial last batch dropped if a full one exists (Dassl build_data_loader)")
    lr: float = Field(0.002, description=f"{BOTH} OPTIM.NAME sgd, LR 0.002, LR_SCHEDULER cosine (per epoch)")
    momentum: float = Field(0.9, description=f"{DASSL_DEFAULTS} OPTIM.MOMENTUM 0.9, SGD_NESTEROV False, "
                                             "SGD_DAMPNING 0")
    weight_decay: float = Field(5e-4, description=f"{DASSL_DEFAULTS} OPTIM.WEIGHT_DECAY 5e-4 (every learned "
                                                  "parameter)")
    warmup_epochs: int = Field(1, description=f"{BOTH} OPTIM.WARMUP_EPOCH 1, constant; {DASSL_DEFAULTS} "
                                              "WARMUP_RECOUNT True (cosine starts after it)")
    warmup_lr: float = Field(1e-5, description=f"{BOTH} OPTIM.WARMUP_CONS_LR 1e-5")
    augment: bool = Field(True, description=f"{BOTH} INPUT.TRANSFORMS random_resized_crop, random_flip, normalize")
    crop_scale: tuple[float, float] = Field(
        (0.08, 1.0), description=f"{DASSL_DEFAULTS} INPUT.RRCROP_SCALE (0.08, 1.0)")
    test_batch_size: int = Field(100, description=f"{BOTH} DATALOADER.TEST.BATCH_SIZE 100")
    # how to run
    precision: str = Field("auto", description="[env] CPU fp32, CUDA bf16 autocast with fp32 weights (CoOp "
                                               "TRAINER.*.PREC fp16: CLIP in half precision)")
    device: str = Field("auto", description="[env] auto: CUDA when present")
    num_workers: int = Field(0, description="[env] data-loading workers (CoOp configs: 8)")
    threads: int | None = Field(None, description="[env] CPU threads (None: torch's default)")
    text_chunk: int | None = Field(None, description="[env] most prompts per text-encoder pass (bounds memory; "
                                                     "exact; None: 8192 on a GPU, 128 on a CPU)")
    load_from: str | None = Field(None, description="[env] a finished run folder of this job: evaluate its "
                                                    "prompts, no training")
    # caps (the paper profile's dry run: `reproduce --profile paper --dry-run`); None = the recipe's
    max_steps: int | None = Field(None, description="[cap] stop training after this many steps (None: all epochs)")
    max_test_images: int | None = Field(None, description="[cap] images evaluated per test set, a seeded draw "
                                                          "(None: all)")

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
    """Constant warm-up at warmup_lr, then cosine per epoch restarted after the warm-up (Dassl's
    ConstantWarmupScheduler with WARMUP_RECOUNT): epoch e >= W runs at 0.5 lr (1 + cos(pi (e - W) / epochs))."""
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
                       ctx_init=cfg.ctx_init or None, text_chunk=cfg.text_chunk or text_chunk_for(device),
                       seed_ctx=cfg.seed)
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
        full = coop.load_dataset(cfg.dataset, root, allow_folder_split=cfg.allow_folder_split)
        shots = coop.few_shot(full, cfg.shots, cfg.seed)
        train_ds = coop.subsample_classes(shots, cfg.subsample)
        model.set_classnames(train_ds.classnames)
        train_info = {"dataset": train_ds.label, "subsample": cfg.subsample, "classes": train_ds.num_classes,
                      "images": len(train_ds.train), "split_source": train_ds.split_source,
                      "few_shot": shots.meta.get("few_shot")}
        history = train(model, train_ds, cfg, device, run_dir)
    results = evaluate_all(model, bundle, cfg, root, device, log)
    # rows: the tidy table's columns; a folder-built split shows in the dataset name ("<Name> (folder split)")
    rows = [{"method": cfg.method, "dataset": r["dataset"], "split": r["split"], "seed": cfg.seed,
             "metric": "acc", "value": r["acc"], "run_id": run_dir.name} for r in results]
    return {"rows": rows, "eval": results, "train": train_info, "history": history,
            "world_size": distributed.world_size(), "device": str(device), "seconds": round(time.time() - start, 2)}


def drop_last(n_images: int, batch_size: int) -> bool:
    """Dassl's build_data_loader: the train loader drops the last partial batch when the data holds at
    least one full batch (`drop_last = is_train and len(data_source) >= batch_size`)."""
    return n_images >= batch_size


def make_train_loader(data, cfg: Config, device: torch.device | None = None):
    """The training loader of the one loop with Dassl's drop_last rule (batch_size is global)."""
    return loop.make_loader(data, batch_size=cfg.batch_size, seed=cfg.seed,
                            drop_last=drop_last(len(data), cfg.batch_size), num_workers=cfg.num_workers,
                            device=device)


def train(model: PromptCLIP, train_ds, cfg: Config, device: torch.device, run_dir: Path) -> list[dict]:
    """The prompt learner through the one loop; the checkpoint holds the learner only (CLIP is frozen)."""
    data = coop.ImageListDataset(train_ds.train, train_transform(model.clip, cfg.augment, cfg.crop_scale))
    loader = make_train_loader(data, cfg, device)
    opt = make_optimizer(model.trainable_parameters(), cfg)
    sched = make_scheduler(opt, cfg, len(loader))

    def step_fn(m, batch):
        images, labels = batch
        logits = m(images).float()
        return {"loss": F.cross_entropy(logits, labels),
                "train_acc": 100.0 * (logits.argmax(-1) == labels).float().mean()}

    return loop.train(model, data, step_fn, opt, sched, run_dir, device=device, epochs=cfg.epochs,
                      batch_size=cfg.batch_size, seed=cfg.seed, drop_last=loader.drop_last, precision=cfg.precision,
                      max_steps=cfg.max_steps, num_workers=cfg.num_workers, state_module=model.prompt_learner,
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
            loaded[name] = coop.load_dataset(name, root, allow_folder_split=cfg.allow_folder_split)
        ds = coop.subsample_classes(loaded[name], target.subsample)
        model.set_classnames(ds.classnames, template=ds.template)
        test = limit(coop.ImageListDataset(ds.test, bundle.preprocess_val), cfg.max_test_images, cfg.seed)
        res = evaluate_classifier(model, test, device=device,
                                  batch_size=cfg.test_batch_size, precision=cfg.precision,
                                  num_workers=cfg.num_workers, num_classes=ds.num_classes,
                                  desc=f"eval {cfg.method} {name} {split}")
        results.append({"dataset": ds.label, "split": split, "subsample": target.subsample,
                        "split_source": ds.split_source, "classes": ds.num_classes, "n": res["n"],
                        "acc": res["top1"]})
        log.info("%s on %s (%s, %d classes): %.2f%% of %d", cfg.method, ds.name, split, ds.num_classes,
                 res["top1"], res["n"])
    return results


# ----- what a run reads: its cache key and input fingerprint (vlpt_lib.jobs.launch) ------------------------
def dataset_paths(root: str, name: str) -> list[str]:
    """The split/class-name files and image folders of one CoOp dataset (coop.DatasetSpec layouts)."""
    spec = coop.get_spec(name)
    ddir = Path(root) / spec.dataset_dir
    image_dir = ddir / spec.image_dir if spec.image_dir else ddir
    if spec.kind == "split_json":
        files = [spec.split_file]
    elif spec.kind == "fgvc":
        files = [f"images_variant_{p}.txt" for p in ("train", "val", "test")] + ["variants.txt"]
    else:
        files = ["classnames.txt"]
    folders = [image_dir / "train", image_dir / "val"] if spec.kind == "imagenet" else [image_dir]
    return [str(ddir / f) for f in files] + [str(f) for f in folders]


def data_paths(cfg: dict) -> list[str]:
    """Every dataset it trains on or evaluates, Dassl's few-shot file if one is there, the CLIP weights file
    and the trained run it loads (load_from/last.pt)."""
    names = [cfg["dataset"]] + [t["dataset"] for t in cfg.get("eval") or []]
    out = [p for name in dict.fromkeys(names) for p in dataset_paths(cfg["data_root"], name)]
    spec = coop.get_spec(cfg["dataset"])
    out.append(str(Path(cfg["data_root"]) / spec.dataset_dir / "split_fewshot"
                   / f"shot_{cfg['shots']}-seed_{cfg['seed']}.pkl"))
    pretrained = cfg["clip"]["pretrained"]
    out += [pretrained] if pretrained and _is_path(pretrained) else []
    return out + ([str(Path(cfg["load_from"]) / "last.pt")] if cfg.get("load_from") else [])


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
