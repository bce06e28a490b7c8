"""Tidy result tables, written atomically, and the papers' reference numbers beside them.

One row per measured number: table, method, dataset, split, seed, metric, value (+ profile, run_id); a CSV
holds nothing else (no averages, no H: `workbook.derived` computes those, for the tables, the claims and the
figures alike). `paper_table(name, profile)` holds a table's numbers as its paper prints them (ours as mean ± std
over seeds, the paper's value, Δ); the report, the notebooks and the figures use that one frame.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import pandas as pd

from ..methods import prompt as prompt_methods
from ..methods import targets as mim_targets
from ..utils.faults import fault_point
from ..utils.io import atomic_write
from . import derived, paths

COLUMNS = ["table", "method", "dataset", "split", "seed", "metric", "value", "profile", "run_id"]
REFERENCE_COLUMNS = ["table", "method", "dataset", "split", "seed", "metric", "value", "source"]
KEYS = ["method", "dataset", "split", "metric"]


@dataclass(frozen=True)
class Claim:
    """A finding of a paper, checked on our numbers (workbook.claims): `left op right`, each side a label the
    table's layout defines (e.g. "CoOp new", "CoCoOp H", "MVP")."""
    text: str   # the paper's finding, in words
    left: str   # a side (see claims.samples)
    op: str     # ">", "<" or ">=" (judged as ">")
    right: str


@dataclass(frozen=True)
class Table:
    """One table: everything the runner, the report, the claims, the figures and the params checks know of it.
    `family` "prompt" / "mim": its rows are the registered prompt methods / MIM targets (+ Scratch), found
    through their registries when asked (`methods_of`), so a new method or target needs no line here."""
    title: str
    notebook: str          # the notebook that measures it
    upstream: tuple[str, ...] = ()  # notebooks that must have run first (the runner's pipeline)
    paper: bool = True     # False: a workbook-only table (the mini CLIP's zero-shot check)
    layout: str = "methods"  # its paper's shape: "base2new" | "transfer" | "methods" | "datasets" (see paper_table)
    family: str = ""       # "prompt" | "mim" | "" (fixed `methods`)
    methods: tuple[str, ...] = ()  # family "": the rows it runs, in order (others' reference rows: context)
    metrics: tuple[tuple[str, str], ...] = ()  # layout "methods": (column label, metric) per column group
    average_of: str = ""   # layout "transfer": what its Average row averages ("targets", "variants")
    figures: tuple[str, ...] = ()  # its PNGs in results/<profile>/figures/; the first is drawn by `plot`
    plot: str = ""         # the function of workbook.plots that draws its figure
    claims: tuple[Claim, ...] = ()  # the paper's findings on it (a method's own claims: its module's `claims`)


# Notebooks that make no table of their own: name -> notebooks they need first.
STAGES: dict[str, tuple[str, ...]] = {"00_setup": (), "10_mvp_pretrain": ("01_mini_world",), "99_report": ()}

# The one registry of tables: the runner's pipeline and --only, the report's sections and titles, the claims,
# the figures and the colours read it.
TABLES: dict[str, Table] = {
    "mini_clip_zeroshot": Table("Mini CLIP zero-shot accuracy (mini world only)", "01_mini_world", paper=False,
                                layout="datasets", methods=("CLIP (mini)", "chance"), figures=("mini_clip_zeroshot",)),
    "imagenet_finetune": Table(
        "MVP: ImageNet-1K fine-tuning top-1", "11_imagenet_finetune", upstream=("10_mvp_pretrain",), family="mim",
        metrics=(("top-1, best epoch", "acc"), ("top-1, last epoch", "acc_final")),
        figures=("imagenet_finetune_curves",), plot="imagenet_finetune",
        claims=(Claim("MVP fine-tunes better than the same pre-training with a normalised-pixel target", "MVP", ">",
                      "Normalised pixels"),
                Claim("MVP fine-tunes better than training from scratch", "MVP", ">", "Scratch"))),
    "ade20k_segmentation": Table(
        "MVP: ADE20K semantic segmentation mIoU", "12_ade20k_segmentation", upstream=("10_mvp_pretrain",),
        family="mim", metrics=(("mIoU", "miou"),), figures=("ade20k_segmentation_curves", "ade20k_examples"),
        plot="ade20k_segmentation",
        claims=(Claim("MVP segments better than the same pre-training with a normalised-pixel target", "MVP", ">",
                      "Normalised pixels"),
                Claim("MVP segments better than training from scratch", "MVP", ">", "Scratch"))),
    "cocoop_base2new": Table(
        "CoCoOp Table 1: base-to-new generalisation", "20_cocoop_base2new", upstream=("01_mini_world",),
        layout="base2new", family="prompt", figures=("cocoop_base2new",), plot="base2new",
        claims=(Claim("CoOp fits the base classes better than zero-shot CLIP", "CoOp base", ">", "CLIP base"),
                Claim("CoOp loses accuracy on the new classes against zero-shot CLIP", "CoOp new", "<", "CLIP new"),
                Claim("CoCoOp is better than CoOp on the new classes", "CoCoOp new", ">", "CoOp new"),
                Claim("CoCoOp has the highest H (against CoOp)", "CoCoOp H", ">", "CoOp H"),
                Claim("CoCoOp has the highest H (against zero-shot CLIP)", "CoCoOp H", ">", "CLIP H"))),
    "cocoop_cross_dataset": Table(
        "CoCoOp Table 2: cross-dataset transfer", "21_cocoop_cross_dataset", upstream=("01_mini_world",),
        layout="transfer", family="prompt", average_of="targets", figures=("cocoop_cross_dataset",),
        plot="cross_dataset",
        claims=(Claim("CoCoOp transfers better than CoOp to the other datasets (their average)", "CoCoOp targets",
                      ">", "CoOp targets"),)),
    "cocoop_domain_generalization": Table(
        "CoCoOp Table 3: domain generalisation", "22_cocoop_domain_generalization", upstream=("01_mini_world",),
        layout="transfer", family="prompt", average_of="variants", figures=("cocoop_domain_generalization",),
        plot="domain_generalization",
        claims=(Claim("CoCoOp is at least as good as CoOp on the shifted variants (their average)",
                      "CoCoOp variants", ">=", "CoOp variants"),)),
}


