"""The report: every paper table in its paper's shape (ours, paper, Δ), its figure, the papers' claims judged on
this run, and the executed notebooks, as one self-contained folder (images embedded, CSVs copied beside).

    render_report("mini")                   # results/mini/report/index.html + results/mini/summary.md
    render_report("mini", out="site/")      # the same folder anywhere (python -m vlpt_lib report --out DIR)

Notebooks show the same tables with `notebook_table(name, profile)`.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path

import nbformat
import pandas as pd
from IPython.display import HTML
from nbconvert import HTMLExporter

from ..utils.io import atomic_write
from . import claims, paths
from .metadata import load_run_metadata, run_metadata, write_run_metadata
from .tables import TABLES, PaperTable, figures_dir, is_zero_shot, paper_table, tables_dir

PROFILE_NOTE = {
    "smoke": "SMOKE profile: a few steps on a tiny generated world, only to test that the code runs. "
             "The numbers mean nothing.",
    "mini": "MINI profile: a procedurally generated world and a small CLIP trained on it, on a CPU. These numbers "
            "are measured by this code, but on stand-in data and models far smaller than the papers'. They show "
            "whether the methods behave as the papers describe, not the papers' numbers: Δ is the distance "
            "between this toy world and the paper, not an error.",
    "paper": "PAPER profile: the papers' datasets, CLIP ViT-B/16 weights and recipes.",
}
DRY_RUN_NOTE = ("DRY RUN of the paper profile (`reproduce --profile paper --dry-run`): a synthetic data root shaped "
                "like the real one and ViT-B/16 with random weights, a few steps per job (the caps are in the "
                "metadata). It shows that every code path of the paper run executes; its numbers mean nothing.")


def last_run_note(name: str, profile: str) -> str | None:
    """Why a table's numbers may not be what its notebook's parameters give: the notebook's last run did not
    finish ok (a failed run leaves the previous run's table in place). None when it did."""
    notebook = TABLES[name].notebook
    csv = tables_dir(profile) / f"{name}.csv"
    try:
        record = json.loads((paths.executed_dir(profile) / f"{notebook}.run.json").read_text())
    except (OSError, ValueError):
        return None
    status = record.get("status")
    if status == "ok" or not csv.exists():
        return None
    when = record.get("finished") or record.get("started")
    try:
        started = time.mktime(time.strptime(when, "%Y-%m-%d %H:%M:%S")) - float(record.get("seconds") or 0)
    except (TypeError, ValueError):
        started = None
    source = ("that run, which wrote this table before it stopped" if started is not None
              and csv.stat().st_mtime >= started else "an earlier run, made with that run's parameters")
    what = "is running or died" if status == "running" else status
    return (f"The last run of notebook {notebook} {what} ({when or 'time unknown'}): the numbers below are from "
            f"{source}, not necessarily from the current parameters. Re-run: "
            f"python -m vlpt_lib reproduce --profile {profile} --only {notebook}")


def profile_note(profile: str, meta: dict | None) -> str:
    return DRY_RUN_NOTE if (meta or {}).get("caps") else PROFILE_NOTE.get(profile, "")


FIELD_LABELS = {"ours": "ours", "paper": "paper", "delta": "Δ"}
VERDICT_CLASS = {"holds": "holds", "reversed": "reversed", "not resolved": "open"}
NA = "—"

STYLE = """
.vlpt{font-family:system-ui,sans-serif;font-size:12.5px}
table.vlpt{border-collapse:collapse;margin:.4em 0 .2em}
table.vlpt th,table.vlpt td{padding:2px 5px;border-bottom:1px solid #e3e3e3;white-space:nowrap}
table.vlpt th{background:#f5f5f5;text-align:center!important;font-weight:600}
table.vlpt td{text-align:right!important;font-variant-numeric:tabular-nums}
table.vlpt td.label,table.vlpt th.label,table.vlpt td.text{text-align:left!important}
table.vlpt td.text{white-space:normal}
table.vlpt .first{border-left:2px solid #bbb}
table.vlpt tr.avg td{font-weight:600;border-top:2px solid #999}
table.vlpt .sd{color:#666;font-size:10.5px}
table.vlpt td.ours .sd{display:block;line-height:1}
table.vlpt.wide{font-size:11.5px} table.vlpt.wide th,table.vlpt.wide td{padding:2px 4px}
table.vlpt.wide td.label{white-space:normal;min-width:7em}
table.vlpt .na{color:#aaa}
table.vlpt td.paper{color:#555}
table.vlpt td.holds{background:#dff3df} table.vlpt td.reversed{background:#f8dcdc}
table.vlpt td.open{background:#fff2cc} table.vlpt td.none{background:#eee}
.notes{color:#444;font-size:12px;margin:.2em 0 .6em;padding-left:1.2em}
"""


# ----------------------------------------------------------------------------- numbers
def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _signed(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}".replace("-", "−")


def _cell_text(field: str, values: dict, markdown: bool = False) -> str:
    v = values.get(field)
    if _missing(v):
        return NA if markdown else f"<span class='na'>{NA}</span>"
    if field == "paper":
        return f"{v:.2f}"
    if field == "delta":
        return _signed(v)
    std = values.get("std")
    if _missing(std):
        return f"{v:.1f}"
    return f"{v:.1f} ± {std:.1f}" if markdown else f"{v:.1f} <span class='sd'>± {std:.1f}</span>"


def _fields(name: str) -> tuple[str, ...]:
    return ("ours", "paper", "delta") if TABLES[name].paper else ("ours",)


def _groups(frame: pd.DataFrame) -> list[tuple]:
    return list(dict.fromkeys(c[:-1] for c in frame.columns))


def _row_label(name: str) -> str:
    return "method" if TABLES[name].layout == "methods" else "dataset"


# ----------------------------------------------------------------------------- HTML
def table_html(pt: PaperTable) -> str:
    """The paper-shaped table: one header row per column level, then ours / paper / Δ under each group."""
    fields = _fields(pt.name)
    groups = _groups(pt.frame)
    if not groups:
        return ""
    levels = len(groups[0])
    head = []
    for level in range(levels):
        cells = [f"<th class='label' rowspan='{levels + 1}'>{_row_label(pt.name)}</th>"] if level == 0 else []
        spans: list[list] = []
        for g in groups:
            if spans and spans[-1][0] == g[:level + 1]:
                spans[-1][1] += len(fields)
            else:
                spans.append([g[:level + 1], len(fields)])
        cells += [f"<th class='first' colspan='{n}'>{html.escape(str(key[-1]))}</th>" for key, n in spans]
        head.append("<tr>" + "".join(cells) + "</tr>")
    head.append("<tr>" + "".join(f"<th class='{'first' if i == 0 else ''} {f}'>{FIELD_LABELS[f]}</th>"
                                 for _ in groups for i, f in enumerate(fields)) + "</tr>")
    body = []
    for label, row in pt.frame.iterrows():
        cells = [f"<td class='label'>{html.escape(str(label))}</td>"]
        for g in groups:
            values = {f: row[(*g, f)] for f in ("ours", "std", "paper", "delta")}
            cells += [f"<td class='{'first' if i == 0 else ''} {f}'>{_cell_text(f, values)}</td>"
                      for i, f in enumerate(fields)]
        avg = " class='avg'" if str(label).startswith("Average") else ""
        body.append(f"<tr{avg}>" + "".join(cells) + "</tr>")
    wide = " wide" if len(groups) * len(fields) > 18 else ""  # Table 1: 27 columns, set tighter
    return f"<table class='vlpt{wide}'><thead>{''.join(head)}</thead><tbody>{''.join(body)}</tbody></table>"


def _context_html(pt: PaperTable) -> str:
    if pt.context.empty:
        return ""
    rows = "".join(f"<tr><td class='label'>{html.escape(r.method)}</td><td class='label'>{html.escape(r.dataset)}</td>"
                   f"<td class='label'>{html.escape(r.split)} {html.escape(r.metric)}</td><td>{r.value:.2f}</td>"
                   f"<td class='text'>{html.escape(r.source)}</td></tr>" for r in pt.context.itertuples())
    return (f"<details><summary>Other methods' published numbers (context; not run by this workbook)</summary>"
            f"<table class='vlpt'><tr><th class='label'>method</th><th class='label'>dataset</th>"
            f"<th class='label'>metric</th><th>paper</th><th class='label'>source</th></tr>{rows}</table></details>")


def _notes_html(pt: PaperTable) -> str:
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in pt.notes) + "</ul>" if pt.notes else ""


