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

import jinja2
import nbformat
import pandas as pd
from IPython.display import HTML
from markupsafe import Markup
from nbconvert import HTMLExporter

from ..utils.io import atomic_write
from . import claims, paths
from .metadata import load_run_metadata, recipe_cards, run_metadata, write_run_metadata
from .recipe import DEVIATES
from .tables import FIELDS, SOURCE, TABLES, PaperTable, figures_dir, is_zero_shot, paper_table, tables_dir

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


DEVIATION_WHY = {
    "smoke": "the smoke profile shrinks the recipe to a few steps, only to test that the code runs",
    "mini": "the mini profile shortens the recipe to fit a CPU",
    "paper": "the paper profile runs the paper recipe: a mark is a notebook parameter that changed it",
}


def deviation_note(profile: str, meta: dict | None) -> str:
    """The one sentence explaining the recipe cards' deviation column."""
    why = ("the dry run shrinks the recipe and caps its steps" if (meta or {}).get("caps")
           else DEVIATION_WHY.get(profile, "a notebook parameter or the profile changed it"))
    return f"{DEVIATES}: this run's value differs from the paper recipe; {why}."


VERDICT_CLASS = {"holds": "holds", "reversed": "reversed", "not resolved": "open"}
NA = "—"  # an unmeasured number, everywhere (HTML, Markdown, notebooks)
DELTA = "Δ"

STYLE = """
/* !important: JupyterLab's and nbconvert's own table rules must not realign the notebooks' copies */
.vlpt{font-family:system-ui,sans-serif;font-size:12.5px}
table.vlpt{border-collapse:collapse;margin:.4em 0 .2em}
table.vlpt th,table.vlpt td{padding:2px 6px;border-bottom:1px solid #e6e6e6;white-space:nowrap}
table.vlpt thead th{background:#f5f5f5;text-align:center!important;font-weight:600}
table.vlpt th.row_heading{text-align:left!important;font-weight:normal;background:#fff}
table.vlpt th.row_heading.level0{font-weight:600;vertical-align:top}
table.vlpt th.blank{background:#fff}
table.vlpt td{text-align:right!important;font-variant-numeric:tabular-nums}
table.vlpt td.text{text-align:left!important;white-space:normal}
table.vlpt td.first{border-left:2px solid #bbb}
table.vlpt td.top{border-top:2px solid #999}
table.vlpt td.avg{background:#fafafa}
table.vlpt td.avg.ours{font-weight:600}
table.vlpt .sd{color:#777;font-size:10.5px;font-weight:normal}
table.vlpt .pm{display:inline-block;width:3.9em;text-align:left;white-space:pre}
table.vlpt td.label{text-align:left!important}
table.vlpt td.paper{color:#444}
table.vlpt td.delta{color:#aaa;font-size:10px}
table.vlpt .na{color:#bbb;font-weight:normal}
table.vlpt td.holds{background:#dff3df} table.vlpt td.reversed{background:#f8dcdc}
table.vlpt td.open{background:#fff2cc} table.vlpt td.none{background:#eee}
table.vlpt.recipe thead th{text-align:left!important}
table.vlpt td.deviates{color:#a40000;min-width:4.5em;max-width:14em}
table.vlpt td.source{color:#666;font-size:11px;max-width:44em}
.delta-key{color:#999;font-size:.85em}
.notes{color:#444;font-size:12px;margin:.2em 0 .6em;padding-left:1.2em}
"""

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("vlpt_lib.workbook", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined)


# ----------------------------------------------------------------------------- numbers as text
def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _signed(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}".replace("-", "−")


def _na(html_: bool) -> str:
    return f"<span class='na'>{NA}</span>" if html_ else NA


def _ours(v, std, html_: bool) -> str:
    """Our mean, ± its std over seeds where there is one."""
    if _missing(v):
        return _na(html_)
    if not html_:
        return f"{v:.1f}" if _missing(std) else f"{v:.1f} ± {std:.1f}"
    return f"{v:.1f}<span class='sd pm'>{'' if _missing(std) else f' ± {std:.1f}'}</span>"  # means aligned


def _paper(v, html_: bool) -> str:
    return _na(html_) if _missing(v) else f"{v:.2f}"


def _delta(v, html_: bool) -> str:
    return _na(html_) if _missing(v) else _signed(v)


