"""Glue of the MVP notebooks (10 pre-training, 11 ImageNet fine-tuning, 12 ADE20K segmentation).

Notebook parameters -> job configs (the job dict of a notebook is a diff on the job's `Config`; the
profile gives the data root and the CLIP teacher through `profiles.resolve`), the pre-trained
students notebooks 11 and 12 start from, the table builders and the figures of what is not a table
(masks, teacher similarity, example predictions; each table's figure is in `workbook.plots`):

    cfgs = mvp.pretrain_cfgs("mini", {"optim": {"epochs": 20}}, ["clip", "pixel"])   # resolves only
    runs = mvp.ensure_pretrained("mini", cfgs)          # the pre-training runs (cached by config)
    exports = mvp.pretrained_exports("mini")            # notebook 10's students: where its runs' exports are
    cfg = mvp.finetune_cfg("mini", {}, "MVP", 0, exports)

Targets are plug-ins (`vlpt_lib.methods.targets`): a table row label per target (`method_targets()`: label ->
target name, "Scratch" -> None), `table_methods(targets)` the rows of tables 11/12 for a list of targets and
`colors()` a plot colour per row label, all from the registry (a plug-in target listed in $VLPT_PLUGINS shows
up in all three).

The cfg functions are pure (profiles.resolve names the data root and CLIP; nothing is generated), so the
recipe card (`recipe_card(job, {label: cfg})`: every recipe value a run uses, with its source) shows the very
configs that run, before anything runs; `profiles.prepare` then generates the world and trains the mini CLIP.
Notebook 10's students are found from its runs' folders (`pretrained_exports`: jobs.launch.run_dir_for of its
cfgs), the one record of what was pre-trained.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap, hsv_to_rgb
from matplotlib.patches import Patch
from pydantic import BaseModel, ValidationError
from torchvision.transforms import v2

from ..data import DatasetError
from ..data.ade20k import ADE20K_CLASSES, IGNORE_INDEX, ade_root, read_object_info
from ..data.imagefolder import ImageNetFolder
from ..jobs import finetune, pretrain, segment
from ..jobs.launch import load_result, resolve_config, run_dir_for, run_jobs
from ..methods import targets as mim_targets
from ..models.mvp import ClipTeacher, MVPStudent, arch_spec, export_kwargs, patch_similarity
from . import params, paths, profiles, recipe, tables
from .params import merge

PRETRAIN_NOTEBOOK = "10_mvp_pretrain"
# Row labels, colours and label -> target of the MVP tables, from the registry (re-exported here).
SCRATCH, colors, method_targets, table_methods = (mim_targets.SCRATCH, mim_targets.colors, mim_targets.method_targets,
                                                  mim_targets.table_methods)


def targets_of(methods: Iterable[str]) -> list[str]:
    """The pre-training targets that table rows `methods` start from (Scratch needs none), in row order."""
    rows = method_targets()
    unknown = [m for m in methods if m not in rows]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected row labels among {tuple(rows)}")
    return [rows[m] for m in methods if rows[m] is not None]


# ----- parameters ---------------------------------------------------------------------------------
def _refusal(error: dict) -> str:
    """One pydantic error as `key.path = value: what is allowed`."""
    where = ".".join(str(p) for p in error["loc"])
    value = "" if error["type"] == "missing" else f" = {error['input']!r}"
    return f"{where}{value}: {error['msg'].removeprefix('Value error, ')}"


def _checker(name: str, config: type[BaseModel]) -> Callable[[object], None]:
    def check(diff) -> None:
        """Raise ValueError naming every key of `diff` that the job's Config refuses."""
        try:
            config.model_validate(diff or {})
        except ValidationError as err:
            bad = "; ".join(_refusal(e) for e in err.errors())
            raise ValueError(f"parameter {name!r} does not fit vlpt_lib.jobs.{config.__module__.split('.')[-1]}"
                             f".Config: {bad}") from None
    return check


# The job dicts of notebooks 10, 11, 12 (the runner checks a params file before running a notebook).
PARAM_CHECKS: dict[str, Callable[[object], None]] = {
    "pretrain": _checker("pretrain", pretrain.Config),
    "finetune": _checker("finetune", finetune.Config),
    "segment": _checker("segment", segment.Config),
}

