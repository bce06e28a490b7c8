"""Every number derived from a table's per-seed rows: computed here, and nowhere else.

A table's CSV holds what was measured, one row per (method, dataset, split, seed, metric). The tables
(`tables.paper_table`), the claims (`claims.samples`) and the figures (`plots`, which draw
`paper_table`'s frame) show more than those rows; this module computes all of it:

* a cell's **seed statistics** (`seed_stats`): ours = the mean over seeds, std = their sample std (ddof 1;
  NaN with one seed), n = the seeds;
* **H** (Table 1, `harmonic_mean`): 2·B·N / (B + N) of the *seed-averaged* base B and new N accuracies, the
  paper's rule, so H has no ± (the claims' Welch test needs a spread: `per_seed_h`, H of each seed's averages);
* **averages** (`per_seed_average`): per seed, the mean over the averaged datasets (a seed that lacks one of
  them is left out), then the seed statistics of those per-seed means. Table 1 averages every dataset run (the
  paper's "Average over 11 datasets" includes ImageNet); Tables 2 and 3 every dataset but the source, the first
  dataset of the table (the paper's Table 2 average is over the 10 targets, ImageNet excluded);
* **the paper's side of an average** (`paper_average`): the mean of the paper's numbers over the same datasets
  (NaN where the paper lacks one of them), and for H the harmonic mean of the paper's averaged base and new; where
  the run covers every dataset the paper has, the paper's own printed average (and H).

A stats dict is {"ours", "std", "n", "paper", "delta"} (delta = ours - paper); a table's cells are
{row label: {column group: stats}} (tables.paper_table turns them into its frame).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

AVERAGE = "Average"  # the dataset label of an average, here and in the papers' reference rows
KEYS = ["method", "dataset", "split", "metric"]


# ----------------------------------------------------------------------------- which rows are measured
def is_derived(rows: pd.DataFrame) -> pd.Series:
    """The rows that are not one seed's measurement: an "Average" row, or a row without a seed (CSVs written
    before this module existed carried Average and H rows; they are recomputed here, never read)."""
    return rows["dataset"].eq(AVERAGE) | pd.to_numeric(rows["seed"], errors="coerce").isna()


def measured(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` without derived rows (is_derived)."""
    return rows[~is_derived(rows)] if len(rows) else rows


# ----------------------------------------------------------------------------- the rules
def harmonic_mean(base: float, new: float) -> float:
    """H = 2 base new / (base + new); 0 when both are 0; NaN (shown as a dash) when either was not measured."""
    if pd.isna(base) or pd.isna(new):
        return math.nan
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def seed_stats(values: pd.Series, paper: float = math.nan) -> dict:
    """ours / std / n over per-seed values (NaN values dropped), the paper's number and delta = ours - paper."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna().astype(float)
    mean = float(v.mean()) if len(v) else math.nan
    return {"ours": mean, "std": float(v.std()) if len(v) > 1 else math.nan, "n": len(v), "paper": paper,
            "delta": mean - paper}


def per_seed(rows: pd.DataFrame) -> pd.Series:
    """Per seed, the mean of `rows`' values (one value per seed: that value), indexed by seed."""
    return rows.groupby("seed")["value"].mean()


def per_seed_average(rows: pd.DataFrame, datasets: Sequence[str]) -> pd.Series:
    """Per seed, the mean over `datasets` of `rows`' values (seeds that lack one of them are left out)."""
    part = rows[rows["dataset"].isin(list(datasets))]
    full = part.groupby("seed")["dataset"].nunique() == len(datasets)
    return per_seed(part[part["seed"].isin(full[full].index)])


def per_seed_h(base: pd.Series, new: pd.Series) -> pd.Series:
    """Per seed, H of that seed's base and new (the seeds both have): the spread the claims' test needs."""
    both = base.index.intersection(new.index)
    return pd.Series([harmonic_mean(base[s], new[s]) for s in both], index=both, dtype=float)


