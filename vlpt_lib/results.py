"""Tidy result tables, written atomically, and the papers' reference numbers beside them.

One row per measured number: table, method, dataset, split, seed, metric, value (+ profile, run_id).
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from . import paths

COLUMNS = ["table", "method", "dataset", "split", "seed", "metric", "value", "profile", "run_id"]
REFERENCE_COLUMNS = ["table", "method", "dataset", "split", "seed", "metric", "value", "source"]
TABLES = (
    "cocoop_base2new",
    "cocoop_cross_dataset",
    "cocoop_domain_generalization",
    "imagenet_finetune",
    "ade20k_segmentation",
)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def tables_dir(profile: str) -> Path:
    return paths.results_dir(profile) / "tables"


def figures_dir(profile: str) -> Path:
    return paths.results_dir(profile) / "figures"


def to_frame(rows: Iterable[Mapping], profile: str | None = None, table: str | None = None) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if table is not None:
        df["table"] = table
    if profile is not None:
        df["profile"] = profile
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    missing = df["value"].isna() | df["metric"].isna() | df["method"].isna()
    if missing.any():
        raise ValueError(f"rows without method/metric/value:\n{df[missing].head()}")
    return df[COLUMNS]


def save_table(table: str, rows: Iterable[Mapping], profile: str) -> Path:
    """Write results/<profile>/tables/<table>.csv (the whole table, replacing an older one)."""
    df = to_frame(rows, profile=profile, table=table)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return atomic_write(tables_dir(profile) / f"{table}.csv", buf.getvalue())


def load_table(table: str, profile: str) -> pd.DataFrame:
    path = tables_dir(profile) / f"{table}.csv"
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path)


def load_reference(table: str) -> pd.DataFrame:
    """The papers' numbers for one table (results/reference/<table>.csv), each row with its source."""
    path = paths.reference_dir() / f"{table}.csv"
    if not path.exists():
        raise FileNotFoundError(f"no reference numbers for table {table!r} at {path}")
    return pd.read_csv(path)


def save_figure(fig, name: str, profile: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as results/<profile>/figures/<name>.png (atomic)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    stem = name[:-4] if name.endswith(".png") else name
    return atomic_write(figures_dir(profile) / f"{stem}.png", buf.getvalue())
