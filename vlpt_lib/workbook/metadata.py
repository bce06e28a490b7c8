"""results/<profile>/run_metadata.json: what produced the numbers, so each one can be traced.

Git commit (and whether the tree had uncommitted changes), package versions, the device and its name, the
seeds of every table, wall time per notebook (notebooks/*.run.json) and per job (runs/*/result.json
`wall_s`, with the tables that use it), the profile and the caps of a dry run, and per table the recipe card of
the job runs that produced it (`recipes`: every resolved value beside the paper's, deviations marked). `reproduce`
writes it after the notebooks; the report reads it for its footer and recipe cards (and writes one, without run
outcomes, where none exists).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Iterable

import torch

from ..utils.io import atomic_write
from . import paths
from .recipe import WORKBOOK, _rows, paper_card
from .tables import TABLES, load_table

PACKAGES = {"torch": "torch", "timm": "timm", "open_clip": "open_clip_torch", "numpy": "numpy"}
KEYS = ("profile", "written", "git", "packages", "device", "seeds", "notebooks", "jobs", "recipes", "caps",
        "outcomes")
# The jobs with a paper recipe (their Config's defaults) and the cfg key that names a recipe card's column
CARD_LABEL = {"pretrain": "target", "finetune": "method", "segment": "method", "prompt": "method"}


def metadata_path(profile: str) -> Path:
    return paths.results_dir(profile) / "run_metadata.json"


def git_state(repo: Path = paths.REPO_ROOT) -> dict:
    """{"commit", "dirty"}: dirty = uncommitted changes outside results/; both None outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # results/ is what a run writes (its tables and figures are committed): only the code counts as dirty
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": commit.strip() if commit else None, "dirty": bool(status.strip()) if status is not None else None}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for label, dist in PACKAGES.items():
        try:
            out[label] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[label] = None
    return out


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_info() -> dict:
    """The accelerator the jobs would pick ("auto"): CUDA card name(s), else the CPU's model name."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return {"type": "cuda", "name": names[0], "count": len(names), "cpus": os.cpu_count()}
    return {"type": "cpu", "name": _cpu_name(), "count": 1, "cpus": os.cpu_count()}


def seeds_per_table(profile: str) -> dict:
    """{table: {method: [seeds]}} from the saved tables (derived rows without a seed left out)."""
    out = {}
    for name in TABLES:
        df = load_table(name, profile).dropna(subset=["seed"])
        if len(df):
            out[name] = {m: sorted(int(s) for s in g["seed"].unique()) for m, g in df.groupby("method", sort=False)}
    return out


def notebook_times(profile: str) -> dict:
    """{notebook: {status, seconds, finished}} from results/<profile>/notebooks/*.run.json."""
    out = {}
    for record in sorted(paths.executed_dir(profile).glob("*.run.json")):
        r = json.loads(record.read_text())
        out[record.name[:-len(".run.json")]] = {k: r.get(k) for k in ("status", "seconds", "finished")}
    return out


def job_times(profile: str) -> dict:
    """{run id: {wall_s, tables}}: every job run of the profile and the tables whose rows it wrote."""
    used: dict[str, list[str]] = {}
    for name in TABLES:
        for run_id in load_table(name, profile)["run_id"].dropna().unique():
            used.setdefault(str(run_id), []).append(name)
    out = {}
    for result in sorted(paths.runs_dir(profile).glob("*/result.json")):
        try:
            wall = json.loads(result.read_text()).get("wall_s")
        except json.JSONDecodeError:  # a run being written: reported without its time
            wall = None
        out[result.parent.name] = {"wall_s": wall, "tables": used.get(result.parent.name, [])}
    return out


def _config_class(job: str):
    from importlib import import_module
    return import_module(f"vlpt_lib.jobs.{job}").Config


def table_runs(name: str, profile: str) -> list[dict]:
    """The config.json ({"job", "cfg", ...}) of every job run that table `name`'s notebook and the notebooks it
    needs (Table.upstream: notebook 10's pre-training for the MVP tables) recorded in their last run, in order."""
    spec = TABLES[name]
    out, seen = [], set()
    for notebook in (*spec.upstream, spec.notebook):
        try:
            record = json.loads((paths.executed_dir(profile) / f"{notebook}.run.json").read_text())
        except (OSError, ValueError):
            continue
        for run in record.get("runs", []):
            run_dir = paths.runs_dir(profile) / Path(run["run_dir"]).name  # the results folder may have moved
            if run_dir.name in seen:
                continue
            seen.add(run_dir.name)
            try:
                out.append(json.loads((run_dir / "config.json").read_text()))
            except (OSError, ValueError):
                continue  # a run folder removed since: nothing to show
    return out


