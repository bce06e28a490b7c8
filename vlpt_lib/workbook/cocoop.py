"""Glue of the CoCoOp notebooks (20-22): notebook parameters -> `prompt` job cfgs and the runs of Tables
1-3. The runs' per-seed rows are the table (tables.save_table); its averages and H are computed from them by
`workbook.derived`, its paper-shaped view is `tables.paper_table`, its figure in `workbook.plots`.

    world = profiles.resolve(profile, data_root, clip_model, clip_pretrained, clip_quick_gelu)  # names paths only
    params = job_params(world, recipe, test_batch_size=100, threads=1, ...)
    recipe_card(params, methods, datasets, seeds)   # every recipe value of the runs + its source (no training)
    rows = base2new_runs(params, methods, datasets, seeds, paths.runs_dir(profile))
    tables.save_table("cocoop_base2new", rows, profile)

`recipe` (a notebook parameter) is a diff on each method's Recipe (vlpt_lib.methods.prompt, validated by
`vlpt_lib.jobs.prompt.Config`): {"common": {...}, "CoOp": {...}, "CoCoOp": {...}, ...}, one block per
registered method; a method block may hold `epochs_by_dataset` ({dataset: epochs}). `{}` = the papers'
recipes (each method's defaults).

A dataset whose split was drawn from its folders (the job's `allow_folder_split`, for your own data)
comes back as "<Name> (folder split)": it stays beside its name in the tables and never meets the
paper's number.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
from pydantic import ValidationError

from ..data.coop import base_label
from ..jobs.launch import run_dir_for, run_jobs
from ..jobs.prompt import Config
from ..methods import prompt as methods
from ..methods.prompt.base import PromptRun
from ..utils.fields import refusal
from . import recipe as recipes

# Notebook knobs passed to every run (how it runs, not what it learns).
RUN_KEYS = ("test_batch_size", "precision", "device", "num_workers", "threads", "text_chunk")
CLIP_KEYS = ("test_batch_size", "max_test_images")  # the recipe keys a zero-shot CLIP run takes


# ----------------------------------------------------------------------------- notebook params -> job cfgs
def job_params(world, recipe: dict, **run) -> dict:
    """What job_cfg needs from a notebook: the resolved data root + CLIP (profiles.resolve), the recipe
    diff and the run knobs (RUN_KEYS; None = the job's default)."""
    unknown = set(run) - set(RUN_KEYS)
    if unknown:
        raise ValueError(f"unknown run settings {sorted(unknown)}; expected some of {RUN_KEYS}")
    return {"data_root": str(world.data_root), "clip": dict(world.clip), "recipe": recipe or {}, **run}


def method_recipe(recipe: dict, method: str, dataset: str | None = None) -> dict:
    """The Config diff of one method: recipe["common"] with recipe[method] on top (+ its epochs_by_dataset)."""
    recipe = recipe or {}
    out = {**(recipe.get("common") or {}), **(recipe.get(method) or {})}
    by_dataset = out.pop("epochs_by_dataset", None) or {}
    if dataset in by_dataset:
        out["epochs"] = by_dataset[dataset]
    return out


def job_cfg(params: dict, method: str, dataset: str, seed: int, subsample: str = "base",
            eval: list | None = None, load_from: str | None = None) -> dict:
    """The cfg (a diff on the method's Recipe) of one run. A zero-shot method trains nothing: of the "common"
    block it takes CLIP_KEYS only (how it is tested: the dry run caps its test images), and its own block."""
    recipe = method_recipe(params.get("recipe"), method, dataset)
    cfg = {"method": method, "dataset": dataset, "subsample": subsample, "seed": int(seed)}
    if params.get("data_root") is not None:
        cfg["data_root"] = str(params["data_root"])
    if params.get("clip"):
        cfg["clip"] = dict(params["clip"])
    if methods.get(method).trains:
        cfg.update(recipe)
    else:
        common = (params.get("recipe") or {}).get("common") or {}
        cfg.update({k: common[k] for k in CLIP_KEYS if k in common})
        cfg.update((params.get("recipe") or {}).get(method) or {})
    cfg.update({k: params[k] for k in RUN_KEYS if params.get(k) is not None})
    if eval is not None:
        cfg["eval"] = eval
    if load_from is not None:
        cfg["load_from"] = str(load_from)
    return cfg


def check_recipe(recipe) -> None:
    """PARAM_CHECKS["recipe"]: raise ValueError naming the bad block/key when the diff does not validate."""
    blocks = ("common",) + methods.names()
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe must be a mapping of {blocks} to diffs on each method's Recipe "
                         f"(vlpt_lib.methods.prompt), got {recipe!r}")
    for block, diff in recipe.items():
        if block not in blocks:
            raise ValueError(f"unknown recipe block {block!r}; expected some of {blocks}")
        if not isinstance(diff, dict):
            raise ValueError(f"recipe[{block!r}] must be a mapping, got {diff!r}")
        by_dataset = diff.get("epochs_by_dataset") or {}
        if not isinstance(by_dataset, dict) or not all(type(v) is int and v >= 1 for v in by_dataset.values()):
            raise ValueError(f"recipe[{block!r}]['epochs_by_dataset'] must map dataset names to epochs (integers "
                             f">= 1), got {by_dataset!r}")
    # "common" must fit every built-in trained method; each method's block, its own Recipe (a plug-in's
    # narrower Recipe is checked when the recipe has a block for it)
    built_in = [m for m in methods.names() if methods.get(m).trains and not methods.input_paths(m)]
    for method in dict.fromkeys(built_in + [b for b in recipe if b != "common"]):
        cfg = job_cfg({"data_root": ".", "recipe": recipe}, method, "Caltech101", 1)
        cfg.pop("epochs_by_dataset", None)
        try:
            Config.model_validate(cfg)
        except ValidationError as err:
            e = err.errors()[0]
            key = str(e["loc"][0]) if e["loc"] else "?"
            block = method if key in (recipe.get(method) or {}) else "common"
            what = ("is not a key of" if e["type"] == "extra_forbidden"
                    else f"= {e['input']!r} is not allowed ({refusal(e)}) by")
            raise ValueError(f"recipe[{block!r}][{key!r}] {what} {method}'s Recipe "
                             f"({methods.get(method).__module__}.Recipe)") from None