def notebook_table(name: str, profile: str) -> HTML:
    """A notebook's view of table `name`: the report's paper-shaped table with its notes and context."""
    pt = paper_table(name, profile)
    return HTML(f"<style>{STYLE}</style><div class='vlpt'>{table_html(pt)}{_notes_html(pt)}{_context_html(pt)}</div>")


def verdicts_html(verdicts: list[claims.Verdict]) -> str:
    """Every claim: both sides (mean ± std, seeds), the difference, its SE, Welch's t, df and p, and the verdict."""
    def side(name, mean, std, n):
        if _missing(mean):
            return f"<span class='na'>{NA}</span>"
        if is_zero_shot(name.split()[0]):
            return f"{mean:.2f} (zero-shot)"
        return f"{mean:.2f}" + (f" <span class='sd'>± {std:.2f}</span>" if n > 1 else "") + f" <span class='sd'>n={n}</span>"

    rows = []
    for v in verdicts:
        c = v.claim
        diff = NA if _missing(v.diff) else _signed(v.diff, 2)
        se = NA if _missing(v.se) else f"{v.se:.2f}"
        rows.append(f"<tr><td class='label'>{html.escape(TABLES[v.table].title)}</td>"
                    f"<td class='text'>{html.escape(c.text)}<br><span class='sd'>{html.escape(c.left)} {c.op} "
                    f"{html.escape(c.right)}</span></td>"
                    f"<td>{side(c.left, v.left_mean, v.left_std, v.left_n)}</td>"
                    f"<td>{side(c.right, v.right_mean, v.right_std, v.right_n)}</td><td>{diff}</td><td>{se}</td>"
                    f"<td>{html.escape(v.statistics() or NA)}</td>"
                    f"<td class='label {VERDICT_CLASS.get(v.word, 'none')}'><b>{html.escape(v.word)}</b></td></tr>")
    return ("<table class='vlpt'><tr><th class='label'>table</th><th class='label'>the paper's claim</th>"
            "<th>ours: left</th><th>ours: right</th><th>difference</th><th>SE</th><th>Welch's t-test</th>"
            "<th class='label'>verdict</th></tr>"
            + "".join(rows) + "</table>")


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(path.stem)}'>"


