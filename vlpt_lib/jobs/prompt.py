"""Job: any registered prompt method (vlpt_lib.methods.prompt: zero-shot CLIP, CoOp, CoCoOp, ..., yours)
on a frozen open_clip CLIP; train on one dataset, test on many.

    run({"method": "CoCoOp", "data_root": "/data", "clip": {"model_name": "ViT-B-16", "pretrained": "openai"},
         "dataset": "Caltech101", "subsample": "base", "seed": 1}, run_dir)

`Config` resolves a cfg to its method's Recipe (every default: that method's published recipe, each with
its source). The Dassl recipe every trained method shares: SGD, the first `warmup_epochs` at the
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

import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms as T

from ..data import coop
from ..data.imagefolder import limit
from ..models.clip import _is_path, load_clip
from ..methods import prompt as methods
from ..methods.prompt.base import DasslRecipe, EvalTarget, PromptMethod, PromptRun
from ..models.prompt import PromptCLIP
from ..models.text_encoder import text_chunk_for
from ..training import checkpoint, loop, optim
from ..training.evaluate import evaluate_classifier
from ..utils import distributed
from ..utils.device import autocast, limit_cpu_threads, pick_device, seed_everything
from ..utils.progress import get_logger

DEFAULT_METHOD = "CoCoOp"  # the paper this job reproduces first


class Config:
    """The job's config: the Recipe of the cfg's method (vlpt_lib.methods.prompt; a union discriminated by
    `method`, default CoCoOp). Config(**fields) and Config.model_validate(dict) return that Recipe, resolved;
    every field's `description` names its source (the recipe card shows them)."""

    def __new__(cls, **fields):
        return cls.model_validate(fields)

    @staticmethod
    def model_validate(cfg) -> PromptRun:
        if isinstance(cfg, dict) and "method" not in cfg:
            cfg = {**cfg, "method": DEFAULT_METHOD}
        return methods.validate(cfg)


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


def make_optimizer(params, cfg: DasslRecipe) -> torch.optim.Optimizer:
    """SGD with momentum (no Nesterov), weight decay on every learned parameter (Dassl's build_optimizer)."""
    return optim.create_optimizer(list(params), opt="momentum", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  momentum=cfg.momentum)


def make_scheduler(optimizer, cfg: DasslRecipe, steps_per_epoch: int):
    """Constant warm-up at warmup_lr, then cosine per epoch restarted after the warm-up (Dassl's
    ConstantWarmupScheduler with WARMUP_RECOUNT): epoch e >= W runs at 0.5 lr (1 + cos(pi (e - W) / epochs))."""
    return optim.create_scheduler(optimizer, "dassl_cosine", steps_per_epoch=steps_per_epoch, epochs=cfg.epochs,
                                  warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, lr=cfg.lr)


_CLIP_CACHE: dict = {}


def _clip_key(spec, device) -> tuple:
    """A loaded CLIP's identity in this process: its spec, device and (a weights file) the file's size and mtime."""
    weights = _stat(spec.pretrained) if spec.pretrained and _is_path(spec.pretrained) and os.path.exists(
        spec.pretrained) else None
    return spec.model_name, str(spec.pretrained), spec.quick_gelu, str(device), weights


def build_model(cfg: PromptRun, device: torch.device):
    """The cfg's method on the cfg's CLIP. The frozen CLIP is loaded once per process (a notebook running many
    inline jobs reuses it; nothing in a job modifies CLIP's weights)."""
    key = _clip_key(cfg.clip, device)
    if key not in _CLIP_CACHE:
        _CLIP_CACHE.clear()  # keep one CLIP in memory at most
        spec = cfg.clip
        _CLIP_CACHE[key] = load_clip(spec.model_name, spec.pretrained, device, quick_gelu=spec.quick_gelu)
    bundle = _CLIP_CACHE[key]
    seed_everything(cfg.seed)  # the Meta-Net's init must not depend on whether CLIP came from the cache
    model = methods.build(cfg, bundle.model, bundle.tokenizer, text_chunk=cfg.text_chunk or text_chunk_for(device))
    return model.to(device), bundle