PARAM_CHECKS: dict[str, Callable] = {"recipe": check_recipe}

# The datasets each CoCoOp notebook reads with its parameters (00_setup's strict check requires these only):
# Table 1 its `datasets`, Table 2 the source and its `targets`, Table 3 the source and its `variants`.
DATA_NEEDS: dict[str, Callable[[dict], list[str]]] = {
    "20_cocoop_base2new": lambda params: list(params.get("datasets") or []),
    "21_cocoop_cross_dataset": lambda params: [params.get("source"), *(params.get("targets") or [])],
    "22_cocoop_domain_generalization": lambda params: [params.get("source"), *(params.get("variants") or [])],
}


def recipe_configs(params: dict, names: Sequence[str], datasets: Sequence[str], seeds: Sequence[int],
                   subsample: str = "base") -> dict[str, PromptRun]:
    """The resolved job Configs of the trained methods' runs, one per distinct recipe (nothing runs).

    Label: the method, or "<method> (<dataset> [+n])" when the recipe differs between datasets (CoOp's
    50 ImageNet epochs); `dataset` lists the datasets of the column. Zero-shot CLIP trains nothing and has
    no recipe."""
    out: dict[str, PromptRun] = {}
    for method in names:
        if not methods.get(method).trains:
            continue
        groups: dict[str, tuple[list[str], PromptRun]] = {}
        for dataset in datasets:
            cfg = Config.model_validate(job_cfg(params, method, dataset, seeds[0] if seeds else 1, subsample))
            key = cfg.model_copy(update={"dataset": ""}).model_dump_json()
            groups.setdefault(key, ([], cfg))[0].append(dataset)
        for covered, cfg in groups.values():
            more = f" +{len(covered) - 1}" if len(covered) > 1 else ""
            label = method if len(groups) == 1 else f"{method} ({covered[0]}{more})"
            out[label] = cfg.model_copy(update={"dataset": ", ".join(covered)})  # the datasets this column covers
    return out