def footer_html(meta: dict | None, index_link: bool = False) -> str:
    """Where the numbers come from: commit, packages, device, profile, caps, wall time (run_metadata.json)."""
    back = "<a href='index.html'>← report index</a> · " if index_link else ""
    if not meta:
        return f"<footer class='vlpt'>{back}no run metadata</footer>"
    git = meta.get("git") or {}
    commit = (git.get("commit") or "no git checkout")[:10] + (" (with uncommitted changes)" if git.get("dirty") else "")
    packages = ", ".join(f"{k} {v}" for k, v in (meta.get("packages") or {}).items() if v)
    device = meta.get("device") or {}
    seconds = sum((r.get("seconds") or 0) for r in (meta.get("notebooks") or {}).values())
    caps = f" · caps {html.escape(json.dumps(meta['caps']))}" if meta.get("caps") else ""
    return (f"<footer class='vlpt'>{back}profile <b>{html.escape(str(meta.get('profile')))}</b> · commit "
            f"<code>{html.escape(commit)}</code> · {html.escape(packages)} · device {html.escape(str(device.get('type')))}"
            f" ({html.escape(str(device.get('name')))}) · the run's notebooks {seconds:.0f} s (summed){caps} · "
            f"metadata of {html.escape(str(meta.get('written')))}: <a href='run_metadata.json'>run_metadata.json</a>"
            f"</footer>")


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1320px;margin:1.5em auto;padding:0 1em;color:#222}}
.note{{background:#fff4d6;padding:.6em 1em;border-left:4px solid #e0a800}}
.empty{{color:#a00}} .warn{{background:#fde2e2;padding:.5em 1em;border-left:4px solid #c00}} img{{max-width:100%;display:block;margin:.6em 0}} .src{{font-size:12px;color:#555}}
.scroll{{overflow-x:auto}} footer{{margin-top:2em;padding-top:.6em;border-top:1px solid #ccc;color:#555;font-size:12px}}
{style}</style></head><body>{body}</body></html>"""


# ----------------------------------------------------------------------------- Markdown
def table_markdown(pt: PaperTable) -> str:
    """The same table as Markdown; three column levels (Table 1) become one table per metric."""
    fields = _fields(pt.name)
    groups = _groups(pt.frame)
    if not groups:
        return ""
    parts = [[g for g in groups if g[1:] == sub] for sub in dict.fromkeys(g[1:] for g in groups)]
    out = []
    for part in parts:
        title = f"**{part[0][1]}**\n\n" if len(part[0]) > 1 else ""
        header = [_row_label(pt.name)] + [f"{g[0]} {FIELD_LABELS[f]}" for g in part for f in fields]
        lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
        for label, row in pt.frame.iterrows():
            cells = [_cell_text(f, {k: row[(*g, k)] for k in ("ours", "std", "paper", "delta")}, markdown=True)
                     for g in part for f in fields]
            lines.append("| " + " | ".join([str(label)] + cells) + " |")
        out.append(title + "\n".join(lines))
    return "\n\n".join(out)


def verdicts_markdown(verdicts: list[claims.Verdict]) -> str:
    """The verdicts as a Markdown table: the claim, both sides (mean ± std, seeds), difference, SE, t-test, verdict."""
    def side(name, mean, std, n):
        if _missing(mean):
            return NA
        if is_zero_shot(name.split()[0]):
            return f"{mean:.2f} (zero-shot)"
        return f"{mean:.2f}" + (f" ± {std:.2f}" if n > 1 else "") + f" (n={n})"

    lines = ["| table | the paper's claim | ours: left | ours: right | difference | SE | Welch's t-test | verdict |",
             "|:---|:---|---:|---:|---:|---:|---:|:---|"]
    for v in verdicts:
        c = v.claim
        lines.append(f"| {TABLES[v.table].title} | {c.text} (`{c.left} {c.op} {c.right}`) | "
                     f"{side(c.left, v.left_mean, v.left_std, v.left_n)} | "
                     f"{side(c.right, v.right_mean, v.right_std, v.right_n)} | "
                     f"{NA if _missing(v.diff) else _signed(v.diff, 2)} | {NA if _missing(v.se) else f'{v.se:.2f}'} | "
                     f"{v.statistics() or NA} | **{v.word}** |")
    return "\n".join(lines)


def summary_markdown(profile: str, meta: dict | None) -> str:
    """results/<profile>/summary.md: the claims' verdicts and every table in its paper's shape."""
    git = (meta or {}).get("git") or {}
    lines = [f"# vlpt workbook: results of the `{profile}` profile", "", f"> {profile_note(profile, meta)}", "",
             f"Commit `{(git.get('commit') or 'unknown')[:10]}`{' (with uncommitted changes)' if git.get('dirty') else ''}"
             f", device {((meta or {}).get('device') or {}).get('name', 'unknown')}; all the run's metadata: "
             f"`run_metadata.json`; figures: `figures/`. Not committed: the HTML report (`python -m vlpt_lib report "
             f"--profile {profile}` renders it into `report/`) and the executed notebooks (`reproduce` writes them).",
             "",
             "## The papers' claims on this run", "", claims.RULE, "", verdicts_markdown(all_verdicts(profile))]
    for name, spec in shown_tables(profile):
        pt = paper_table(name, profile)
        lines += ["", f"## {spec.title}", ""]
        if not pt.measured:
            lines += ["Not run yet in this profile: paper numbers only.", ""]
        note = last_run_note(name, profile)
        if note:
            lines += [f"> **Warning.** {note}", ""]
        lines += [table_markdown(pt), ""] + [f"- {n}" for n in pt.notes]
        lines += ["", f"Data: `tables/{name}.csv`" + (f", paper: `results/reference/{name}.csv`" if spec.paper else "")]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the report
def shown_tables(profile: str) -> list:
    """(name, Table) of the tables the report shows: the paper tables first, then the workbook's own checks."""
    ordered = sorted(TABLES.items(), key=lambda item: not item[1].paper)
    return [(n, s) for n, s in ordered if s.paper or profile != "paper"]


def all_verdicts(profile: str) -> list[claims.Verdict]:
    """The verdict on every claim of every table shown."""
    return [v for name, _ in shown_tables(profile) for v in claims.verdicts_of(name, profile)]


class _NoAltTextWarning(logging.Filter):
    """nbconvert warns for every plot (outputs carry no alt text) and fills in a generic one: nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Alternative text is missing" not in record.getMessage()


NO_ALT_TEXT_WARNING = _NoAltTextWarning()  # one instance: addFilter skips a filter it already holds


def _render_notebook(src: Path, dst: Path, footer: str, banner: str) -> None:
    exporter = HTMLExporter(exclude_input=True, exclude_output_prompt=True, embed_images=True)
    exporter.log.addFilter(NO_ALT_TEXT_WARNING)
    body, _ = exporter.from_notebook_node(nbformat.read(src, as_version=4))
    back = (f"<div class='vlpt' style='margin:1em 2em'><style>{STYLE}</style><p><a href='index.html'>← report index"
            f"</a></p><p class='note'>{html.escape(banner)}</p></div>")  # the index's profile banner on every page
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + back, body, count=1)
    body = body.replace("</body>", f"<div style='margin:1em 2em'><style>{STYLE}</style>{footer}</div></body>", 1)
    atomic_write(dst, body)


def _table_section(name: str, profile: str, out: Path) -> str:
    spec = TABLES[name]
    pt = paper_table(name, profile)
    links = []
    if (tables_dir(profile) / f"{name}.csv").exists():
        shutil.copyfile(tables_dir(profile) / f"{name}.csv", out / "tables" / f"{name}.csv")
        links.append(f"<a href='tables/{name}.csv'>ours: tables/{name}.csv</a>")
    reference = paths.reference_dir() / f"{name}.csv"
    if spec.paper and reference.exists():
        shutil.copyfile(reference, out / "reference" / f"{name}.csv")
        links.append(f"<a href='reference/{name}.csv'>paper: reference/{name}.csv</a>")
    status = "" if pt.measured else "<p class='empty'>Not run yet in this profile: paper numbers only.</p>"
    note = last_run_note(name, profile)
    status += f"<p class='warn'><b>Warning.</b> {html.escape(note)}</p>" if note else ""
    figs = [figures_dir(profile) / f"{f}.png" for f in spec.figures]
    imgs = "".join(_img(f) for f in figs if f.exists())
    page = out / f"{spec.notebook}.html"  # rendered only from an executed notebook: no link to a missing page
    notebook = [f"<a href='{spec.notebook}.html'>notebook {spec.notebook}</a>"] if page.exists() else []
    return (f"<h2 id='{name}'>{html.escape(spec.title)}</h2>{status}<div class='scroll'>{table_html(pt)}</div>"
            f"{_notes_html(pt)}<p class='src'>{' · '.join(links + notebook)}</p>{_context_html(pt)}{imgs}")


def _notebook_rows(profile: str, out: Path, footer: str, meta: dict | None) -> str:
    rows = []
    for nb in sorted(paths.executed_dir(profile).glob("*.ipynb")):
        record_path = nb.with_suffix(".run.json")
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        try:
            _render_notebook(nb, out / f"{nb.stem}.html", footer, profile_note(profile, meta))
            link = f"<a href='{nb.stem}.html'>{html.escape(nb.stem)}</a>"
        except Exception as err:  # a broken notebook must not take the whole report down
            link = f"{html.escape(nb.stem)} (not rendered: {html.escape(str(err))})"
        params = html.escape(json.dumps(record.get("params", {}), default=str))
        rows.append(f"<tr><td class='label'>{link}</td><td class='label'>{record.get('status', '?')}</td>"
                    f"<td>{record.get('seconds', '')}</td><td class='label'>{record.get('finished', '')}</td>"
                    f"<td class='text'><details><summary>parameters</summary><code>{params}</code></details></td></tr>")
    ran = (meta or {}).get("notebooks") or {}
    none = (f"no executed notebooks in results/{profile}/notebooks (a checkout holds the results, not the executed "
            f"copies: `python -m vlpt_lib reproduce --profile {profile}` writes them)"
            + (f"; the run recorded in run_metadata.json executed {len(ran)} of them" if ran else ""))
    return "".join(rows) or f"<tr><td colspan='5' class='text'>{html.escape(none)}</td></tr>"


MARK = ".vlpt-report"  # written into every report folder: a folder holding it may be replaced by the next report


class ReportError(Exception):
    """A report folder that may not be written (one line: the folder, why, and what to do)."""


def prepare_out(out: str | Path) -> Path:
    """An empty folder for `report --out`: a new or empty one, or one an earlier report made (emptied first, so
    nothing stale is published). Refused: a file, any folder inside the results root, a non-empty folder that
    `report` did not make, a place that cannot be written."""
    out = Path(out).expanduser()
    root = paths.results_root().resolve()
    where = out.resolve()
    if where == root or root in where.parents or where in root.parents:
        raise ReportError(f"--out {out} is inside or around the results folder {root}: the report would overwrite "
                          "results. Without --out it goes to results/<profile>/report; to publish, name a folder "
                          "elsewhere, e.g. --out site/")
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder: name a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARK).is_file():
            raise ReportError(f"--out {out} is not empty and was not written by `report`: name a new or empty "
                              f"folder, or delete {out} first to replace it")
        for child in out.iterdir():  # an earlier report: replaced whole
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARK).write_text("written by `python -m vlpt_lib report`; the next report here replaces the folder\n")
    except OSError as err:
        raise ReportError(f"--out {out} cannot be written ({err.strerror or err}): name a folder you can write to") \
            from None
    return out


def render_report(profile: str, out: str | Path | None = None) -> Path:
    """Write the report folder and return its index. Without `out`: results/<profile>/report/ and
    results/<profile>/summary.md (and run_metadata.json when no run wrote it). With `out` (prepare_out's rules):
    that folder alone, nothing else. The folder holds everything it shows (figures embedded, CSVs and
    run_metadata.json copied)."""
    publish = out is not None
    out = prepare_out(out) if publish else paths.results_dir(profile) / "report"
    for sub in ("tables", "reference"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    meta = load_run_metadata(profile)
    if meta is None and not publish:  # rendered without a reproduce run: describe the results as they are
        write_run_metadata(profile)
        meta = load_run_metadata(profile)
    elif meta is None:
        meta = run_metadata(profile)
    atomic_write(out / "run_metadata.json", json.dumps(meta, indent=2, default=str))
    footer = footer_html(meta)
    notebooks = _notebook_rows(profile, out, footer_html(meta, index_link=True), meta)
    sections = "".join(_table_section(name, profile, out) for name, _ in shown_tables(profile))
    toc = " · ".join(f"<a href='#{n}'>{html.escape(s.title)}</a>" for n, s in shown_tables(profile))
    body = f"""<h1>vlpt workbook report: <code>{profile}</code> profile</h1>
<p class="note">{html.escape(profile_note(profile, meta))}</p>
<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. Tables: {toc}. Each table: <b>ours</b> = mean ± std over seeds,
<b>paper</b> = the number the paper reports, <b>Δ</b> = ours − paper. The same content as Markdown:
<code>summary.md</code> in results/{profile}/.</p>
<h2>Do the papers' claims show here?</h2><p>{html.escape(claims.RULE.replace('**', ''))}</p>
<div class='scroll'>{verdicts_html(all_verdicts(profile))}</div>
{sections}
<h2>Notebooks</h2><table class="vlpt"><tr><th class='label'>notebook</th><th class='label'>status</th><th>seconds</th>
<th class='label'>finished</th><th class='label'>parameters</th></tr>{notebooks}</table>
{footer}"""
    index = atomic_write(out / "index.html", PAGE.format(title=f"vlpt workbook: {profile}", style=STYLE, body=body))
    summary = summary_markdown(profile, meta)
    if not publish:
        atomic_write(paths.results_dir(profile) / "summary.md", summary)
    atomic_write(out / "summary.md", summary)
    return index
