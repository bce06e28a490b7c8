"""Our numbers beside the papers', and the HTML report that links every executed notebook."""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import pandas as pd

from . import paths
from .results import TABLES, atomic_write, figures_dir, load_reference, load_table

KEYS = ["method", "dataset", "split", "metric"]
TITLES = {
    "mini_clip_zeroshot": "Mini CLIP zero-shot accuracy (mini world only)",
    "cocoop_base2new": "CoCoOp Table 1: base-to-new generalisation",
    "cocoop_cross_dataset": "CoCoOp Table 2: cross-dataset transfer",
    "cocoop_domain_generalization": "CoCoOp Table 3: domain generalisation",
    "imagenet_finetune": "MVP: ImageNet-1K fine-tuning top-1",
    "ade20k_segmentation": "MVP: ADE20K semantic segmentation mIoU",
}
PROFILE_NOTE = {
    "smoke": "SMOKE profile: a few steps on a tiny generated world, only to test that the code runs. "
             "The numbers mean nothing.",
    "mini": "MINI profile: a procedurally generated world and a small CLIP trained on it, on a CPU. These numbers "
            "are measured by this code, but on stand-in data and models far smaller than the papers'. They show "
            "whether the methods behave as the papers describe, not the papers' numbers.",
    "paper": "PAPER profile: the papers' datasets, CLIP ViT-B/16 weights and recipes.",
}


def ours_summary(table: str, profile: str) -> pd.DataFrame:
    """Our rows averaged over seeds: one row per (method, dataset, split, metric)."""
    df = load_table(table, profile)
    if df.empty:
        return pd.DataFrame(columns=KEYS + ["ours", "ours_std", "seeds"])
    g = df.groupby(KEYS, sort=False)["value"]
    out = pd.DataFrame({"ours": g.mean(), "ours_std": g.std(ddof=0), "seeds": g.count()}).reset_index()
    return out


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


def _render_notebook(src: Path, dst: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(exclude_input=True).from_notebook_node(nbformat.read(src, as_version=4))
    atomic_write(dst, body)


def _table_html(df: pd.DataFrame) -> str:
    show = df.drop(columns=["source"]).copy()
    for col in ("ours", "ours_std", "paper"):
        show[col] = pd.to_numeric(show[col], errors="coerce").map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return show.to_html(index=False, border=0, classes="tbl", na_rep="")


def render_report(profile: str) -> Path:
    """results/<profile>/report/index.html: links to each rendered notebook and every table vs the paper."""
    from .runner import executed_dir

    report = paths.results_dir(profile) / "report"
    report.mkdir(parents=True, exist_ok=True)
    rows = []
    for nb in sorted(executed_dir(profile).glob("*.ipynb")):
        record_path = nb.with_suffix(".run.json")
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        page = report / f"{nb.stem}.html"
        try:
            _render_notebook(nb, page)
            link = f'<a href="{page.name}">{html.escape(nb.stem)}</a>'
        except Exception as err:  # a broken notebook must not take the whole report down
            link = f"{html.escape(nb.stem)} (not rendered: {html.escape(str(err))})"
        params = html.escape(json.dumps(record.get("params", {}), default=str))
        rows.append(f"<tr><td>{link}</td><td>{record.get('status', '?')}</td><td>{record.get('seconds', '')}</td>"
                    f"<td>{record.get('finished', '')}</td><td><code>{params}</code></td></tr>")
    sections = []
    for table in ("mini_clip_zeroshot",) + TABLES:
        if table == "mini_clip_zeroshot" and profile == "paper":
            continue
        df = compare(table, profile)
        figs = sorted(figures_dir(profile).glob(f"*{table}*.png"))
        imgs = "".join(f'<img src="../figures/{f.name}" alt="{f.stem}">' for f in figs)
        status = "" if df["ours"].notna().any() else "<p class='empty'>Not run yet in this profile: paper numbers only.</p>"
        sources = sorted(s for s in df["source"].dropna().unique())
        src_html = "".join(f"<li>{html.escape(s)}</li>" for s in sources)
        sections.append(f"<h2>{html.escape(TITLES.get(table, table))}</h2>{status}{_table_html(df)}"
                        f"{imgs}<ul class='src'>{src_html}</ul>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vlpt workbook: {profile}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
.note{{background:#fff4d6;padding:.6em 1em;border-left:4px solid #e0a800}}
table.tbl{{border-collapse:collapse;font-size:13px;margin:.5em 0}}
table.tbl td,table.tbl th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}
img{{max-width:100%;margin:.5em 0}} .src{{font-size:12px;color:#555}} .empty{{color:#a00}}</style></head><body>
<h1>vlpt workbook report: <code>{profile}</code> profile</h1>
<p class="note">{html.escape(PROFILE_NOTE.get(profile, ''))}</p>
<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. Columns: <b>ours</b> is the mean over seeds (<b>seeds</b> how many,
<b>ours_std</b> their spread); <b>paper</b> is the number the paper reports.</p>
<h2>Notebooks</h2><table class="tbl"><tr><th>notebook</th><th>status</th><th>seconds</th><th>finished</th><th>parameters</th></tr>
{''.join(rows) or '<tr><td colspan=5>none executed yet</td></tr>'}</table>
{''.join(sections)}
</body></html>"""
    return atomic_write(report / "index.html", page)


def plot_comparison(df: pd.DataFrame, title: str, metric: str | None = None):
    """Grouped bars, ours vs the paper, one group per (dataset, split) and a colour per method."""
    import matplotlib.pyplot as plt

    data = df if metric is None else df[df["metric"] == metric]
    data = data[data["ours"].notna() | data["paper"].notna()].copy()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(data) + 2), 4))
    if data.empty:
        ax.text(0.5, 0.5, "no numbers yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        return fig
    labels = [f"{r.method}\n{r.dataset} {r.split}" for r in data.itertuples()]
    x = range(len(data))
    ax.bar([i - 0.2 for i in x], pd.to_numeric(data["ours"], errors="coerce").fillna(0), 0.4, label="ours",
           yerr=pd.to_numeric(data["ours_std"], errors="coerce").fillna(0), capsize=2)
    ax.bar([i + 0.2 for i in x], pd.to_numeric(data["paper"], errors="coerce").fillna(0), 0.4, label="paper")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(metric or "value (%)")
    ax.set_title(title)
    ax.legend()
    return fig