def _ours_paper(stats: dict) -> str:
    """Markdown: "ours ± std (paper)", the paper's value left out where it has none."""
    ours = _ours(stats["ours"], stats["std"], False)
    return ours if _missing(stats["paper"]) else f"{ours} ({stats['paper']:.2f})"


def _stats(pt: PaperTable, row: str, group: tuple) -> dict:
    return {f: pt.frame.at[row, (*group, f)] for f in FIELDS}


# ----------------------------------------------------------------------------- the paper's shape
# Each layout as a frame of display strings (HTML fragments or Markdown text) with row / column labels; the HTML
# one also gives each cell its CSS classes. Table 1: a block per dataset (the average first, as the paper prints
# it), its methods as rows, Base / New / H columns of ours, paper and Δ. Tables 2 and 3: methods as rows (ours,
# then the paper's value and Δ beneath), columns the source and the targets (the average last).
B2N_COLUMNS = (("Base", "base"), ("New", "new"), ("H", "H"))


def _shape_html(pt: PaperTable) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display frame, classes frame) of `pt` in its paper's shape, as HTML cells."""
    paper = TABLES[pt.name].paper
    fields = ("ours", "paper", "delta") if paper else ("ours",)
    label = {"ours": "ours", "paper": "paper", "delta": DELTA}
    text = {"ours": lambda s: _ours(s["ours"], s["std"], True), "paper": lambda s: _paper(s["paper"], True),
            "delta": lambda s: _delta(s["delta"], True)}
    rows, cells, classes = [], [], []
    if pt.layout == "base2new":
        columns = [(head, label[f]) for head, _ in B2N_COLUMNS for f in fields]
        blocks = [pt.average] + [d for d in pt.frame.index if d != pt.average]
        for block in blocks:
            for i, m in enumerate(pt.methods):
                stats = [_stats(pt, block, (m, key)) for _, key in B2N_COLUMNS]
                rows.append((block, m))
                cells.append([text[f](s) for s in stats for f in fields])
                extra = (" top" if i == 0 else "") + (" avg" if block == pt.average else "")
                classes.append([f + (" first" if f == "ours" else "") + extra for _ in stats for f in fields])
    elif pt.layout == "transfer":
        source = pt.source + SOURCE
        targets = [d for d in pt.frame.index if d not in (source, pt.average)]
        order = [source] + targets + [pt.average]
        columns = [("Source", pt.source)] + [("Target", d) for d in targets + [pt.average]]
        for m in pt.methods:
            stats = [_stats(pt, d, (m,)) for d in order]
            published = any(not _missing(s["paper"]) for s in stats)
            for kind in fields if published else ("ours",):
                rows.append((m, label[kind]))  # the paper's value and Δ beneath ours, aligned with our mean
                pad = "" if kind == "ours" else "<span class='sd pm'></span>"
                cells.append([text[kind](s) + pad for s in stats])
                extra = (" top" if kind == "ours" else "")
                classes.append([kind + extra + (" first" if d in (order[1], pt.average) else "")
                                + (" avg" if d == pt.average else "") for d in order])
    else:  # "methods": a row per method, a column group per metric; "datasets": a row per dataset, one per method
        groups = list(dict.fromkeys(c[:-1] for c in pt.frame.columns))
        columns = [(g[0], label[f]) for g in groups for f in fields]
        for row in pt.frame.index:
            rows.append((row,))
            stats = [_stats(pt, row, g) for g in groups]
            cells.append([text[f](s) for s in stats for f in fields])
            classes.append([f + (" first" if f == "ours" else "") for _ in stats for f in fields])
    index = pd.MultiIndex.from_tuples(rows) if rows else pd.Index([])
    cols = pd.MultiIndex.from_tuples(columns) if rows else pd.Index([])
    return pd.DataFrame(cells, index=index, columns=cols), pd.DataFrame(classes, index=index, columns=cols)