# The datasets each MVP notebook reads (00_setup's strict check requires these only): ImageNet-1K for pre-training
# and fine-tuning, ADE20K for segmentation (its pre-trained students come from notebook 10, selected with it).
DATA_NEEDS: dict[str, Callable[[dict], list[str]]] = {
    PRETRAIN_NOTEBOOK: lambda params: ["ImageNet"],
    "11_imagenet_finetune": lambda params: ["ImageNet"],
    "12_ade20k_segmentation": lambda params: ["ADE20K"],
}


def _env(device, precision, threads, num_workers) -> dict:
    return {"device": device, "precision": precision, "threads": threads, "data": {"num_workers": num_workers}}


JOBS = {"pretrain": pretrain, "finetune": finetune, "segment": segment}


def recipe_card(job: str, cfgs: Mapping[str, Mapping]) -> pd.DataFrame:
    """The recipe card of resolved `job` configs, one column per label (targets or methods), in the card format
    every table shares (recipe.paper_card): the values, the paper recipe's, a mark where they differ, the source."""
    return recipe.paper_card({str(label): JOBS[job].Config.model_validate(cfg) for label, cfg in cfgs.items()})


# ----- 10: pre-training ---------------------------------------------------------------------------
def pretrain_cfgs(profile: str, job: Mapping, targets: Iterable[str] | None = None, *, data_root=None,
                  clip_model=None, clip_pretrained=None, clip_quick_gelu=None, device="auto", precision="auto",
                  threads=None, num_workers=0) -> dict[str, dict]:
    """One pretrain cfg per target: notebook 10's job dict + the profile's data root and CLIP + env knobs (pure:
    nothing is generated). `targets`: registered target names (None: all of them)."""
    targets = list(mim_targets.names() if targets is None else targets)
    specs = {t: mim_targets.get(t) for t in targets}  # ValueError naming the registered targets
    PARAM_CHECKS["pretrain"](job)
    world = profiles.resolve(profile, data_root, clip_model, clip_pretrained, clip_quick_gelu,
                             need_clip=any(spec.needs_clip for spec in specs.values()))
    cfgs = {}
    for target in targets:
        cfg = merge(job, {"target": target, **_env(device, precision, threads, num_workers)})
        cfg = merge(cfg, {"data": {"root": str(world.data_root) if world.data_root else None}})
        if specs[target].needs_clip:
            cfg["clip"] = dict(world.clip)
        cfgs[target] = resolve_config("pretrain", cfg)
    return cfgs


def params_targets(profile: str) -> list[str]:
    """The targets notebook 10 pre-trains on `profile` (its parameters cell + params/<profile>/10_mvp_pretrain.yaml)."""
    return list(params.effective(PRETRAIN_NOTEBOOK, profile)["targets"])


def _params_pretrain_cfgs(profile: str, targets: Iterable[str] | None = None) -> tuple[dict, dict[str, dict]]:
    """(notebook 10's params, its pretrain cfgs for `targets`, None: the targets it lists) on `profile`: the parameters
    its last run in this results folder was given (its record: a dry run's or a runner's overrides included), else
    its parameters cell + params/<profile>/10_mvp_pretrain.yaml."""
    p = params.effective(PRETRAIN_NOTEBOOK, profile)
    try:
        p = {**p, **json.loads((paths.executed_dir(profile) / f"{PRETRAIN_NOTEBOOK}.run.json").read_text())["params"]}
    except (OSError, ValueError, KeyError):
        pass  # notebook 10 never ran here (Lab, a test): its parameters as written
    targets = list(p["targets"] if targets is None else targets)
    cfgs = pretrain_cfgs(profile, p["pretrain"], targets, data_root=p.get("data_root"),
                         clip_model=p.get("clip_model"), clip_pretrained=p.get("clip_pretrained"),
                         clip_quick_gelu=p.get("clip_quick_gelu"), device=p.get("device", "auto"),
                         precision=p.get("precision", "auto"), threads=p.get("threads"),
                         num_workers=p.get("num_workers", 0))
    return p, cfgs


def ensure_pretrained(profile: str, cfgs: Mapping[str, dict], **launch) -> dict[str, dict]:
    """Run (or fetch from the run cache) the pre-training of each target; return the results.
    `launch`: run_jobs' options (launcher, nproc, slurm, force, workers)."""
    results = run_jobs([("pretrain", cfg) for cfg in cfgs.values()], paths.runs_dir(profile), **launch)
    return dict(zip(cfgs, results))