def recipe_card(params: dict, names: Sequence[str], datasets: Sequence[str], seeds: Sequence[int],
                subsample: str = "base", env: bool = False) -> pd.DataFrame:
    """Every recipe value the runs use (one column per method / recipe) beside the paper's value and its public
    source, in the card format every table shares (recipe.paper_card)."""
    configs = recipe_configs(params, names, datasets, seeds, subsample)
    if not configs:
        return pd.DataFrame(columns=["source"])
    return recipes.paper_card(configs, env=env)


# ----------------------------------------------------------------------------- the runs of Tables 1-3
def base2new_cfgs(params: dict, names: Sequence[str], datasets: Sequence[str], seeds: Sequence[int]) -> list[dict]:
    """Table 1's prompt job cfgs: one per (method, dataset, seed) trained on the base half (CLIP: one seed)."""
    return [job_cfg(params, method, dataset, seed, "base") for dataset in datasets for method in names
            for seed in (seeds if methods.get(method).trains else seeds[:1])]


def base2new_runs(params: dict, names: Sequence[str], datasets: Sequence[str], seeds: Sequence[int], runs_dir,
                  **launch) -> list[dict]:
    """Table 1: one job per (method, dataset, seed) trained on the base half, tested on base and new.
    Zero-shot CLIP needs one seed. Finished runs come from the run cache. `launch`: run_jobs' options."""
    cfgs = base2new_cfgs(params, names, datasets, seeds)
    return [row for result in run_jobs([("prompt", cfg) for cfg in cfgs], runs_dir, **launch)
            for row in result["rows"]]


def transfer_cfgs(params: dict, names: Sequence[str], source: str, targets: Sequence[str],
                  seeds: Sequence[int]) -> list[dict]:
    """Tables 2 and 3's first-stage cfgs: each method (CLIP: one seed) trained on all classes of `source` (CLIP:
    evaluated on source + targets), in the order of (method, seed)."""
    evals = [{"dataset": n, "subsample": "all", "split": "test"} for n in targets if n != source]
    cfgs = []
    for method in names:
        for seed in (seeds if methods.get(method).trains else seeds[:1]):
            if methods.get(method).trains:
                cfgs.append(job_cfg(params, method, source, seed, "all"))
            else:
                cfgs.append(job_cfg(params, method, source, seed, "all",
                                    eval=[{"dataset": source, "subsample": "all", "split": "test"}] + evals))
    return cfgs


def transfer_runs(params: dict, names: Sequence[str], source: str, targets: Sequence[str], seeds: Sequence[int],
                  runs_dir, **launch) -> list[dict]:
    """Tables 2 and 3: every method (CLIP: one seed) trained on all classes of `source`, tested on source +
    targets.

    Tables 2 and 3 share the source-trained runs through the run cache. A training run already tests on
    the source, so its evaluation-only run (a second stage: it loads the trained prompts) covers the targets
    alone; zero-shot CLIP is one evaluation run of source + targets."""
    evals = [{"dataset": n, "subsample": "all", "split": "test"} for n in targets if n != source]
    runs = [(method, seed) for method in names for seed in (seeds if methods.get(method).trains else seeds[:1])]
    first = transfer_cfgs(params, names, source, targets, seeds)
    trained = run_jobs([("prompt", cfg) for cfg in first], runs_dir, **launch)
    second = {i: job_cfg(params, method, source, seed, "all", eval=evals,
                         load_from=run_dir_for("prompt", first[i], runs_dir))
              for i, (method, seed) in enumerate(runs) if methods.get(method).trains}
    evaluated = dict(zip(second, run_jobs([("prompt", cfg) for cfg in second.values()], runs_dir, **launch)))
    rows = [row for i, result in enumerate(trained)
            for row in result["rows"] + (evaluated[i]["rows"] if i in evaluated else [])]
    keep = {source, *targets}
    return [r for r in rows if base_label(r["dataset"]) in keep]
