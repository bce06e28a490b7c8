"""Our numbers beside the papers', and the HTML report that links every executed notebook."""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import pandas as pd

import nbformat
from nbconvert import HTMLExporter

from ..utils.io import atomic_write
from . import paths
from .tables import TABLES, compare, figures_dir

PROFILE_NOTE = {
    "smoke": "SMOKE profile: a few steps on a tiny generated world, only to test that the code runs. "
             "The numbers mean nothing.",
    "mini": "MINI profile: a procedurally generated world and a small CLIP trained on it, on a CPU. These numbers "
            "are measured by this code, but on stand-in data and models far smaller than the papers'. They show "
            "whether the methods behave as the papers describe, not the papers' numbers.",
    "paper": "PAPER profile: the papers' datasets, CLIP ViT-B/16 weights and recipes.",
}


def _render_notebook(src: Path, dst: Path) -> None:
    body, _ = HTMLExporter(exclude_input=True).from_notebook_node(nbformat.read(src, as_version=4))
    atomic_write(dst, body)


def _table_html(df: pd.DataFrame) -> str:
    show = df.drop(columns=["source"]).copy()
    for col in ("ours", "ours_std", "paper"):
        show[col] = pd.to_numeric(show[col], errors="coerce").map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    return show.to_html(index=False, border=0, classes="tbl", na_rep="")


def render_report(profile: str) -> Path:
    """results/<profile>/report/index.html: links to each rendered notebook and every table vs the paper."""
    report = paths.results_dir(profile) / "report"
    report.mkdir(parents=True, exist_ok=True)
    rows = []
    for nb in sorted(paths.executed_dir(profile).glob("*.ipynb")):
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
    for table, spec in TABLES.items():
        if not spec.paper and profile == "paper":
            continue
        df = compare(table, profile)
        figs = sorted(figures_dir(profile).glob(f"*{table}*.png"))
        imgs = "".join(f'<img src="../figures/{f.name}" alt="{f.stem}">' for f in figs)
        status = "" if df["ours"].notna().any() else "<p class='empty'>Not run yet in this profile: paper numbers only.</p>"
        sources = sorted(s for s in df["source"].dropna().unique())
        src_html = "".join(f"<li>{html.escape(s)}</li>" for s in sources)
        sections.append(f"<h2>{html.escape(spec.title)}</h2>{status}{_table_html(df)}"
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