def methods_of(name: str) -> tuple[str, ...]:
    """The rows table `name` runs, in order: its registry's methods (family) or its fixed `methods`."""
    spec = TABLES[name]
    if spec.family == "prompt":
        return prompt_methods.names()
    if spec.family == "mim":
        return mim_targets.table_methods()  # each registered target's label, then Scratch
    return spec.methods


def is_zero_shot(method: str) -> bool:
    """A prompt method that trains nothing (its numbers have no seed spread)."""
    return method in prompt_methods.names() and not prompt_methods.get(method).trains


def claims_of(name: str) -> tuple[Claim, ...]:
    """The table's own claims, then those its methods or targets declare on it (their module's `claims`)."""
    family = TABLES[name].family
    declared = ([c for m in prompt_methods.names() for c in prompt_methods.get(m).claims] if family == "prompt" else
                [c for t in mim_targets.all_targets() for c in t.claims] if family == "mim" else [])
    return TABLES[name].claims + tuple(Claim(*c[1:]) for c in declared if c[0] == name)


def colors() -> dict[str, str]:
    """A plot colour per row label: each prompt method's and each MIM target's own (and Scratch's)."""
    out = {m: prompt_methods.get(m).color for m in prompt_methods.names()}
    return {k: v for k, v in {**out, **mim_targets.colors()}.items() if v}


def pipeline() -> dict[str, tuple[str, ...]]:
    """Notebook -> the notebooks it needs first (tables' `upstream` and STAGES); keys in a valid run order."""
    deps: dict[str, tuple[str, ...]] = dict(STAGES)
    for spec in TABLES.values():
        deps[spec.notebook] = tuple(dict.fromkeys(deps.get(spec.notebook, ()) + spec.upstream))
    return dict(sorted(deps.items()))  # the numbers in the notebooks' names are the run order


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
    df["seed"] = seed.astype("Int64")  # written as 1, not 1.0
    if derived.is_derived(df).any():
        raise ValueError("a table holds one row per measured seed only; averages and H are computed from them "
                         f"(workbook.derived), not stored. Rows without a seed or named {derived.AVERAGE!r}:\n"
                         f"{df[derived.is_derived(df)].head()}")
    return df[COLUMNS]


def save_table(table: str, rows: Iterable[Mapping], profile: str) -> Path:
    """Write results/<profile>/tables/<table>.csv (the whole table, replacing an older one): one row per measured
    seed, nothing derived (to_frame refuses an Average row or a row without a seed)."""
    df = to_frame(rows, profile=profile, table=table)
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    path = atomic_write(tables_dir(profile) / f"{table}.csv", buf.getvalue())
    fault_point("table")
    return path


def load_table(table: str, profile: str) -> pd.DataFrame:
    """The measured rows of results/<profile>/tables/<table>.csv. A CSV written before `workbook.derived` also
    holds the Average and H rows the notebooks used to store: they are left out (and recomputed)."""
    path = tables_dir(profile) / f"{table}.csv"
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return derived.measured(pd.read_csv(path)).reset_index(drop=True)


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
    """Our rows averaged over seeds: one row per (method, dataset, split, metric) (derived.summary)."""
    return derived.summary(load_table(table, profile))


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


# ----------------------------------------------------------------------------- the paper's shape
FIELDS = ("ours", "std", "n", "paper", "delta")  # the last column level of PaperTable.frame
SOURCE = " (source)"  # Tables 2 and 3: the source dataset's row label is its name + SOURCE


@dataclass
class PaperTable:
    """A table's numbers as its paper prints them (all computed by workbook.derived). `frame`: one row per dataset
    (layouts "base2new", "transfer": the source first, then the average; "datasets") or per method ("methods");
    columns (group..., field) with group (method, "base" | "new" | "H") in Table 1, (method,) in Tables 2-3,
    (metric label,) in the MVP tables and field in FIELDS: ours = mean over seeds, std = their sample std (NaN:
    one seed, or a derived value such as H), n = seeds, paper, delta = ours - paper. `context`: reference rows of
    methods this workbook does not run. `methods`: the methods shown, in order; `source`: the source dataset
    (Tables 2 and 3; its row label is `source + SOURCE`), `average`: the average's row label ("" where none)."""
    name: str
    title: str
    frame: pd.DataFrame
    context: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    measured: bool = False
    layout: str = "methods"
    methods: list[str] = field(default_factory=list)
    source: str = ""
    average: str = ""


