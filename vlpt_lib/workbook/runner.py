"""`python -m vlpt_lib reproduce`: run every notebook with papermill, in dependency order.

Each notebook runs with params/<profile>/<name>.yaml (plus `profile`), its executed copy lands in
results/<profile>/notebooks/, and a finished run is skipped next time unless its parameters or its
source changed (or --force). The report is rendered at the end, also after a failure.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import papermill as pm
from tqdm.auto import tqdm

from ..utils.io import atomic_write
from ..utils.lock import exclusive
from . import cocoop, mvp, paths
from . import params as notebook_params
from .report import render_report
from .tables import TABLES

# name -> notebooks it needs first. The list order is a valid run order.
PIPELINE: dict[str, list[str]] = {
    "00_setup": [],
    "01_mini_world": [],
    "10_mvp_pretrain": ["01_mini_world"],
    "11_imagenet_finetune": ["10_mvp_pretrain"],
    "12_ade20k_segmentation": ["10_mvp_pretrain"],
    "20_cocoop_base2new": ["01_mini_world"],
    "21_cocoop_cross_dataset": ["01_mini_world"],
    "22_cocoop_domain_generalization": ["01_mini_world"],
    "99_report": [],
}
ALWAYS_RUN = {"99_report"}
SETUP = "00_setup"
PARAM_CHECKS = {**mvp.PARAM_CHECKS, **cocoop.PARAM_CHECKS}  # job-config diffs in the notebooks' parameters
class NotebookFailed(RuntimeError):
    pass


@dataclass
class Outcome:
    name: str
    status: str  # "ran", "cached", "failed", "skipped"
    seconds: float = 0.0
    message: str = ""


def notebooks_dir() -> Path:
    return paths.REPO_ROOT / "notebooks"


def params_dir() -> Path:
    return paths.REPO_ROOT / "params"


def available(nb_dir: Path | None = None) -> list[str]:
    """Notebooks that exist, in run order (unknown extra notebooks run before the report)."""
    nb_dir = nb_dir or notebooks_dir()
    present = sorted(p.stem for p in nb_dir.glob("*.ipynb"))
    ordered = [n for n in PIPELINE if n in present]
    extra = [n for n in present if n not in PIPELINE]
    return [n for n in ordered if n != "99_report"] + extra + (["99_report"] if "99_report" in present else [])


def resolve(names: list[str], present: list[str]) -> list[str]:
    """Map --only arguments (notebook names, with or without the number, or table names) to notebooks."""
    chosen = []
    for name in names:
        table = TABLES.get(name)
        matches = [n for n in present if name in (n, n.split("_", 1)[1]) or (table and table.notebook == n)]
        if not matches:
            raise SystemExit(f"--only {name}: no such notebook or table; notebooks: {', '.join(present)}")
        chosen += matches
    # Dependencies come along (cached ones cost nothing), then the report.
    needed: list[str] = []

    def add(n: str) -> None:
        for dep in PIPELINE.get(n, []):
            if dep in present:
                add(dep)
        if n not in needed:
            needed.append(n)

    if SETUP in present:  # the data/weights check comes first, whatever is selected (it stops a paper run early)
        add(SETUP)
    for n in chosen:
        add(n)
    if "99_report" in present and "99_report" not in needed:
        needed.append("99_report")
    return [n for n in present if n in needed]


def load_params(name: str, profile: str, p_dir: Path | None = None, nb_dir: Path | None = None) -> dict:
    """params/<profile>/<name>.yaml checked against the notebook's parameters cell (ParamsError if not)."""
    return notebook_params.load(name, profile, p_dir or params_dir(), nb_dir or notebooks_dir(), PARAM_CHECKS)


