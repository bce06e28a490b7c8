"""The recipe card: every value a run uses, beside the public source it comes from.

Generated from the resolved job configs (pydantic models), so it cannot drift from what runs. A
field's source is its `Field(description=...)` in the job's Config: a config file or paper section,
"[A] assumption: why" where the papers leave it open, "[env]" for how-to-run settings, or "[cap]" for
the dry run's caps (shown when set).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from pydantic import BaseModel

from ..jobs.launch import code_change, job_code, run_dir_for
from ..utils.fingerprint import closure_hash
from .paths import shown


def _rows(model: BaseModel, prefix: str = "") -> list[tuple[str, object, str]]:
    out = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out += _rows(value, key + ".")
        else:
            out.append((key, value, field.description or ""))
    return out


def recipe_card(configs: BaseModel | Mapping[str, BaseModel], *, env: bool = False) -> pd.DataFrame:
    """One row per recipe value: key, the value in each config (one column per name), and its source.

    configs: one resolved Config, or {label: Config} (e.g. {"CoOp": ..., "CoCoOp": ...}) of the same job;
    a value None shows as "None"; a key one config lacks (a method's own field) is empty in its column; a key
    whose source differs between configs names each one.
    env=False leaves out how-to-run settings (sources starting with "[env]")."""
    if isinstance(configs, BaseModel):
        configs = {"value": configs}
    rows = {label: _rows(c) for label, c in configs.items()}
    columns = {label: {k: v for k, v, _ in r} for label, r in rows.items()}
    sources: dict[str, dict[str, str]] = {}  # key -> {source: labels}: methods may cite different files
    for label, r in rows.items():
        for key, _, source in r:
            by = sources.setdefault(key, {})
            by[source] = f"{by[source]}, {label}" if source in by else label
    records = []
    for key, by in sources.items():
        first = next(iter(by))
        if not env and first.startswith("[env]"):
            continue
        if first.startswith("[cap]") and all(vals.get(key) is None for vals in columns.values()):
            continue  # a dry run's cap shows only when it is set
        source = first if len(by) == 1 else "; ".join(f"{labels}: {src}" for src, labels in by.items())
        values = {label: _show(vals[key]) if key in vals else "" for label, vals in columns.items()}
        records.append({"key": key, **values, "source": source})
    return pd.DataFrame(records).set_index("key")


WORKBOOK = "workbook parameter"  # a source naming a value the notebook sets (data, seed, row): no paper value
DEFINES = ("method", "target", "subsample")  # keys naming which paper recipe a column follows: its row, protocol
DEVIATES = "≠ paper"


def _free(key: str, source: str, defines: Iterable[str]) -> bool:
    """A value the paper recipe does not fix: a workbook parameter, or a key that names the column's recipe."""
    return source.startswith(WORKBOOK) or key in defines


def paper_config(config: BaseModel, defines: Iterable[str] = DEFINES) -> BaseModel:
    """The paper recipe of a resolved config: its Config class validated with only the run's workbook parameters
    (data, seed, method, ...) and its `defines` keys (MVP's target, a prompt run's subsample); every other value
    at the class's default, which is the paper's (its Field description names the source). A method's own
    validators apply as they do to a run (CoOp's 50 ImageNet epochs, the transfer protocol's configs)."""
    dump = config.model_dump()
    kept: dict = {}
    for key, _, source in _rows(config):
        if _free(key, source, defines):
            *parents, last = key.split(".")
            value, node = dump, kept
            for part in key.split("."):
                value = value[part]
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
    return type(config).model_validate(kept)


def paper_card(configs: BaseModel | Mapping[str, BaseModel], *, env: bool = False,
               defines: Iterable[str] = DEFINES) -> pd.DataFrame:
    """recipe_card beside the paper recipe: the labels' values, then "paper" (each label's paper_config value;
    "labels: value; ..." where the labels' paper recipes differ; empty where the paper fixes no value: a workbook
    parameter or a `defines` key), "deviates" (DEVIATES where a label's value differs from its paper value,
    "≠ paper: <labels>" when only some labels differ; empty otherwise) and "source"."""
    if isinstance(configs, BaseModel):
        configs = {"value": configs}
    defines = tuple(defines)
    card = recipe_card(configs, env=env)
    rows = {label: {k: (v, src) for k, v, src in _rows(c)} for label, c in configs.items()}
    papers = {label: {k: v for k, v, _ in _rows(paper_config(c, defines))} for label, c in configs.items()}
    paper_col, deviates = [], []
    for key in card.index:
        fixed = [label for label, r in rows.items() if key in r and not _free(key, r[key][1], defines)]
        shown_paper = {label: _show(papers[label][key]) for label in fixed}
        differ = [label for label in fixed if rows[label][key][0] != papers[label][key]]
        by_value: dict[str, list[str]] = {}
        for label, value in shown_paper.items():
            by_value.setdefault(value, []).append(label)
        paper_col.append(next(iter(by_value)) if len(by_value) == 1
                         else "; ".join(f"{', '.join(labels)}: {v}" for v, labels in by_value.items()))
        deviates.append("" if not differ else DEVIATES if len(differ) == len(fixed) or len(configs) == 1
                        else f"{DEVIATES}: {', '.join(differ)}")
    card.insert(len(configs), "paper", paper_col)
    card.insert(len(configs) + 1, "deviates", deviates)
    return card


def styled(card: pd.DataFrame):
    """A recipe card as a notebook shows it: text left-aligned and top-aligned, long sources wrapped in a
    column of their own width (pandas right-aligns and stretches every cell)."""
    return (card.style.set_properties(**{"text-align": "left", "vertical-align": "top", "white-space": "pre-wrap"})
            .set_properties(subset=[c for c in card.columns if c == "source"], **{"min-width": "24em",
                                                                                 "max-width": "40em"})
            .set_table_styles([{"selector": "th", "props": [("text-align", "left"), ("vertical-align", "top")]}]))


def _show(value) -> str:
    if isinstance(value, str) and value.startswith(os.sep):
        return shown(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)  # None as "None": a value the run sets to None (a key a config lacks is empty)


def undocumented(config: BaseModel) -> list[str]:
    """Keys of a config that have no source (tests: every recipe value names where it comes from)."""
    return [k for k, _, source in _rows(config) if not source]


def code_note(runs: Iterable[tuple[str, Mapping]], runs_dir) -> str:
    """One line under a recipe card: whether the cached runs of these (job, cfg) were made by the code that runs
    now, else which were made (or kept, `reproduce --keep-runs`) under older code: commit and modules changed."""
    older, existing = [], 0
    for job, cfg in runs:
        run_dir = run_dir_for(job, dict(cfg), runs_dir)
        try:
            versions = json.loads((run_dir / "config.json").read_text()).get("code_versions", [])
        except (OSError, ValueError):
            continue  # not run yet: it will be made by this code
        existing += 1
        now = closure_hash(job_code(job))
        if all(v.get("code") == now for v in versions) and not code_change(run_dir):
            continue
        first = versions[0] if versions else {}
        commit = (first.get("commit") or "unknown commit")[:10] + (" + uncommitted changes" if first.get("dirty") else "")
        changed = code_change(run_dir)
        state = "finished" if (Path(run_dir) / "result.json").exists() else "interrupted"
        why = f"changed since: {', '.join(changed)}" if changed else "kept under changed code (--keep-runs)"
        older.append(f"{run_dir.name} ({state}; started by {commit}; {why})")
    if not existing:
        return "Code: none of these runs exists yet; each will be made by the code that runs now."
    if not older:
        return "Code: every cached run of this card was made by the code that runs now."
    return (f"Code: {len(older)} run(s) of this card were made by older code: " + "; ".join(older))