def pretrained_exports(profile: str, targets: Iterable[str] | None = None) -> dict[str, dict]:
    """target -> {export, model_name, kwargs}: the students notebook 10's runs export (its parameters cell +
    params/<profile>/10_mvp_pretrain.yaml; `targets` None: the targets it lists), found from their run folders
    (run_dir_for), whether they ran yet or not; nothing runs (`ensure_exports` runs what is missing)."""
    _, cfgs = _params_pretrain_cfgs(profile, targets)
    out = {}
    for target, cfg in cfgs.items():
        s = cfg["student"]
        out[target] = {"export": str(run_dir_for("pretrain", cfg, paths.runs_dir(profile)) / pretrain.EXPORT_NAME),
                       "model_name": arch_spec(s["arch"])[0], "kwargs": export_kwargs(s["arch"], s["layer_scale_init"])}
    return out


def ensure_exports(profile: str, targets: Iterable[str] | None = None) -> dict[str, dict]:
    """The pre-training runs behind `pretrained_exports` (notebook 10's, served from the cache when they ran; run
    here, with notebook 10's launch parameters, when they did not); returns their results."""
    p, cfgs = _params_pretrain_cfgs(profile, targets)
    world = profiles.resolve(profile, p.get("data_root"), p.get("clip_model"), p.get("clip_pretrained"),
                             p.get("clip_quick_gelu"), need_clip=any("clip" in c for c in cfgs.values()))
    profiles.prepare(world)
    return ensure_pretrained(profile, cfgs, launcher=p.get("launcher", "inline"), nproc=p.get("nproc", 1),
                             slurm=p.get("slurm"), workers=p.get("workers", 1))


def pretrain_summary(runs: Mapping[str, dict]) -> pd.DataFrame:
    """Notebook 10's table: one row per target."""
    return pd.DataFrame([{"target": t, "loss": r["loss_kind"], "first epoch loss": r["history"][0]["loss"],
                          "final loss": r["final_loss"], "steps": r["steps"], "images seen": r["images_seen"],
                          "train images": r["train_images"],
                          "masked / image": f'{r["num_masking_patches"]}/{int(np.prod(r["grid"]))}',
                          "wall s": r.get("wall_s"), "run": r.get("run_id")} for t, r in runs.items()])


def _probe(cfg: Mapping, n: int):
    """A student of the cfg's arch, its masker and `n` train images (resized, centre-cropped) for the figures."""
    c = pretrain.Config.model_validate(cfg)
    probe = MVPStudent(c.student.arch, target_dim=8)
    view = v2.Compose([v2.ToImage(), v2.Resize(probe.img_size), v2.CenterCrop(probe.img_size),
                       v2.ToDtype(torch.float32, scale=True)])
    train_set = ImageNetFolder(c.data.root, c.data.split, view)
    pick = np.linspace(0, len(train_set) - 1, n).astype(int)
    images = torch.stack([train_set[int(i)][0] for i in pick])
    return c, probe, pretrain.build_masker(c.mask, probe.grid), images


def figure_masks(cfg: Mapping, n: int = 6):
    """Block-wise masks of the cfg's masker drawn over `n` training images."""
    c, probe, masker, images = _probe(cfg, n)
    masks = masker.batch(n, seed=c.seed)
    p = probe.patch_size
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.2), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j].permute(1, 2, 0))
        up = np.kron(masks[j], np.ones((p, p)))
        axes[1, j].imshow(images[j].permute(1, 2, 0).numpy() * (1 - 0.8 * up[..., None]))
        axes[1, j].set_title(f"{int(masks[j].sum())}/{masks[j].size} masked", fontsize=8)
    for a in axes.flat:
        a.axis("off")
    fig.suptitle(f"block-wise masks on the {probe.grid[0]}x{probe.grid[1]} patch grid")
    return fig


