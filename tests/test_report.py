"""The report renders a fabricated results folder self-contained, in the papers' shape, with run metadata; the
claims' verdicts follow the 2-standard-error rule (expected values worked out by hand below)."""
import base64
import json
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import nbformat
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vlpt_lib.utils import progress  # noqa: E402
from vlpt_lib.workbook import claims, metadata, paths, report, tables  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _acc(method, dataset, split, seed, value):
    return {"method": method, "dataset": dataset, "split": split, "seed": seed, "metric": "acc", "value": value,
            "run_id": f"prompt-{method}-{seed}"}


# Table 1 on two datasets: zero-shot CLIP once, CoOp and CoCoOp over seeds 1-3 (values chosen to average simply).
BASE2NEW = (
    [_acc("CLIP", d, s, 1, v) for d, s, v in [("ImageNet", "base", 60.0), ("ImageNet", "new", 70.0),
                                             ("EuroSAT", "base", 50.0), ("EuroSAT", "new", 60.0)]]
    + [_acc("CoOp", d, s, seed, v + seed) for seed in (1, 2, 3)
       for d, s, v in [("ImageNet", "base", 70.0), ("ImageNet", "new", 60.0),
                       ("EuroSAT", "base", 80.0), ("EuroSAT", "new", 50.0)]]
    + [_acc("CoCoOp", d, s, seed, v) for seed in (1, 2, 3)
       for d, s, v in [("ImageNet", "base", 70.0), ("ImageNet", "new", 66.0 + seed),
                       ("EuroSAT", "base", 80.0), ("EuroSAT", "new", 56.0 + seed)]]
)


def _mvp_rows(metric, values):
    return [{"method": m, "dataset": "ImageNet", "split": "val", "seed": seed, "metric": metric, "value": v,
             "run_id": f"finetune-{m}-{seed}"} for m, per_seed in values.items() for seed, v in enumerate(per_seed)]


@pytest.fixture
def fabricated(results_root):
    """A mini results folder: three tables, a figure and an executed notebook with an image output."""
    tables.save_table("cocoop_base2new", BASE2NEW, "mini")
    tables.save_table("cocoop_cross_dataset", [_acc(m, d, "test", seed, v + seed) for m in ("CoOp", "CoCoOp")
                                               for seed in (1, 2) for d, v in [("ImageNet", 70.0), ("EuroSAT", 40.0)]],
                      "mini")
    tables.save_table("imagenet_finetune", _mvp_rows("acc", {"MVP": [40.0, 42.0], "Normalised pixels": [30.0, 31.0],
                                                             "Scratch": [39.0, 43.0]}), "mini")
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    tables.save_figure(fig, "cocoop_base2new", "mini")
    plt.close(fig)
    executed = paths.executed_dir("mini")
    executed.mkdir(parents=True)
    png = (results_root / "mini" / "figures" / "cocoop_base2new.png").read_bytes()
    cell = nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"})])
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 20"), cell]),
                   executed / "20_cocoop_base2new.ipynb")
    (executed / "20_cocoop_base2new.run.json").write_text(json.dumps({"status": "ok", "seconds": 12.5}))
    run = paths.runs_dir("mini") / "prompt-CoOp-1"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"rows": [], "wall_s": 3.25}))
    return results_root