def _styled(frame: pd.DataFrame, classes: pd.DataFrame, uid: str, index: bool = True) -> str:
    """A frame of HTML cells as a table through pandas' Styler: labels escaped, cells as given (already escaped),
    each cell's CSS classes from `classes`; Δ's labels as quiet as its numbers; with row labels in two levels, a
    rule above each block of the first. index=False: no row labels."""
    style = (frame.style.format_index(escape="html", axis=0).format_index(escape="html", axis=1)
             .set_uuid(uid).set_table_attributes("class='vlpt'").set_td_classes(classes))
    style = style.hide(axis="index", names=True) if index else style.hide(axis="index")
    rows = list(frame.index)
    starts = {i for i in range(len(rows)) if index and frame.index.nlevels > 1 and i and rows[i][0] != rows[i - 1][0]}

    def css(labels: pd.Series, rule: bool = False) -> list[str]:
        return [("color:#aaa;font-weight:normal;font-size:10px;" if x == DELTA else "")
                + ("border-top:2px solid #999;" if rule and i in starts else "") for i, x in enumerate(labels)]

    style = style.apply_index(css, axis="columns", level=frame.columns.nlevels - 1)
    if index:
        style = style.apply_index(css, axis="index", level=frame.index.nlevels - 1, rule=True)
        if starts:
            style = style.apply_index(lambda v: ["border-top:2px solid #999" if i in starts else ""
                                                 for i in range(len(v))], axis="index", level=0)
    return style.to_html()


def _uid(name: str) -> str:
    return re.sub(r"\W", "_", name)


def table_html(pt: PaperTable) -> str:
    """Table `pt` in its paper's shape as HTML (pandas Styler); "" for a table with nothing to show yet."""
    if pt.frame.empty:
        return ""
    frame, classes = _shape_html(pt)
    return _styled(frame, classes, _uid(pt.name))


def _context_html(pt: PaperTable) -> str:
    """The reference rows of methods this workbook does not run."""
    if pt.context.empty:
        return ""
    ctx = pt.context.reset_index(drop=True)
    frame = pd.DataFrame({"method": ctx["method"], "dataset": ctx["dataset"],
                          "metric": ctx["split"] + " " + ctx["metric"], "source": ctx["source"]}).map(html.escape)
    frame.insert(3, "paper", ctx["value"].map(lambda v: _paper(v, True)))
    classes = pd.DataFrame("text", index=frame.index, columns=frame.columns).assign(paper="")
    return _styled(frame, classes, _uid(pt.name) + "_context", index=False)


def _notes_html(pt: PaperTable) -> str:
    return "<ul class='notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in pt.notes) + "</ul>" if pt.notes else ""


def notebook_table(name: str, profile: str) -> HTML:
    """A notebook's view of table `name`: the report's paper-shaped table with its notes and context."""
    pt = paper_table(name, profile)
    context = _context_html(pt)
    context = (f"<details><summary>Other methods' published numbers (context; not run by this workbook)</summary>"
               f"{context}</details>") if context else ""
    return HTML(f"<style>{STYLE}</style><div class='vlpt'>{table_html(pt)}{_notes_html(pt)}{context}</div>")


def _side(name: str, mean: float, std: float, n: int, html_: bool) -> str:
    """One side of a claim: mean ± std (seeds), or the zero-shot constant."""
    if _missing(mean):
        return _na(html_)
    if is_zero_shot(name.split()[0]):
        return f"{mean:.2f} (zero-shot)"
    spread = f" ± {std:.2f}" if n > 1 else ""
    return (f"{mean:.2f}<span class='sd'>{spread} n={n}</span>" if html_ else f"{mean:.2f}{spread} (n={n})")


VERDICT_COLUMNS = ["table", "the paper's claim", "ours: left", "ours: right", "difference", "SE", "Welch's t-test",
                   "verdict"]


def _verdict_frame(verdicts: list[claims.Verdict], html_: bool) -> pd.DataFrame:
    esc = html.escape if html_ else str
    rows = []
    for v in verdicts:
        c = v.claim
        sides = f"{c.left} {c.op} {c.right}"
        claim = (f"{esc(c.text)}<br><span class='sd'>{esc(sides)}</span>" if html_ else f"{c.text} (`{sides}`)")
        rows.append([esc(TABLES[v.table].title), claim, _side(c.left, v.left_mean, v.left_std, v.left_n, html_),
                     _side(c.right, v.right_mean, v.right_std, v.right_n, html_),
                     _na(html_) if _missing(v.diff) else _signed(v.diff, 2),
                     _na(html_) if _missing(v.se) else f"{v.se:.2f}", esc(v.statistics()) or _na(html_),
                     f"<b>{esc(v.word)}</b>" if html_ else f"**{v.word}**"])
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def verdicts_html(verdicts: list[claims.Verdict]) -> str:
    """Every claim: both sides (mean ± std, seeds), the difference, its SE, Welch's t, df and p, and the verdict."""
    frame = _verdict_frame(verdicts, True)
    classes = pd.DataFrame([["label", "text", "", "", "", "", "", f"label {VERDICT_CLASS.get(v.word, 'none')}"]
                            for v in verdicts], index=frame.index, columns=frame.columns)
    return _styled(frame, classes, "verdicts", index=False)


