"""Tidy result tables, written atomically, and the papers' reference numbers beside them.

One row per measured number: table, method, dataset, split, seed, metric, value (+ profile, run_id).
"""
from __future__ import annotations

import io
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable, Mapping

import pandas as pd

from ..utils.io import atomic_write
from . import paths

COLUMNS = ["table", "method", "dataset", "split", "seed", "metric", "value", "profile", "run_id"]
REFERENCE_COLUMNS = ["table", "method", "dataset", "split", "seed", "metric", "value", "source"]
KEYS = ["method", "dataset", "split", "metric"]


@dataclass(frozen=True)
class Table:
    title: str
    notebook: str          # the notebook that measures it
    paper: bool = True     # False: a workbook-only table (the mini CLIP's zero-shot check)


# The one registry of tables: the runner's --only, the report's sections and titles read it.
TABLES: dict[str, Table] = {
    "mini_clip_zeroshot": Table("Mini CLIP zero-shot accuracy (mini world only)", "01_mini_world", paper=False),
    "imagenet_finetune": Table("MVP: ImageNet-1K fine-tuning top-1", "11_imagenet_finetune"),
    "ade20k_segmentation": Table("MVP: ADE20K semantic segmentation mIoU", "12_ade20k_segmentation"),
    "cocoop_base2new": Table("CoCoOp Table 1: base-to-new generalisation", "20_cocoop_base2new"),
    "cocoop_cross_dataset": Table("CoCoOp Table 2: cross-dataset transfer", "21_cocoop_cross_dataset"),
    "cocoop_domain_generalization": Table("CoCoOp Table 3: domain generalisation", "22_cocoop_domain_generalization"),
}
PAPER_TABLES = tuple(name for name, t in TABLES.items() if t.paper)


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
    seed = pd.to_numeric(df["seed"], errors="coerce")
    if ((seed % 1).fillna(0) != 0).any():
        raise ValueError(f"seeds must be whole numbers, got {sorted(set(df['seed'].dropna()))}")
    df["seed"] = seed.astype("Int64")  # written as 1, not 1.0 (derived rows keep an empty seed)
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


def ours_summary(table: str, profile: str) -> pd.DataFrame:
    """Our rows averaged over seeds: one row per (method, dataset, split, metric)."""
    df = load_table(table, profile)
    if df.empty:
        return pd.DataFrame(columns=KEYS + ["ours", "ours_std", "seeds"])
    g = df.groupby(KEYS, sort=False)["value"]
    return pd.DataFrame({"ours": g.mean(), "ours_std": g.std(ddof=0), "seeds": g.count()}).reset_index()


def compare(table: str, profile: str) -> pd.DataFrame:
    """Ours (mean over seeds) beside the paper's number for every row either side has."""
    ours = ours_summary(table, profile)
    try:
        ref = load_reference(table)[KEYS + ["value", "source"]].rename(columns={"value": "paper"})
    except FileNotFoundError:
        ref = pd.DataFrame(columns=KEYS + ["paper", "source"])
    merged = ours.merge(ref, on=KEYS, how="outer") if len(ours) else ref.assign(ours=float("nan"), ours_std=float("nan"), seeds=0)
    merged["seeds"] = merged["seeds"].fillna(0).astype(int)
    return merged[KEYS + ["ours", "ours_std", "seeds", "paper", "source"]]