class _Tables(HTMLParser):
    """The <th> texts of each <table>, every <img> src and every <a> href of a page."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.links, self._in_th = [], [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "th":
            self._in_th = True
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "a":
            self.links.append(a.get("href", ""))

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = False

    def handle_data(self, data):
        if self._in_th and self.tables:
            self.tables[-1].append(data.strip())


def _parse(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    return p


def _section(text: str, name: str) -> str:
    start = text.index(f"<h2 id='{name}'>")
    end = text.find("<h2", start + 4)
    return text[start:end if end > 0 else None]


def test_report_is_self_contained_and_in_the_papers_shape(fabricated, tmp_path):
    out = tmp_path / "published"
    index = report.render_report("mini", out=out)
    text = index.read_text()
    page = _parse(text)
    assert page.imgs and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    for name in tables.PAPER_TABLES:  # every paper table: its first table has ours / paper / Δ columns
        headers = _parse(_section(text, name)).tables[0]
        assert {"ours", "paper", "Δ"} <= set(headers), (name, headers)
    visible = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"\bnan\b", visible, re.IGNORECASE), "missing values show as a dash"
    # Table 1 averages over the 2 datasets run, and says so
    assert "Average (2 datasets)" in text
    # every CSV and the metadata are linked and copied into the folder, so it opens anywhere
    for href in page.links:
        if href.endswith((".csv", ".json")):
            assert (out / href).exists(), href
    assert "tables/cocoop_base2new.csv" in page.links and "run_metadata.json" in page.links
    nb_page = (out / "20_cocoop_base2new.html").read_text()
    assert "MINI profile" in nb_page  # every page opens with the index's profile banner
    nb = _parse(nb_page)
    assert "index.html" in nb.links and nb.imgs and all(s.startswith("data:image/png") for s in nb.imgs)
    assert not (fabricated / "mini" / "run_metadata.json").exists()  # --out writes nothing outside itself
    assert not (fabricated / "mini" / "summary.md").exists()
    meta = json.loads((out / "run_metadata.json").read_text())
    assert set(metadata.KEYS) <= set(meta)
    assert meta["seeds"]["cocoop_base2new"] == {"CLIP": [1], "CoOp": [1, 2, 3], "CoCoOp": [1, 2, 3]}
    assert meta["notebooks"]["20_cocoop_base2new"]["seconds"] == 12.5
    assert meta["jobs"]["prompt-CoOp-1"] == {"wall_s": 3.25, "tables": ["cocoop_base2new", "cocoop_cross_dataset"]}
    summary = (out / "summary.md").read_text()
    assert "## CoCoOp Table 1: base-to-new generalisation" in summary and "| dataset " in summary
    assert "**holds**" in summary  # CoOp base > CLIP base clearly, see the verdict test below


def test_a_report_of_committed_results_links_only_what_exists(fabricated, tmp_path):
    """A checkout holds tables, figures and run_metadata.json, not the executed notebooks: no link to a notebook
    page that was not rendered, and the notebooks section and summary.md say how to get them."""
    import shutil
    shutil.rmtree(paths.executed_dir("mini"))
    index = report.render_report("mini", out=tmp_path / "site")
    text = index.read_text()
    assert "20_cocoop_base2new.html" not in text and not (tmp_path / "site" / "20_cocoop_base2new.html").exists()
    assert "no executed notebooks in results/mini/notebooks" in text
    summary = (tmp_path / "site" / "summary.md").read_text()
    assert "python -m vlpt_lib report --profile mini" in summary and "`report/index.html`" not in summary


def test_out_refuses_results_files_and_foreign_folders(fabricated, tmp_path, capsys):
    """`report --out` writes only into a new or empty folder, or one an earlier report made (replaced whole)."""
    from vlpt_lib.__main__ import main
    mini_csv = fabricated / "mini" / "tables" / "cocoop_base2new.csv"
    before = mini_csv.read_bytes()
    for target in (fabricated / "mini", fabricated, fabricated / "mini" / "report"):
        with pytest.raises(report.ReportError, match="results folder"):
            report.render_report("smoke", out=target)
    assert mini_csv.read_bytes() == before and not (fabricated / "mini" / "index.html").exists()
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_text("my page")
    with pytest.raises(report.ReportError, match="not written by `report`"):
        report.render_report("mini", out=mine)
    assert (mine / "index.html").read_text() == "my page"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(report.ReportError, match="is a file"):
        report.render_report("mini", out=tmp_path / "a_file")
    with pytest.raises(report.ReportError, match="cannot be written"):
        report.render_report("mini", out=tmp_path / "a_file" / "below")
    published = tmp_path / "published"
    report.render_report("mini", out=published)
    (published / "stale.html").write_text("from before")
    report.render_report("mini", out=published)  # a report's own folder: replaced, nothing stale left
    assert not (published / "stale.html").exists() and (published / "index.html").exists()
    # from the command line: one line, exit 2, no traceback
    assert main(["report", "--profile", "smoke", "--out", str(fabricated / "mini")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("report: --out ") and "\n" not in err and "Traceback" not in err


def test_a_table_whose_last_run_failed_says_so_beside_its_numbers(fabricated):
    """A notebook that failed leaves the previous run's table in place: the report and summary.md say that the
    numbers shown are from an earlier run, when the last one failed, and how to re-run it."""
    record = paths.executed_dir("mini") / "20_cocoop_base2new.run.json"
    index = report.render_report("mini")
    assert "last run of notebook" not in index.read_text()
    csv = tables.tables_dir("mini") / "cocoop_base2new.csv"
    os.utime(csv, (1.7e9, 1.7e9))  # written in 2023, long before the failed run
    record.write_text(json.dumps({"status": "failed", "seconds": 3.0, "finished": "2026-12-06 14:22:03"}))
    index = report.render_report("mini")
    expected = ("The last run of notebook 20_cocoop_base2new failed (2026-12-06 14:22:03): the numbers below are "
                "from an earlier run")
    assert expected in _section(index.read_text(), "cocoop_base2new")
    assert expected not in _section(index.read_text(), "imagenet_finetune")
    summary = (paths.results_dir("mini") / "summary.md").read_text()
    table1 = summary[summary.index("## CoCoOp Table 1"):]
    assert table1.index(expected) < table1.index("| dataset")  # before the numbers it warns about
    assert "--only 20_cocoop_base2new" in table1


def test_base2new_in_the_papers_shape_averages_the_paper_over_the_same_datasets(fabricated):
    pt = tables.paper_table("cocoop_base2new", "mini")
    ref = pd.read_csv(REPO / "results" / "reference" / "cocoop_base2new.csv").set_index(
        ["method", "dataset", "split"])["value"]
    row = pt.frame.loc["Average (2 datasets)"]
    # CoOp base per seed: mean(70 + s, 80 + s) = 75 + s -> 76, 77, 78: mean 77, sample std 1
    assert row[("CoOp", "base", "ours")] == pytest.approx(77.0)
    assert row[("CoOp", "base", "std")] == pytest.approx(1.0)
    paper = (ref[("CoOp", "ImageNet", "base")] + ref[("CoOp", "EuroSAT", "base")]) / 2
    assert row[("CoOp", "base", "paper")] == pytest.approx(paper)
    assert row[("CoOp", "base", "delta")] == pytest.approx(77.0 - paper)
    assert list(pt.frame.index) == ["ImageNet", "EuroSAT", "Average (2 datasets)"]
    assert set(pt.context["method"]) == {"KgCoOp", "MaPLe", "PromptSRC"}  # rows of methods not run here: context


def _student_t_cdf(t: float, df: int) -> float:
    """Student's t CDF in closed form for 2 and 4 degrees of freedom (e.g. Wikipedia, Student's t-distribution:
    nu = 2: 1/2 + t / (2 sqrt(2 + t^2)); nu = 4: 1/2 + 3/8 x (1 - x^2 / 12) with x = t / sqrt(1 + t^2 / 4) and
    x^2 = t^2 / (1 + t^2 / 4)); independent of scipy, which the project uses."""
    if df == 2:
        return 0.5 + t / (2 * math.sqrt(2 + t * t))
    u = 1 + t * t / 4
    return 0.5 + 3 / 8 * (t / math.sqrt(u)) * (1 - t * t / (12 * u))


def test_judge_is_welchs_one_sided_t_test():
    s = pd.Series
    # equal variances and seed counts give whole degrees of freedom: 3 + 3 seeds, both variances 4 -> df 4
    v = claims.judge(s([70.0, 72.0, 74.0]), s([64.0, 66.0, 68.0]), ">")
    se = math.sqrt(4 / 3 + 4 / 3)
    assert (v.diff, v.se, v.t, v.df) == (pytest.approx(6.0), pytest.approx(se), pytest.approx(6 / se), pytest.approx(4))
    assert v.p == pytest.approx(1 - _student_t_cdf(6 / se, 4), rel=1e-9) and v.word == "holds"  # p 0.011
    assert claims.judge(s([64.0, 66.0, 68.0]), s([70.0, 72.0, 74.0]), ">").word == "reversed"
    assert claims.judge(s([64.0, 66.0, 68.0]), s([70.0, 72.0, 74.0]), "<").word == "holds"
    v = claims.judge(s([70.0, 72.0, 74.0]), s([68.0, 70.0, 72.0]), ">")  # t 1.22 at df 4: p 0.14
    assert v.p == pytest.approx(1 - _student_t_cdf(2 / se, 4), rel=1e-9) and v.word == "not resolved"
    # 2 + 2 seeds, variances 2: difference 4 = 2.83 SE, beyond "2 SE" but t 2.83 < 2.92 at df 2: p 0.053
    v = claims.judge(s([70.0, 72.0]), s([66.0, 68.0]), ">")
    assert v.df == pytest.approx(2) and v.p == pytest.approx(1 - _student_t_cdf(4 / math.sqrt(2), 2), rel=1e-9)
    assert v.p > 0.05 and v.word == "not resolved"
    assert claims.judge(s([70.0]), s([60.0, 61.0]), ">").word == "one seed: no spread"
    assert claims.judge(s([70.0, 71.0]), s([], dtype=float), ">").word == "not measured"
    # a zero-shot side is a constant: a one-sample test of the other side against it (3 seeds: df 2)
    v = claims.judge(s([80.0, 81.0, 82.0]), s([75.0]), "<", right_exact=True)
    t = -6.0 / math.sqrt(1 / 3)
    assert (v.diff, v.se, v.t, v.df) == (pytest.approx(6.0), pytest.approx(math.sqrt(1 / 3)), pytest.approx(t),
                                         pytest.approx(2))
    assert v.p == pytest.approx(1 - _student_t_cdf(t, 2), rel=1e-9) and v.word == "reversed"


def test_table1_verdicts_from_the_rows():
    rows = tables.to_frame(BASE2NEW)
    found = {(v.claim.left, v.claim.right): v for v in claims.verdicts("cocoop_base2new", rows)}
    # CoOp base per seed 76, 77, 78 vs CLIP base mean(60, 50) = 55 (zero-shot): +22, SE sqrt(1/3)
    v = found[("CoOp base", "CLIP base")]
    assert (v.left_mean, v.right_mean, v.left_n) == (pytest.approx(77.0), pytest.approx(55.0), 3)
    assert v.se == pytest.approx(math.sqrt(1 / 3)) and v.word == "holds"
    # CoOp new per seed mean(60 + s, 50 + s) = 55 + s -> 57 vs CLIP new 65: CoOp lower, as claimed
    assert found[("CoOp new", "CLIP new")].word == "holds"
    # CoCoOp new per seed mean(66 + s, 56 + s) = 61 + s -> 63 vs CoOp 57: both std 1, SE sqrt(2/3)
    v = found[("CoCoOp new", "CoOp new")]
    assert v.diff == pytest.approx(6.0) and v.se == pytest.approx(math.sqrt(2 / 3)) and v.word == "holds"
    # H per seed: CoCoOp H(75, 61 + s), CoOp H(75 + s, 55 + s)
    h = lambda b, n: 2 * b * n / (b + n)  # noqa: E731
    cocoop_h = [h(75.0, 61.0 + s) for s in (1, 2, 3)]
    coop_h = [h(75.0 + s, 55.0 + s) for s in (1, 2, 3)]
    v = found[("CoCoOp H", "CoOp H")]
    assert v.left_mean == pytest.approx(sum(cocoop_h) / 3) and v.right_mean == pytest.approx(sum(coop_h) / 3)


def test_best_other_side_is_the_strongest_other_method():
    sides = claims.samples("cocoop_base2new", tables.to_frame(BASE2NEW))
    # H means by hand (rows above): CLIP H(55, 65) = 59.6, CoOp about H(77, 57) = 65.5, CoCoOp about H(75, 63) = 68.5
    assert claims.best_other("best other H", "CoOp H", sides) == "CoCoOp H"
    assert claims.best_other("best other H", "CoCoOp H", sides) == "CoOp H"  # its own side is not a candidate
    assert claims.best_other("best other H", "CoCoOp H", {"CoCoOp H": sides["CoCoOp H"]}) == "best other H"  # none
    assert claims.best_other("CoOp new", "CoCoOp new", sides) == "CoOp new"  # a named side stays


def test_mvp_verdicts_need_two_seeds():
    rows = tables.to_frame(_mvp_rows("acc", {"MVP": [40.0, 42.0], "Normalised pixels": [30.0, 31.0],
                                            "Scratch": [39.0, 43.0]}))
    found = {v.claim.right: v for v in claims.verdicts("imagenet_finetune", rows)}
    # MVP 41 ± sqrt(2) vs Pixel 30.5 ± sqrt(0.5): SE sqrt(2/2 + 0.5/2) = sqrt(1.25)
    assert found["Normalised pixels"].se == pytest.approx(math.sqrt(1.25)) and found["Normalised pixels"].word == "holds"
    assert found["Scratch"].word == "not resolved"  # 41 vs 41
    one = tables.to_frame(_mvp_rows("acc", {"MVP": [40.0], "Scratch": [30.0]}))
    assert claims.verdicts("imagenet_finetune", one)[1].word == "one seed: no spread"


class _Kernel:
    def __init__(self, allow_stdin):
        self._allow_stdin = allow_stdin


class _Shell:
    def __init__(self, allow_stdin):
        self.kernel = _Kernel(allow_stdin)


def test_progress_bars_only_where_someone_watches(monkeypatch):
    monkeypatch.delenv("VLPT_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "get_ipython", lambda: _Shell(True))   # a cell run from JupyterLab
    assert progress.interactive()
    monkeypatch.setattr(progress, "get_ipython", lambda: _Shell(False))  # papermill / nbval (nbclient)
    assert not progress.interactive() and progress.bar(range(3)).disable
    monkeypatch.setenv("VLPT_NO_PROGRESS", "1")
    monkeypatch.setattr(progress, "get_ipython", lambda: _Shell(True))
    assert not progress.interactive()


def test_kernels_keep_their_inline_backend():
    """MPLBACKEND=agg in the kernels' environment drops every figure from Lab, executed notebooks and the report."""
    for path in ("Makefile", "vlpt_lib/workbook/runner.py", "vlpt_lib/__main__.py"):
        assert "MPLBACKEND" not in (REPO / path).read_text(), path