def paper_average(paper: Mapping, keys: Sequence, printed: float = math.nan) -> float:
    """The mean of the paper's numbers at `keys` (NaN when it lacks one), or `printed` (the paper's own average)
    when given: used where the run covers every dataset the paper averages."""
    if not pd.isna(printed):
        return float(printed)
    values = [paper.get(k, math.nan) for k in keys]
    return float(sum(values) / len(values)) if keys and not any(pd.isna(v) for v in values) else math.nan


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, dataset, split, metric) of the measured rows: ours (mean over seeds), ours_std, seeds."""
    rows = measured(rows)
    if rows.empty:
        return pd.DataFrame(columns=KEYS + ["ours", "ours_std", "seeds"])
    g = rows.groupby(KEYS, sort=False)["value"]
    return pd.DataFrame({"ours": g.mean(), "ours_std": g.std(), "seeds": g.count()}).reset_index()


# ----------------------------------------------------------------------------- which datasets a table averages
def datasets_of(acc: pd.DataFrame, ref: pd.DataFrame) -> list[str]:
    """The datasets of a CoCoOp table in order: those measured, else (before any run) the paper's."""
    found = list(dict.fromkeys(measured(acc)["dataset"])) if len(acc) else []
    return found or [d for d in dict.fromkeys(ref["dataset"]) if d != AVERAGE]


def averaged(layout: str, datasets: Sequence[str]) -> list[str]:
    """The datasets a table's average runs over: Table 1 ("base2new") all of them; Tables 2 and 3 ("transfer")
    all but the source (the first)."""
    return list(datasets) if layout == "base2new" else list(datasets)[1:]


def _printed(ref: pd.DataFrame, datasets: Sequence[str]) -> pd.Series:
    """The paper's own Average rows, when `datasets` are every dataset the paper has (else none)."""
    theirs = set(ref["dataset"]) - {AVERAGE}
    return ref[ref["dataset"] == AVERAGE] if theirs and theirs == set(datasets) else ref.iloc[:0]


# ----------------------------------------------------------------------------- the tables' cells
def base2new_cells(ours: pd.DataFrame, ref: pd.DataFrame, methods: Sequence[str]) -> tuple[dict, str]:
    """Table 1: per dataset and method base / new (seed stats) and H (of the seed-averaged base and new; n: the
    fewer seeds of the two), then the average over the datasets (average_label) the same way. Returns
    (cells, average_label)."""
    acc = measured(ours[ours["metric"] == "acc"]) if len(ours) else ours
    datasets = datasets_of(acc, ref)
    paper = ref.set_index(["method", "dataset", "split"])["value"]
    printed = _printed(ref, datasets).set_index(["method", "split"])["value"]
    average = f"{AVERAGE} ({len(datasets)} datasets)"
    cells: dict[str, dict] = {d: {} for d in datasets + [average]}
    for m in methods:
        mine = acc[acc["method"] == m]
        for d in datasets:
            b, n = (seed_stats(mine[(mine["dataset"] == d) & (mine["split"] == s)]["value"],
                               paper.get((m, d, s), math.nan)) for s in ("base", "new"))
            h = harmonic_mean(b["ours"], n["ours"])
            cells[d].update({(m, "base"): b, (m, "new"): n, (m, "H"): _derived(h, paper.get((m, d, "base2new"),
                                                                                             math.nan), b, n)})
        pb, pn = (paper_average(paper, [(m, d, s) for d in datasets], printed.get((m, s), math.nan))
                  for s in ("base", "new"))
        b, n = (seed_stats(per_seed_average(mine[mine["split"] == s], datasets), p) for s, p in (("base", pb),
                                                                                               ("new", pn)))
        h, ph = harmonic_mean(b["ours"], n["ours"]), printed.get((m, "base2new"), harmonic_mean(pb, pn))
        cells[average].update({(m, "base"): b, (m, "new"): n, (m, "H"): _derived(h, ph, b, n)})
    return cells, average


