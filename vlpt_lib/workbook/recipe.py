"""The recipe card: every value a run uses, beside the public source it comes from.

Generated from the resolved job configs (pydantic models), so it cannot drift from what runs. A
field's source is its `Field(description=...)` in the job's Config: a config file or paper section,
"[A] assumption: why" where the papers leave it open, "[env]" for how-to-run settings, or "[cap]" for
the dry run's caps (shown when set).
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd
from pydantic import BaseModel


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
    a key one config lacks (a method's own field) is empty in its column; a key whose source differs
    between configs names each one.
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
        records.append({"key": key, **{label: _show(vals.get(key)) for label, vals in columns.items()},
                        "source": source})
    return pd.DataFrame(records).set_index("key")


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return "" if value is None else str(value)


def undocumented(config: BaseModel) -> list[str]:
    """Keys of a config that have no source (tests: every recipe value names where it comes from)."""
    return [k for k, _, source in _rows(config) if not source]