def _recipe_key(config) -> str:
    """What a run learns with: its values less the workbook parameters (data, seed, ...) and how-to-run settings."""
    return json.dumps([(k, v) for k, v, src in _rows(config) if not src.startswith((WORKBOOK, "[env]"))],
                      default=str)


def job_cards(runs: Iterable[dict]) -> dict[str, list[dict]]:
    """{job: recipe card records} of job runs (config.json dicts): one column per label (CARD_LABEL: the MIM
    target, the method), the config of its first seed; a label whose runs differ in their recipe (CoOp's 50
    ImageNet epochs) gets one column per recipe, "<label> (<first dataset> +n)". Jobs without a paper recipe
    (the mini CLIP's clip_train) and runs whose cfg no longer validates are left out (a job whose paper recipe
    does not resolve too, with a warning)."""
    groups: dict[str, dict[str, dict[str, list]]] = {}  # job -> label -> recipe key -> [(seed, config, dataset)]
    for run in runs:
        job = run.get("job")
        if job not in CARD_LABEL:
            continue
        try:
            config = _config_class(job).model_validate(run["cfg"])
        except (ValueError, KeyError, TypeError):
            continue
        label = str(getattr(config, CARD_LABEL[job]))
        groups.setdefault(job, {}).setdefault(label, {}).setdefault(_recipe_key(config), []).append(
            (getattr(config, "seed", 0), config, getattr(config, "dataset", None)))
    out = {}
    for job, labels in groups.items():
        columns = {}
        for label, recipes in labels.items():
            for i, members in enumerate(recipes.values()):
                datasets = list(dict.fromkeys(d for _, _, d in members if d is not None))
                more = f" +{len(datasets) - 1}" if len(datasets) > 1 else ""
                column = (label if len(recipes) == 1 else f"{label} ({datasets[0]}{more})" if datasets
                          else f"{label} ({i + 1})")
                columns[column] = min(members, key=lambda m: m[0])[1]  # the first seed's config
        try:
            out[job] = card_records(paper_card(columns))
        except (ValueError, TypeError) as err:  # a card must not cost the run its metadata
            logging.getLogger(__name__).warning("no recipe card of the %s runs: %s", job, err)
    return out


def card_records(card) -> list[dict]:
    """A paper_card frame as JSON records: {key, values: {label: value}, paper, deviates, source}."""
    labels = [c for c in card.columns if c not in ("paper", "deviates", "source")]
    return [{"key": key, "values": {label: row[label] for label in labels}, "paper": row["paper"],
             "deviates": row["deviates"], "source": row["source"]} for key, row in card.iterrows()]


def recipe_cards(profile: str) -> dict:
    """{table: {job: recipe card records}} of every table whose notebooks recorded job runs with a paper recipe."""
    out = {}
    for name in TABLES:
        cards = job_cards(table_runs(name, profile))
        if cards:
            out[name] = cards
    return out


def run_metadata(profile: str, outcomes: Iterable | None = None, caps: dict | None = None) -> dict:
    """The metadata of the profile's results as they are now; `outcomes`: the runner's Outcome list."""
    return {
        "profile": profile,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "git": git_state(),
        "packages": package_versions(),
        "device": device_info(),
        "seeds": seeds_per_table(profile),
        "notebooks": notebook_times(profile),
        "jobs": job_times(profile),
        "recipes": recipe_cards(profile),
        "caps": caps,
        "outcomes": [{"name": o.name, "status": o.status, "seconds": o.seconds} for o in outcomes or []],
    }


def write_run_metadata(profile: str, outcomes: Iterable | None = None, caps: dict | None = None) -> Path:
    """Write results/<profile>/run_metadata.json (atomic) and return its path."""
    data = run_metadata(profile, outcomes, caps)
    return atomic_write(metadata_path(profile), json.dumps(data, indent=2, default=str))


def load_run_metadata(profile: str) -> dict | None:
    path = metadata_path(profile)
    return json.loads(path.read_text()) if path.exists() else None
