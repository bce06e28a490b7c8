"""One figure per paper table, drawn from what the table's notebook saved: the CoCoOp tables from their
paper-shaped frame (tables.paper_table: the very numbers of the report's table), the MVP tables from their
runs' histories. The notebooks show the figure and save it under the table's `figures` name
(tables.save_figure); the report embeds that PNG.

    fig = plots.figure("cocoop_base2new", profile)     # None when the table has no rows yet
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from . import mvp
from .tables import TABLES, PaperTable, colors, paper_table

PAPER_LABEL = "paper (ViT-B/16)"


def _methods(pt: PaperTable) -> list[str]:
    return list(dict.fromkeys(c[0] for c in pt.frame.columns))


def _bars(ax, pt: PaperTable, methods: list[str], group: tuple = ()) -> None:
    """Grouped bars per row (dataset): ours with ± std over seeds in the left half of each bar, the paper's value
    as a white diamond in its right half, so that the paper's mark never lies on an error bar's cap (both are
    sized from the bar's width in points: cap half-length + diamond radius < half a bar)."""
    frame = pt.frame
    x = np.arange(len(frame))
    width = 0.8 / len(methods)
    # the bar's width in points before tight_layout (which only widens the axes) over the autoscaled x range
    bar_pt = width * ax.get_position().width * ax.figure.get_figwidth() * 72 / (len(frame) + 0.5)
    capsize, marker_size = min(2.0, 0.2 * bar_pt), min(6.0, 0.5 * bar_pt)  # cap: half-length; marker: diameter
    for i, m in enumerate(methods):
        col = (m, *group)
        ours, std, paper = (frame[(*col, f)].to_numpy(dtype=float) for f in ("ours", "std", "paper"))
        off = (i - (len(methods) - 1) / 2) * width
        ax.bar(x + off, ours, width, color=colors().get(m), label=m)
        spread = ~np.isnan(std)  # one seed, zero-shot CLIP and H have no spread: no error bar
        ax.errorbar((x + off - width / 4)[spread], ours[spread], std[spread], fmt="none", ecolor="k", elinewidth=0.8,
                    capsize=capsize)
        has = ~np.isnan(paper)
        ax.plot((x + off + width / 4)[has], paper[has], ls="none", marker="D", ms=marker_size, mfc="white", mec="k",
                mew=0.9, label=PAPER_LABEL if i == 0 else None, zorder=4)
    average = [j for j, label in enumerate(frame.index) if str(label).startswith("Average")]
    if average:  # the Average row is not a dataset: set it apart
        ax.axvline(average[0] - 0.5, color="0.6", ls=":", lw=1)
    ax.set_xticks(x, list(frame.index), rotation=25, ha="right", fontsize=9)
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)


def _legend_on_top(fig, ax, top: float) -> None:
    """One legend above the panels, so that no bar or paper line hides behind it."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, top))


def base2new(profile: str):
    """CoCoOp Table 1: base accuracy, new accuracy and H per dataset and their Average, one panel each."""
    pt = paper_table("cocoop_base2new", profile)
    if not pt.measured:
        return None
    methods = _methods(pt)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    for ax, (metric, label) in zip(axes, [("base", "base classes: accuracy (%)"), ("new", "new classes: accuracy (%)"),
                                          ("H", "H, harmonic mean (%)")]):
        _bars(ax, pt, methods, (metric,))
        ax.set_ylabel(label, fontsize=9)
    fig.suptitle(f"CoCoOp Table 1, profile {profile}: ours (bars, ± std over seeds) and the paper's value", y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _legend_on_top(fig, axes[0], 0.965)
    return fig


def _transfer(table: str, profile: str, title: str):
    pt = paper_table(table, profile)
    if not pt.measured:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.2))
    _bars(ax, pt, _methods(pt))
    ax.set_ylabel("accuracy (%)")
    fig.suptitle(f"{title}, profile {profile}: ours (bars, ± std over seeds) and the paper's value", y=0.99)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    _legend_on_top(fig, ax, 0.93)
    return fig


def cross_dataset(profile: str):
    """CoCoOp Table 2: accuracy on the source, on every target and on the targets' average."""
    return _transfer("cocoop_cross_dataset", profile, "CoCoOp Table 2 (cross-dataset transfer)")