def _frame(cells: dict[str, dict[tuple, dict]]) -> pd.DataFrame:
    """{row label: {column group: stats}} -> rows x (group..., field), in insertion order."""
    groups = list(dict.fromkeys(g for row in cells.values() for g in row))
    if not groups:  # a workbook-only table before its run: nothing to show
        return pd.DataFrame()
    columns = pd.MultiIndex.from_tuples([(*g, f) for g in groups for f in FIELDS])
    data = [[row.get(g, {}).get(f, math.nan) for g in groups for f in FIELDS] for row in cells.values()]
    return pd.DataFrame(data, index=pd.Index(list(cells), name=""), columns=columns)


def _seeds_note(ours: pd.DataFrame, methods: list[str]) -> str:
    counts = ours.dropna(subset=["seed"]).groupby("method")["seed"].nunique()
    def seeds(m: str) -> str:
        n = int(counts.get(m, 0))
        return "1 run (zero-shot: no training, no seed spread)" if is_zero_shot(m) else f"{n} seed{'s' if n != 1 else ''}"

    parts = [f"{m} {seeds(m)}" for m in methods]
    return ("ours: mean ± std over seeds (" + "; ".join(parts) + "); Δ = ours − paper, set small: it measures how "
            "far this profile's world and models are from the paper's, not an error; — = not measured.")


def _base2new_notes(ref: pd.DataFrame, methods: list[str], average: str, n: int) -> list[str]:
    own = ref[ref["dataset"] == derived.AVERAGE].set_index(["method", "split"])["value"]
    own_text = "; ".join(f"{m} {own.get((m, 'base'), math.nan):.2f} / {own.get((m, 'new'), math.nan):.2f} / "
                         f"{own.get((m, 'base2new'), math.nan):.2f}" for m in methods if (m, "base") in own.index)
    return ["H: harmonic mean of the seed-averaged base and new accuracy (the paper's rule), so it has no ±.",
            f"{average}: per seed the mean over the {n} datasets run here, then mean ± std over seeds; its H is H of "
            f"those averaged base and new accuracies (not the mean of the datasets' H). Its paper column averages the "
            f"paper's numbers over the same {n} datasets (the paper's own average over its 11 datasets, base / new / "
            f"H: {own_text})."]


def _transfer_notes(ref: pd.DataFrame, methods: list[str], average: str, average_of: str, source: str) -> list[str]:
    own = ref[ref["dataset"] == derived.AVERAGE].set_index("method")["value"]
    own_text = "; ".join(f"{m} {own[m]:.2f}" for m in methods if m in own.index)
    unpublished = [m for m in methods if m not in set(ref["method"])]
    return ([f"{average}: per seed the mean over the {average_of} run here ({source}, the source, left out), then "
             f"mean ± std over seeds; its paper column averages the paper's numbers over the same {average_of}"
             + (f" (the paper's own average over its 10 targets: {own_text})." if own_text else
                " (the paper prints no average: this column is ours).")]
            + ([f"{', '.join(unpublished)}: no published number for this table (results/reference), so no paper or "
                "Δ row."] if unpublished else []))


def paper_table(name: str, profile: str) -> PaperTable:
    """Table `name` of `profile` in its paper's shape (see PaperTable); before any run: the paper's numbers only."""
    spec = TABLES[name]
    ours = load_table(name, profile)
    try:
        ref = load_reference(name)
    except FileNotFoundError:
        ref = pd.DataFrame(columns=REFERENCE_COLUMNS)
    measured = not ours.empty
    rows = methods_of(name)
    ran = [m for m in rows if m in set(ours["method"])] if measured else list(rows)
    methods = ran or list(rows)
    notes = [_seeds_note(ours, methods)] if measured and spec.paper else []
    source = average = ""
    if spec.layout == "base2new":
        cells, average = derived.base2new_cells(ours, ref, methods)
        notes += _base2new_notes(ref, methods, average, len(cells) - 1)
    elif spec.layout == "transfer":
        cells, source, average = derived.transfer_cells(ours, ref, methods, spec.average_of)
        notes += _transfer_notes(ref, methods, average, spec.average_of, source) if cells else []
        if source:  # the source's row is labelled as such (the figures' axis shows it)
            cells = {(source + SOURCE if d == source else d): row for d, row in cells.items()}
    elif spec.layout == "datasets":
        cells = derived.datasets_cells(ours, methods)
    else:
        cells = derived.methods_cells(ours, ref, methods, spec.metrics)
    context = ref[~ref["method"].isin(methods)][["method", "dataset", "split", "metric", "value", "source"]]
    return PaperTable(name, spec.title, _frame(cells), context.reset_index(drop=True), notes, measured,
                      spec.layout, methods, source, average)