def _derived(ours: float, paper: float, b: dict, n: dict) -> dict:
    return {"ours": ours, "std": math.nan, "n": min(b["n"], n["n"]), "paper": paper, "delta": ours - paper}


def transfer_cells(ours: pd.DataFrame, ref: pd.DataFrame, methods: Sequence[str], average_of: str
                   ) -> tuple[dict, str, str]:
    """Tables 2 and 3: per dataset (the source first) and method the seed stats, then the average over the others
    (average_label). Returns (cells keyed by dataset, source, average_label)."""
    acc = measured(ours[ours["metric"] == "acc"]) if len(ours) else ours
    datasets = datasets_of(acc, ref)
    if not datasets:
        return {}, "", ""
    others = averaged("transfer", datasets)
    paper = ref.set_index(["method", "dataset"])["value"]
    printed = _printed(ref[ref["dataset"] != datasets[0]], others).set_index("method")["value"]
    average = f"{AVERAGE} ({len(others)} {average_of})"
    cells: dict[str, dict] = {d: {} for d in datasets + [average]}
    for m in methods:
        mine = acc[acc["method"] == m]
        for d in datasets:
            cells[d][(m,)] = seed_stats(mine[mine["dataset"] == d]["value"], paper.get((m, d), math.nan))
        cells[average][(m,)] = seed_stats(per_seed_average(mine, others),
                                          paper_average(paper, [(m, d) for d in others], printed.get(m, math.nan)))
    return cells, datasets[0], average


def methods_cells(ours: pd.DataFrame, ref: pd.DataFrame, methods: Sequence[str], metrics) -> dict:
    """A table of methods (the MVP tables): per method and (label, metric) the seed stats beside the paper's."""
    ours = measured(ours) if len(ours) else ours
    paper = ref.groupby(["method", "metric"])["value"].first()
    return {m: {(label,): seed_stats(ours[(ours["method"] == m) & (ours["metric"] == metric)]["value"],
                                     paper.get((m, metric), math.nan)) for label, metric in metrics} for m in methods}


def datasets_cells(ours: pd.DataFrame, methods: Sequence[str]) -> dict:
    """A table of datasets (the mini CLIP's check): per dataset and method the seed stats (no paper)."""
    ours = measured(ours) if len(ours) else ours
    return {d: {(m,): seed_stats(ours[(ours["dataset"] == d) & (ours["method"] == m)]["value"]) for m in methods}
            for d in dict.fromkeys(ours["dataset"])}


# ----------------------------------------------------------------------------- the claims' per-seed sides
def claim_sides(layout: str, rows: pd.DataFrame, average_of: str = "", metric: str = "") -> dict[str, pd.Series]:
    """The per-seed samples the claims compare: label -> values indexed by seed.

    Table 1 ("base2new"): "<method> base" / "<method> new" = per seed the mean over every dataset run (the same
    datasets for every method), "<method> H" = per seed H of those two. Tables 2 and 3 ("transfer"):
    "<method> <average_of>" = per seed the mean over the datasets but the source. Other tables: "<method>" = per
    seed its `metric`."""
    df = measured(rows) if len(rows) else rows
    out: dict[str, pd.Series] = {}
    if layout in ("base2new", "transfer"):
        acc = df[df["metric"] == "acc"]
        over = averaged(layout, list(dict.fromkeys(acc["dataset"])))
        for method, g in acc.groupby("method", sort=False):
            if layout == "base2new":
                base, new = (per_seed_average(g[g["split"] == s], over) for s in ("base", "new"))
                out.update({f"{method} base": base, f"{method} new": new, f"{method} H": per_seed_h(base, new)})
            else:
                out[f"{method} {average_of}"] = per_seed_average(g, over)
    else:
        for method, g in df[df["metric"] == metric].groupby("method", sort=False):
            out[method] = per_seed(g)
    return out