def figure_teacher_similarity(cfg: Mapping, n: int = 6):
    """Cosine similarity of the CLIP teacher's patch tokens to the centre token, on `n` training images."""
    c, probe, _, images = _probe(cfg, n)
    teacher = ClipTeacher(pretrain.load_teacher_model(c.clip))
    with torch.no_grad():
        tokens = teacher(images, probe.grid)
    gh, gw, p = *probe.grid, probe.patch_size
    sims = patch_similarity(tokens, (gh // 2) * gw + gw // 2).reshape(n, gh, gw)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.4), squeeze=False, layout="constrained")
    for j in range(n):
        axes[0, j].imshow(images[j].permute(1, 2, 0))
        axes[0, j].add_patch(plt.Rectangle(((gw // 2) * p, (gh // 2) * p), p, p, fill=False, color="red", lw=2))
        shown = axes[1, j].imshow(sims[j], cmap="viridis", vmin=-1, vmax=1)
    for a in axes.flat:
        a.axis("off")
    fig.colorbar(shown, ax=axes[1, :].tolist(), shrink=0.9, label="cosine similarity")
    fig.suptitle(f"teacher {c.clip.model_name}: similarity of each patch token to the marked (red) centre token")
    return fig


def figure_pretrain_loss(runs: Mapping[str, dict]):
    """Masked-patch loss per epoch, one panel per target, in the colour of the table row that starts from it
    (`colors()` of its label, as in every other figure)."""
    label_of = {t: label for label, t in method_targets().items() if t is not None}
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.2), squeeze=False)
    for ax, (t, r) in zip(axes[0], runs.items()):
        h = pd.DataFrame(r["history"])
        ax.plot(h["epoch"], h["loss"], marker="o", color=colors().get(label_of.get(t)))
        ax.set_title(f"{label_of[t]}: target {t} ({r['loss_kind']} loss)" if t in label_of else
                     f"target {t} ({r['loss_kind']} loss)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("masked-patch loss")
    fig.tight_layout()
    return fig


# ----- 11 and 12: fine-tuning and segmentation ---------------------------------------------------------
def init_of(method: str, exports: Mapping[str, dict]) -> dict:
    """The `init` of a downstream cfg: the student pre-trained with the method's target, or scratch (the same
    architecture: every target's student is built from notebook 10's one student config)."""
    rows = method_targets()
    if method not in rows:
        raise ValueError(f"unknown method {method!r}; expected one of {tuple(rows)}")
    target = rows[method]
    if target is not None and target not in exports:
        raise ValueError(f"method {method!r} starts from target {target!r}, which notebook 10 does not pre-train "
                         f"(its exports: {sorted(exports)}): add it to notebook 10's targets")
    arch = exports[target] if target else next(iter(exports.values()))  # one student config for every target
    return {"checkpoint": exports[target]["export"] if target else None, "model_name": arch["model_name"],
            "kwargs": arch["kwargs"]}


def _downstream_cfg(job: str, profile: str, diff: Mapping, method: str, seed: int, exports: Mapping, *,
                    data_root, device, precision, threads, num_workers) -> dict:
    PARAM_CHECKS[job](diff)
    root = profiles.resolve(profile, data_root, need_clip=False).data_root
    cfg = merge(diff, {"seed": seed, "method": method, "init": init_of(method, exports),
                       **_env(device, precision, threads, num_workers)})
    return resolve_config(job, merge(cfg, {"data": {"root": str(root) if root else None}}))


def finetune_cfg(profile: str, job: Mapping, method: str, seed: int, exports: Mapping, *, data_root=None,
                 device="auto", precision="auto", threads=None, num_workers=0) -> dict:
    """Notebook 11's job dict for one (method, seed) + the exported student + the profile's data root (pure)."""
    return _downstream_cfg("finetune", profile, job, method, seed, exports, data_root=data_root, device=device,
                           precision=precision, threads=threads, num_workers=num_workers)


def segment_cfg(profile: str, job: Mapping, method: str, seed: int, exports: Mapping, *, data_root=None,
                device="auto", precision="auto", threads=None, num_workers=0) -> dict:
    """Notebook 12's job dict for one (method, seed) + the exported student + the profile's data root (pure)."""
    return _downstream_cfg("segment", profile, job, method, seed, exports, data_root=data_root, device=device,
                           precision=precision, threads=threads, num_workers=num_workers)


def rows_of(runs: Mapping) -> list[dict]:
    """The tidy table rows of a set of finetune / segment runs."""
    return [row for r in runs.values() for row in r["rows"]]


def runs_of_table(table: str, profile: str) -> dict[tuple[str, int], dict]:
    """(method, seed) -> run result, for the rows of a saved table (the report draws its figures from them)."""
    df = tables.load_table(table, profile)
    runs = {}
    for row in df.itertuples():
        result = load_result(paths.runs_dir(profile) / str(row.run_id))
        if result is not None:
            runs[(row.method, int(row.seed))] = result
    return runs


def label_colours(k: int) -> ListedColormap:
    """k distinct colours for label maps: tab20, tab20b, tab20c (60), then golden-angle hues, so that no two of
    ADE20K's 150 classes share a colour (the examples' legend names one class per colour); mini ADE has 11."""
    colours = np.concatenate([plt.get_cmap(name).colors for name in ("tab20", "tab20b", "tab20c")])
    extra = np.arange(max(max(k, 2) - len(colours), 0))
    hsv = np.stack([(extra * 0.6180339887) % 1, 0.95 - 0.3 * (extra % 3) / 2, 0.95 - 0.3 * ((extra // 3) % 2)], 1)
    return ListedColormap(np.concatenate([colours, hsv_to_rgb(hsv).reshape(-1, 3)])[:max(k, 2)])


def figure_segmentation_examples(runs: Mapping[tuple[str, int], dict], classnames: Iterable[str] | None = None):
    """Validation images: ground truth and each method's prediction (first seed), and a legend of the colours of
    the classes they show; None without examples. `classnames` (index = label after reduce_zero_label): None reads
    what the ADE20K reader reads for the run's data root (its config.json): objectInfo150.txt, else ADE20K's 150
    names; a class without a name (synthetic data, a data root no longer there) is "class k"."""
    first_seed = min(s for _, s in runs)
    first = [r for (_, s), r in runs.items() if s == first_seed and r.get("examples")]
    shown = [torch.load(r["examples"], weights_only=False) for r in first]
    if not shown:
        return None
    k = first[0]["num_classes"]
    cmap = label_colours(k)
    names = list(classnames) if classnames is not None else []
    if classnames is None:
        try:
            data = json.loads((Path(first[0]["examples"]).parent / "config.json").read_text())["cfg"]["data"]
            base = ade_root(data["root"]) if data.get("kind") == "ade20k" and data.get("root") else None
            if base is not None and base.is_dir():
                info = base / "objectInfo150.txt"
                names = read_object_info(info) if info.is_file() else list(ADE20K_CLASSES)
        except (OSError, ValueError, KeyError, TypeError, DatasetError):
            names = []
    mean_t, std_t = torch.tensor(shown[0]["mean"]).view(3, 1, 1), torch.tensor(shown[0]["std"]).view(3, 1, 1)
    n = len(shown[0]["examples"])
    fig, axes = plt.subplots(n, 2 + len(shown), figsize=(2.2 * (2 + len(shown)), 2.2 * n), squeeze=False)
    for i in range(n):
        ex0 = shown[0]["examples"][i]
        img = (ex0["image"] * std_t + mean_t).clamp(0, 1)
        img = torch.nn.functional.interpolate(img[None], size=tuple(ex0["label"].shape), mode="bilinear")[0]
        img = img.permute(1, 2, 0).numpy()
        label = ex0["label"].numpy().astype(float)
        label[label == 255] = np.nan
        axes[i, 0].imshow(img)
        axes[i, 1].imshow(img)
        axes[i, 1].imshow(label, cmap=cmap, vmin=0, vmax=max(k, 2) - 1, alpha=0.6, interpolation="nearest")
        for j, (r, s) in enumerate(zip(first, shown)):
            axes[i, 2 + j].imshow(img)
            axes[i, 2 + j].imshow(s["examples"][i]["pred"].numpy(), cmap=cmap, vmin=0, vmax=max(k, 2) - 1, alpha=0.6,
                                  interpolation="nearest")
            if i == 0:
                axes[i, 2 + j].set_title(r["rows"][0]["method"], fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    axes[0, 1].set_title("ground truth", fontsize=9)
    for a in axes.flat:
        a.axis("off")
    # the legend: every class in the shown ground truths (IGNORE_INDEX: not drawn) and predictions, in label order
    maps = [shown[0]["examples"][i]["label"] for i in range(n)] + [s["examples"][i]["pred"] for s in shown
                                                                     for i in range(n)]
    present = sorted({int(c) for m in maps for c in np.unique(m.numpy())} - {IGNORE_INDEX})
    handles = [Patch(facecolor=cmap.colors[c % len(cmap.colors)], edgecolor="0.3", lw=0.5,
                     label=names[c] if c < len(names) else f"class {c}") for c in present]
    ncol = max(1, min(len(handles), int(fig.get_figwidth() / 1.5)))
    legend_h = 0.22 * (1 + -(-len(handles) // ncol)) + 0.1  # inches: the title, a row per ncol classes, a margin
    grid_h = fig.get_figheight()
    fig.set_figheight(grid_h + legend_h)
    fig.tight_layout(rect=(0, legend_h / (grid_h + legend_h), 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False, handlelength=1.2,
               columnspacing=1.2, title="class colours (overlay at 60 % opacity)", title_fontsize=8)
    return fig