def _img(path: Path) -> dict:
    return {"data": base64.b64encode(path.read_bytes()).decode(), "alt": path.stem}


def footer_html(meta: dict | None, index_link: bool = False) -> str:
    """Where the numbers come from: commit, packages, device, profile, caps, wall time (run_metadata.json)."""
    meta = meta or {}
    git = meta.get("git") or {}
    commit = (git.get("commit") or "no git checkout")[:10] + (" (with uncommitted changes)" if git.get("dirty") else "")
    return TEMPLATES.get_template("footer.html.j2").render(
        meta=meta, index_link=index_link, commit=commit,
        packages=", ".join(f"{k} {v}" for k, v in (meta.get("packages") or {}).items() if v),
        device={"type": None, "name": None, **(meta.get("device") or {})},
        seconds=sum((r.get("seconds") or 0) for r in (meta.get("notebooks") or {}).values()),
        caps=json.dumps(meta.get("caps")))


# ----------------------------------------------------------------------------- recipe cards
RECIPE_COLUMNS = ("key", "this run", "paper", "deviates", "source")


def _grouped(values: dict[str, str]) -> str:
    """One value when every label has it, else "labels: value; ..." (labels lacking the key left out)."""
    by: dict[str, list[str]] = {}
    for label, value in values.items():
        if value != "":
            by.setdefault(value, []).append(label)
    return next(iter(by)) if len(by) == 1 else "; ".join(f"{', '.join(ls)}: {v}" for v, ls in by.items())


def recipe_compact(records: list[dict]) -> tuple[pd.DataFrame, str]:
    """(the rows of a recipe card (metadata.card_records) that deviate from the paper recipe, the labels' values
    in one column; the line counting the rows left out). A row without a paper value is a workbook parameter
    (data, seed, the row itself)."""
    rows = [[r["key"], _grouped(r["values"]), r["paper"], r["deviates"], r["source"]] for r in records if r["deviates"]]
    equal = sum(1 for r in records if not r["deviates"] and r["paper"] != "")
    params = sum(1 for r in records if r["paper"] == "")
    rest = f" and {params} are workbook parameters (data, seed, row)" if params else ""
    note = (f"{equal} other values equal the paper recipe{rest}: all in run_metadata.json." if rows else
            f"Every value equals the paper recipe ({equal} values{rest}): all in run_metadata.json.")
    return pd.DataFrame(rows, columns=list(RECIPE_COLUMNS)), note


def _card_title(job: str, records: list[dict]) -> str:
    labels = list(records[0]["values"]) if records else []
    return f"Recipe of the {job} runs ({', '.join(labels)}; each its first seed's config)"


def recipe_html(records: list[dict], uid: str = "recipe") -> tuple[str, str]:
    """(the compact card as an HTML table through pandas' Styler, left-aligned, "" when nothing deviates; its
    note line)."""
    frame, note = recipe_compact(records)
    if frame.empty:
        return "", note
    classes = pd.DataFrame("text", index=frame.index, columns=frame.columns)
    classes["deviates"] = "text deviates"
    classes["source"] = "text source"
    table = _styled(frame.map(html.escape), classes, _uid(uid), index=False)
    return table.replace("class='vlpt'", "class='vlpt recipe'", 1), note  # headers left-aligned too


def recipe_markdown(job: str, records: list[dict]) -> str:
    """The compact card as Markdown (every column left-aligned) under its title, with its note line."""
    frame, note = recipe_compact(records)
    head = f"**{_card_title(job, records)}**"
    if frame.empty:
        return f"{head}. {note}"
    table = frame.map(lambda v: v.replace("|", "\\|")).to_markdown(index=False, disable_numparse=True,
                                                                  colalign=["left"] * frame.shape[1])
    return f"{head}\n\n{table}\n\n{note}"


def recipes_of(profile: str, meta: dict | None) -> dict:
    """{table: {job: card records}}: run_metadata.json's, else (a file written before cards existed) computed."""
    return meta["recipes"] if meta and "recipes" in meta else recipe_cards(profile)