def run(cfg: dict, run_dir) -> dict:
    cfg = Config.model_validate(cfg)
    run_dir = Path(run_dir)
    log = get_logger()  # the library's logger: quiet in a pool worker, whose stderr a notebook shows in pink
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
        check_trained_by(cfg.method, Path(cfg.load_from))
        state = checkpoint.load(Path(cfg.load_from), map_location="cpu")
        if state is None:
            raise FileNotFoundError(f"no readable trained prompts (last.pt) in {cfg.load_from}: delete that run "
                                    "folder and run again to retrain it (only that run)")
        model.prompt_learner.load_state_dict(state["model"])
        train_info = {"loaded_from": str(cfg.load_from), "epoch": state["epoch"] + 1}
    elif model.trains:
        full = coop.load_dataset(cfg.dataset, root, allow_folder_split=cfg.allow_folder_split)
        shots = coop.few_shot(full, cfg.shots, cfg.seed)
        train_ds = coop.subsample_classes(shots, cfg.subsample)
        model.set_classnames(train_ds.classnames, template=model.template_for(train_ds.name, train_ds.template))
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


def check_trained_by(method: str, run_dir: Path) -> None:
    """`load_from` must be a run of the same method: another method's learner may load without error (two
    methods with the same context shape) and would be evaluated under the wrong name."""
    config = run_dir / "config.json"
    trained = json.loads(config.read_text()).get("cfg", {}).get("method") if config.exists() else None
    if trained not in (None, method):
        raise ValueError(f"load_from {run_dir} was trained by {trained!r}, not {method!r}: point it at a {method} run")


def drop_last(n_images: int, batch_size: int) -> bool:
    """Dassl's build_data_loader: the train loader drops the last partial batch when the data holds at
    least one full batch (`drop_last = is_train and len(data_source) >= batch_size`)."""
    return n_images >= batch_size


def make_train_loader(data, cfg: DasslRecipe, device: torch.device | None = None):
    """The training loader of the one loop with Dassl's drop_last rule (batch_size is global)."""
    return loop.make_loader(data, batch_size=cfg.batch_size, seed=cfg.seed,
                            drop_last=drop_last(len(data), cfg.batch_size), num_workers=cfg.num_workers,
                            device=device)


def train(model: PromptMethod, train_ds, cfg: DasslRecipe, device: torch.device, run_dir: Path) -> list[dict]:
    """The prompt learner through the one loop; the checkpoint holds the learner only (CLIP is frozen)."""
    data = coop.ImageListDataset(train_ds.train, train_transform(model.clip, cfg.augment, cfg.crop_scale))
    loader = make_train_loader(data, cfg, device)
    opt = make_optimizer(model.trainable_parameters(), cfg)
    sched = make_scheduler(opt, cfg, len(loader))

    def step_fn(m, batch):  # the method's training_loss, through forward (m may be the DDP wrapper)
        images, labels = batch
        return m(images, labels)

    return loop.train(model, data, step_fn, opt, sched, run_dir, device=device, epochs=cfg.epochs,
                      batch_size=cfg.batch_size, seed=cfg.seed, drop_last=loader.drop_last, precision=cfg.precision,
                      max_steps=cfg.max_steps, num_workers=cfg.num_workers, state_module=model.prompt_learner,
                      ddp_kwargs={"broadcast_buffers": False}, desc=f"{cfg.method} {train_ds.name}", loader=loader,
                      after_epoch=model.after_epoch)


def eval_targets(cfg: PromptRun) -> list[EvalTarget]:
    if cfg.eval:
        return list(cfg.eval)
    if cfg.subsample == "base":
        return [EvalTarget(dataset=cfg.dataset, subsample="base"), EvalTarget(dataset=cfg.dataset, subsample="new")]
    return [EvalTarget(dataset=cfg.dataset, subsample="all")]