def run_key(nb_path: Path, params: dict) -> str:
    """Changes when the parameters or any cell's source changes (outputs are not part of it)."""
    nb = nbformat.read(nb_path, as_version=4)
    sources = [c.source for c in nb.cells]
    text = json.dumps({"params": params, "sources": sources}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def rerun_command(name: str, profile: str) -> str:
    return f"python -m vlpt_lib reproduce --profile {profile} --only {name} --force"


def checked_tables(todo: list[str]) -> list[str]:
    """What 00_setup checks when only some notebooks run: their tables (and pre-training's data for 11/12)."""
    names = [name for name, table in TABLES.items() if table.notebook in todo]
    return names + (["mvp pre-training"] if "10_mvp_pretrain" in todo else [])


def run_notebook(name: str, profile: str, *, force: bool = False, nb_dir: Path | None = None,
                 p_dir: Path | None = None, overrides: dict | None = None) -> Outcome:
    src = (nb_dir or notebooks_dir()) / f"{name}.ipynb"
    out_dir = paths.executed_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    out, record = out_dir / f"{name}.ipynb", out_dir / f"{name}.run.json"
    params = {**load_params(name, profile, p_dir, nb_dir), **(overrides or {})}
    key = run_key(src, params)
    if not force and name not in ALWAYS_RUN and out.exists() and record.exists():
        prev = json.loads(record.read_text())
        if prev.get("key") == key and prev.get("status") == "ok":
            return Outcome(name, "cached", prev.get("seconds", 0.0))
    start = time.time()
    status, message = "ok", ""
    try:
        pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3",
                            cwd=str(src.parent), progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as err:
        status = "failed"
        first_line = (err.source or "").strip().splitlines()[:1]
        message = (f"notebook {name} failed in cell {err.cell_index} "
                   f"({first_line[0] if first_line else 'empty'}): {err.ename}: {err.evalue}\n"
                   f"  executed copy with the traceback: {out}\n"
                   f"  re-run it with: {rerun_command(name, profile)}")
    seconds = round(time.time() - start, 1)
    atomic_write(record, json.dumps({"key": key, "status": status, "seconds": seconds, "params": params,
                                     "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2, default=str))
    return Outcome(name, "ran" if status == "ok" else "failed", seconds, message)


def reproduce(profile: str, only: list[str] | None = None, force: bool = False,
              nb_dir: Path | None = None, p_dir: Path | None = None, render: bool = True) -> list[Outcome]:
    os.environ.setdefault("MPLBACKEND", "agg")
    present = available(nb_dir)
    todo = resolve(only, present) if only else present
    for name in todo:  # every parameter file is checked before the first notebook runs
        load_params(name, profile, p_dir, nb_dir)
    # One writer per results folder: a second `reproduce` of the same profile is refused, not interleaved.
    with exclusive(paths.results_dir(profile) / ".reproduce.lock", f"results/{profile}"):
        return _reproduce_locked(profile, todo, force, nb_dir, p_dir, render, selective=bool(only))


def _reproduce_locked(profile: str, todo: list[str], force: bool, nb_dir: Path | None, p_dir: Path | None,
                      render: bool, selective: bool) -> list[Outcome]:
    # With --only, 00_setup checks the data of the selected tables only (all of it otherwise).
    setup_overrides = {"tables": checked_tables(todo)} if selective else None
    outcomes: list[Outcome] = []
    failed: Outcome | None = None
    with tqdm(todo, desc=f"reproduce [{profile}]", unit="notebook", dynamic_ncols=True) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            if failed is not None:
                outcomes.append(Outcome(name, "skipped", message=f"not run: {failed.name} failed"))
                continue
            outcome = run_notebook(name, profile, force=force, nb_dir=nb_dir, p_dir=p_dir,
                                   overrides=setup_overrides if name == SETUP else None)
            outcomes.append(outcome)
            bar.write(f"  {name}: {outcome.status} ({outcome.seconds:.0f} s)")
            if outcome.status == "failed":
                failed = outcome
    if render:
        index = render_report(profile)
        print(f"report: {index}")
    if failed is not None:
        raise NotebookFailed(failed.message)
    return outcomes