def domain_generalization(profile: str):
    """CoCoOp Table 3: accuracy on the source and its shifted variants (and their average)."""
    return _transfer("cocoop_domain_generalization", profile, "CoCoOp Table 3 (domain generalisation)")


def _per_method(runs: Mapping[tuple[str, int], dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for (method, _), r in runs.items():
        out.setdefault(method, []).append(r)
    return out


def _seeds_label(runs: Mapping[tuple[str, int], dict]) -> str:
    seeds = sorted({s for _, s in runs})
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def imagenet_finetune(profile: str):
    """MVP ImageNet fine-tuning: train loss and val top-1 per epoch (a line per seed; star: the best epoch,
    the table's `acc`)."""
    runs = mvp.runs_of_table("imagenet_finetune", profile)
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for method, results in _per_method(runs).items():
        for i, r in enumerate(results):
            h = pd.DataFrame(r["history"])
            color, label = colors().get(method), method if i == 0 else None
            axes[0].plot(h["epoch"], h["loss"], color=color, label=label)
            if "val_top1" in h:
                e = h.dropna(subset=["val_top1"])
                axes[1].plot(e["epoch"], e["val_top1"], marker="o", ms=3, color=color)
                best = e.loc[e["val_top1"].idxmax()]  # the table's number (BEiT's max_accuracy)
                axes[1].plot(best["epoch"], best["val_top1"], marker="*", ms=13, color=color)
    axes[0].set(xlabel="epoch", ylabel="train loss (mixup soft targets)")
    axes[1].set(xlabel="epoch", ylabel="val top-1 (%)")
    axes[1].set_title("star: best epoch = the table's top-1", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"MVP: ImageNet fine-tuning, profile {profile} ({_seeds_label(runs)})", y=0.99)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    _legend_on_top(fig, axes[0], 0.92)
    return fig


def ade20k_segmentation(profile: str):
    """MVP ADE20K segmentation: train loss per iteration, and val mIoU: a curve per run where it was evaluated
    more than once, else the final mIoU per method (bar: mean, dots: seeds)."""
    runs = mvp.runs_of_table("ade20k_segmentation", profile)
    if not runs:
        return None
    per_method = _per_method(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    evaluations = max(pd.DataFrame(r["history"]).get("miou", pd.Series(dtype=float)).notna().sum()
                      for r in runs.values())
    for j, (method, results) in enumerate(per_method.items()):
        color = colors().get(method)
        for i, r in enumerate(results):
            h = pd.DataFrame(r["history"])
            axes[0].plot(h["step"], h["loss"], color=color, label=method if i == 0 else None)
            if evaluations > 1 and "miou" in h:
                e = h.dropna(subset=["miou"])
                axes[1].plot(e["step"], e["miou"], marker="o", ms=3, color=color)
        if evaluations <= 1:
            final = [r["miou"] for r in results]
            axes[1].bar(j, np.mean(final), 0.6, color=color, yerr=np.std(final, ddof=1) if len(final) > 1 else 0,
                        error_kw={"capsize": 3})
            axes[1].scatter([j] * len(final), final, color="k", s=12, zorder=3)
    axes[0].set(xlabel="iteration", ylabel="train loss (main + 0.4 aux)")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))  # whole iterations: no tick at 2.5
    if evaluations <= 1:
        axes[1].set_xticks(range(len(per_method)), list(per_method))
        axes[1].set(ylabel="val mIoU (%) of the final model")
        axes[1].set_title("bar: mean over seeds, dots: seeds", fontsize=9)
    else:
        axes[1].set(xlabel="iteration", ylabel="val mIoU (%)")
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"MVP: ADE20K segmentation, profile {profile} ({_seeds_label(runs)})", y=0.99)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    _legend_on_top(fig, axes[0], 0.92)
    return fig


def figure(table: str, profile: str):
    """The figure of `table` on `profile` (None before its notebook saved any rows): the function of this module
    that its spec names (tables.TABLES[table].plot); its PNG name is the first of the table's `figures`."""
    spec = TABLES.get(table)
    if spec is None or not spec.plot:
        raise KeyError(f"no figure for table {table!r}; tables with one: {sorted(n for n, t in TABLES.items() if t.plot)}")
    return globals()[spec.plot](profile)