# ----------------------------------------------------------------------------- Markdown
def _markdown(frame: pd.DataFrame, left: int = 1) -> str:
    """DataFrame.to_markdown of display text: the first `left` columns left-aligned, numbers right-aligned."""
    align = ["left"] * left + ["right"] * (frame.shape[1] - left)
    return frame.to_markdown(index=False, disable_numparse=True, colalign=align)


def table_markdown(pt: PaperTable) -> str:
    """The same table as Markdown, in the same shape; each cell "ours ± std (paper)", Δ = ours − paper apart and
    last (Table 1: its last column; Tables 2, 3 and the MVP tables: their own table after the numbers)."""
    if pt.frame.empty:
        return ""
    paper = TABLES[pt.name].paper
    cell = _ours_paper if paper else (lambda s: _ours(s["ours"], s["std"], False))
    if pt.layout == "base2new":
        rows = []
        for block in [pt.average] + [d for d in pt.frame.index if d != pt.average]:
            for i, m in enumerate(pt.methods):
                stats = [_stats(pt, block, (m, key)) for _, key in B2N_COLUMNS]
                delta = " / ".join(_delta(s["delta"], False) for s in stats)
                rows.append([f"**{block}**" if i == 0 else "", m] + [cell(s) for s in stats]
                            + [delta if any(not _missing(s["delta"]) for s in stats) else NA])
        head = ["dataset", "method"] + [f"{h}: ours (paper)" for h, _ in B2N_COLUMNS] + [f"{DELTA} base / new / H"]
        return _markdown(pd.DataFrame(rows, columns=head), left=2)
    if pt.layout == "transfer":
        source = pt.source + SOURCE
        order = [source] + [d for d in pt.frame.index if d not in (source, pt.average)] + [pt.average]
        head = ["method"] + [f"{pt.source} (source)"] + order[1:]
        stats = {m: [_stats(pt, d, (m,)) for d in order] for m in pt.methods}
        main = pd.DataFrame([[m] + [cell(s) for s in stats[m]] for m in pt.methods], columns=head)
        published = [m for m in pt.methods if any(not _missing(s["paper"]) for s in stats[m])]
        delta = pd.DataFrame([[m] + [_delta(s["delta"], False) for s in stats[m]] for m in published],
                             columns=[DELTA] + head[1:])
        return _markdown(main) + ("\n\n" + _markdown(delta) if published else "")
    groups = list(dict.fromkeys(c[:-1] for c in pt.frame.columns))
    first = "method" if pt.layout == "methods" else "dataset"
    stats = {r: [_stats(pt, r, g) for g in groups] for r in pt.frame.index}
    head = [first] + [f"{g[0]}: ours (paper)" if paper else g[0] for g in groups]
    main = _markdown(pd.DataFrame([[r] + [cell(s) for s in stats[r]] for r in pt.frame.index], columns=head))
    if not paper:
        return main
    delta = pd.DataFrame([[r] + [_delta(s["delta"], False) for s in stats[r]] for r in pt.frame.index
                          if any(not _missing(s["delta"]) for s in stats[r])], columns=[DELTA] + [g[0] for g in groups])
    return main + ("\n\n" + _markdown(delta) if len(delta) else "")


def verdicts_markdown(verdicts: list[claims.Verdict]) -> str:
    """The verdicts as a Markdown table: the claim, both sides (mean ± std, seeds), difference, SE, t-test, verdict."""
    frame = _verdict_frame(verdicts, False)
    return frame.to_markdown(index=False, disable_numparse=True,
                             colalign=["left", "left"] + ["right"] * 5 + ["left"])