@torch.no_grad()
def evaluate_all(model: PromptMethod, bundle, cfg: PromptRun, root: Path, device: torch.device, log) -> list[dict]:
    model.eval()
    loaded: dict[str, coop.CoopDataset] = {}
    results = []
    for target in eval_targets(cfg):
        name, split = target.dataset, target.label()
        if name not in loaded:
            loaded[name] = coop.load_dataset(name, root, allow_folder_split=cfg.allow_folder_split)
        ds = coop.subsample_classes(loaded[name], target.subsample)
        model.set_classnames(ds.classnames, template=model.template_for(ds.name, ds.template))
        test = limit(coop.ImageListDataset(ds.test, bundle.preprocess_val), cfg.max_test_images, cfg.seed)
        scorer = model
        if type(model).encode_images is PromptCLIP.encode_images and not distributed.is_dist():
            # the frozen CLIP's features: computed once per process for every method and seed that tests here
            test, scorer = frozen_test_features(model, test, ds.test, cfg, device), model.logits_from_features
        res = evaluate_classifier(scorer, test, device=device,
                                  batch_size=cfg.test_batch_size, precision=cfg.precision,
                                  num_workers=cfg.num_workers, num_classes=ds.num_classes,
                                  desc=f"eval {cfg.method} {name} {split}")
        results.append({"dataset": ds.label, "split": split, "subsample": target.subsample,
                        "split_source": ds.split_source, "classes": ds.num_classes, "n": res["n"],
                        "acc": res["top1"]})
        log.info("%s on %s (%s, %d classes): %.2f%% of %d", cfg.method, ds.name, split, ds.num_classes,
                 res["top1"], res["n"])
    return results


_TEST_FEATURES: OrderedDict = OrderedDict()  # per process: (CLIP, test images, how they are batched) -> features
_TEST_FEATURES_KEPT = 8


@torch.no_grad()
def frozen_test_features(model: PromptMethod, test, items, cfg: PromptRun, device: torch.device) -> TensorDataset:
    """The frozen CLIP's normalised features of a test set, with its labels. A process running many prompt jobs
    (a notebook's inline runs, a run_jobs worker) encodes a test set once for zero-shot CLIP, CoOp, CoCoOp,
    KgCoOp and every seed: their image features do not depend on what they learn. Exact: the same batches
    through the same encoder as model(images) in evaluate_classifier. Keyed by the CLIP, each image's path,
    label, size and mtime (an image rewritten in place is encoded again), the draw of max_test_images, the
    batch size and precision."""
    files = tuple((d.impath, d.label, *_stat(d.impath)) for d in items)
    key = (_clip_key(cfg.clip, device), files, cfg.max_test_images, cfg.seed, cfg.test_batch_size, cfg.precision)
    if key in _TEST_FEATURES:
        _TEST_FEATURES.move_to_end(key)
        return _TEST_FEATURES[key]
    loader = DataLoader(test, batch_size=cfg.test_batch_size, shuffle=False, num_workers=cfg.num_workers)
    feats, labels = [], []
    for images, y in loader:
        with autocast(device, cfg.precision):
            feats.append(model.encode_images(images.to(device)))
        labels.append(y.to(device))
    _TEST_FEATURES[key] = TensorDataset(torch.cat(feats), torch.cat(labels))
    while len(_TEST_FEATURES) > _TEST_FEATURES_KEPT:
        _TEST_FEATURES.popitem(last=False)
    return _TEST_FEATURES[key]


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


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
    """Every dataset it trains on or evaluates, Dassl's few-shot file if one is there, the CLIP weights file,
    a plug-in method's source file and the trained run it loads (load_from/last.pt)."""
    names = [cfg["dataset"]] + [t["dataset"] for t in cfg.get("eval") or []]
    out = [p for name in dict.fromkeys(names) for p in dataset_paths(cfg["data_root"], name)]
    spec = coop.get_spec(cfg["dataset"])
    out.append(str(Path(cfg["data_root"]) / spec.dataset_dir / "split_fewshot"
                   / f"shot_{cfg['shots']}-seed_{cfg['seed']}.pkl"))
    pretrained = cfg["clip"]["pretrained"]
    out += [pretrained] if pretrained and _is_path(pretrained) else []
    out += methods.input_paths(cfg["method"])  # a plug-in method's own file
    return out + ([str(Path(cfg["load_from"]) / "last.pt")] if cfg.get("load_from") else [])


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