def summary_markdown(profile: str, meta: dict | None) -> str:
    """results/<profile>/summary.md: the claims' verdicts and every table in its paper's shape, its recipe card."""
    git = (meta or {}).get("git") or {}
    recipes = recipes_of(profile, meta)
    lines = [f"# vlpt workbook: results of the `{profile}` profile", "", f"> {profile_note(profile, meta)}", "",
             f"Commit `{(git.get('commit') or 'unknown')[:10]}`{' (with uncommitted changes)' if git.get('dirty') else ''}"
             f", device {((meta or {}).get('device') or {}).get('name', 'unknown')}; all the run's metadata: "
             f"`run_metadata.json`; figures: `figures/`. Not committed: the HTML report (`python -m vlpt_lib report "
             f"--profile {profile}` renders it into `report/`) and the executed notebooks (`reproduce` writes them).",
             "", f"Each cell: ours (mean ± std over seeds) and, in brackets, the paper's number; {DELTA} = ours − "
             f"paper, apart and last; {NA} = not measured. Under each table, its recipe card: the values its runs "
             f"change from the papers' recipes (all values: `run_metadata.json`, key `recipes`). "
             f"{deviation_note(profile, meta)}", "",
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
        for job, records in recipes.get(name, {}).items():
            lines += ["", recipe_markdown(job, records)]
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


def _table_section(name: str, profile: str, out: Path, recipes: dict | None = None) -> dict:
    """What the page template shows of table `name`: its table, notes, links, recipe cards ({job: card records}),
    context, figures, warning."""
    spec = TABLES[name]
    pt = paper_table(name, profile)
    links = []
    if (tables_dir(profile) / f"{name}.csv").exists():
        shutil.copyfile(tables_dir(profile) / f"{name}.csv", out / "tables" / f"{name}.csv")
        links.append((f"tables/{name}.csv", f"ours: tables/{name}.csv"))
    reference = paths.reference_dir() / f"{name}.csv"
    if spec.paper and reference.exists():
        shutil.copyfile(reference, out / "reference" / f"{name}.csv")
        links.append((f"reference/{name}.csv", f"paper: reference/{name}.csv"))
    if (out / f"{spec.notebook}.html").exists():  # rendered only from an executed notebook: no link to a missing page
        links.append((f"{spec.notebook}.html", f"notebook {spec.notebook}"))
    figures = [figures_dir(profile) / f"{f}.png" for f in spec.figures]
    return {"name": name, "title": spec.title, "measured": pt.measured, "warning": last_run_note(name, profile),
            "table": Markup(table_html(pt)), "notes": pt.notes, "links": links, "context": Markup(_context_html(pt)),
            "images": [_img(f) for f in figures if f.exists()],
            "recipes": [_recipe_section(name, job, records) for job, records in (recipes or {}).items()]}


def _recipe_section(name: str, job: str, records: list[dict]) -> dict:
    table, note = recipe_html(records, f"{name}_{job}_recipe")
    return {"title": _card_title(job, records), "table": Markup(table), "note": note}


def _notebooks(profile: str, out: Path, footer: str, meta: dict | None) -> list[dict]:
    """Render every executed notebook of the profile beside the index; what the page template lists of each."""
    rows = []
    for nb in sorted(paths.executed_dir(profile).glob("*.ipynb")):
        record_path = nb.with_suffix(".run.json")
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        row = {"name": nb.stem, "link": None, "error": None, "status": record.get("status", "?"),
               "seconds": record.get("seconds", ""), "finished": record.get("finished", ""),
               "params": json.dumps(record.get("params", {}), default=str)}
        try:
            _render_notebook(nb, out / f"{nb.stem}.html", footer, profile_note(profile, meta))
            row["link"] = f"{nb.stem}.html"
        except Exception as err:  # a broken notebook must not take the whole report down
            row["error"] = str(err)
        rows.append(row)
    return rows


def _no_notebooks(profile: str, meta: dict | None) -> str:
    ran = (meta or {}).get("notebooks") or {}
    return (f"no executed notebooks in results/{profile}/notebooks (a checkout holds the results, not the executed "
            f"copies: `python -m vlpt_lib reproduce --profile {profile}` writes them)"
            + (f"; the run recorded in run_metadata.json executed {len(ran)} of them" if ran else ""))


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
    notebooks = _notebooks(profile, out, footer_html(meta, index_link=True), meta)
    recipes = recipes_of(profile, meta)
    page = TEMPLATES.get_template("report.html.j2").render(
        profile=profile, banner=profile_note(profile, meta), generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        style=Markup(STYLE), rule=claims.RULE.replace("**", ""), verdicts=Markup(verdicts_html(all_verdicts(profile))),
        deviation=deviation_note(profile, meta),
        tables=[_table_section(name, profile, out, recipes.get(name)) for name, _ in shown_tables(profile)],
        notebooks=notebooks,
        no_notebooks=_no_notebooks(profile, meta), footer=Markup(footer_html(meta)))
    index = atomic_write(out / "index.html", page)
    summary = summary_markdown(profile, meta)
    if not publish:
        atomic_write(paths.results_dir(profile) / "summary.md", summary)
    atomic_write(out / "summary.md", summary)
    return index
