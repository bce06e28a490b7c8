"""The numbers derived from the tables' per-seed rows (workbook.derived), pinned against values worked out here from
the papers' rules written out, not by calling the code under test: H = 2·B·N / (B + N) of the seed-averaged base B
and new N; Table 1's average over every dataset run (ImageNet included, as the paper's 11), Tables 2 and 3's over
every dataset but the source. The CSVs hold per-seed rows only; the tables, the claims and the figures read the same
derived numbers; an unmeasured number renders as a dash."""
import math
import re
import statistics

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from vlpt_lib.workbook import claims, plots, report, tables  # noqa: E402


def _acc(method, dataset, split, seed, value):
    return {"method": method, "dataset": dataset, "split": split, "seed": seed, "metric": "acc", "value": value,
            "run_id": f"prompt-{method}-{seed}"}


def _h(b, n):
    return 2 * b * n / (b + n)


# CoOp over 3 seeds on ImageNet and EuroSAT; base and new move in opposite directions across seeds, so that H of the
# seed-averaged base and new differs from the mean of per-seed H (the rule matters).
COOP = {("ImageNet", "base"): [70.0, 80.0, 90.0], ("ImageNet", "new"): [60.0, 50.0, 40.0],
        ("EuroSAT", "base"): [90.0, 85.0, 95.0], ("EuroSAT", "new"): [30.0, 60.0, 45.0]}
CLIP = {("ImageNet", "base"): 60.0, ("ImageNet", "new"): 70.0, ("EuroSAT", "base"): 50.0, ("EuroSAT", "new"): 64.0}
ROWS = ([_acc("CoOp", d, s, seed, v[seed - 1]) for (d, s), v in COOP.items() for seed in (1, 2, 3)]
        + [_acc("CLIP", d, s, 1, v) for (d, s), v in CLIP.items()])


@pytest.fixture
def table1(results_root):
    tables.save_table("cocoop_base2new", ROWS, "mini")
    return tables.paper_table("cocoop_base2new", "mini")


def test_h_is_of_the_seed_averaged_base_and_new(table1):
    b, n = statistics.mean(COOP[("ImageNet", "base")]), statistics.mean(COOP[("ImageNet", "new")])  # 80, 50
    assert table1.frame.loc["ImageNet", ("CoOp", "H", "ours")] == pytest.approx(2 * 80 * 50 / 130)
    per_seed = statistics.mean(_h(x, y) for x, y in zip(COOP[("ImageNet", "base")], COOP[("ImageNet", "new")]))
    assert abs(_h(b, n) - per_seed) > 0.5  # the mean of per-seed H would be another number
    assert math.isnan(table1.frame.loc["ImageNet", ("CoOp", "H", "std")])  # a derived value has no ±


def test_table1_average_is_over_every_dataset_imagenet_included(table1):
    avg = table1.frame.loc["Average (2 datasets)"]
    base = [(i + e) / 2 for i, e in zip(COOP[("ImageNet", "base")], COOP[("EuroSAT", "base")])]  # per seed
    new = [(i + e) / 2 for i, e in zip(COOP[("ImageNet", "new")], COOP[("EuroSAT", "new")])]
    assert avg[("CoOp", "base", "ours")] == pytest.approx(statistics.mean(base))
    assert avg[("CoOp", "base", "std")] == pytest.approx(statistics.stdev(base))
    assert avg[("CoOp", "new", "ours")] == pytest.approx(statistics.mean(new))
    # the Average's H is H of the averaged base and new, not the mean of the datasets' H
    h = _h(statistics.mean(base), statistics.mean(new))
    assert avg[("CoOp", "H", "ours")] == pytest.approx(h)
    assert h != pytest.approx(statistics.mean(table1.frame.loc[["ImageNet", "EuroSAT"], ("CoOp", "H", "ours")]))
    # its paper column: the paper's numbers averaged over the same datasets, H of those averages
    ref = tables.load_reference("cocoop_base2new").set_index(["method", "dataset", "split"])["value"]
    pb = (ref[("CoOp", "ImageNet", "base")] + ref[("CoOp", "EuroSAT", "base")]) / 2
    pn = (ref[("CoOp", "ImageNet", "new")] + ref[("CoOp", "EuroSAT", "new")]) / 2
    assert avg[("CoOp", "base", "paper")] == pytest.approx(pb)
    assert avg[("CoOp", "H", "paper")] == pytest.approx(_h(pb, pn))


def test_the_papers_averages_follow_the_same_rules():
    """Table 1's printed Average is the mean over its 11 datasets, ImageNet included; Table 2's over its 10 targets,
    the source ImageNet excluded (2 printed decimals)."""
    ref = tables.load_reference("cocoop_base2new")
    for method in ("CLIP", "CoOp", "CoCoOp"):
        mine = ref[ref["method"] == method]
        per = mine[mine["dataset"] != "Average"]
        assert per["dataset"].nunique() == 11 and "ImageNet" in set(per["dataset"])
        for split in ("base", "new"):
            printed = mine[(mine["dataset"] == "Average") & (mine["split"] == split)]["value"].item()
            assert per[per["split"] == split]["value"].mean() == pytest.approx(printed, abs=0.006)
    ref = tables.load_reference("cocoop_cross_dataset")
    for method in ("CoOp", "CoCoOp"):
        mine = ref[ref["method"] == method].set_index("dataset")["value"]
        targets = mine.drop(["ImageNet", "Average"])
        assert len(targets) == 10 and targets.mean() == pytest.approx(mine["Average"], abs=0.006)


def test_a_run_of_every_dataset_shows_the_papers_own_average(results_root):
    """Before any run the table holds the paper's datasets, all 11: the Average's paper column is the paper's own
    printed average, also for the methods whose paper prints only that (KgCoOp, MaPLe, PromptSRC)."""
    pt = tables.paper_table("cocoop_base2new", "paper")
    ref = tables.load_reference("cocoop_base2new").set_index(["method", "dataset", "split"])["value"]
    avg = pt.frame.loc["Average (11 datasets)"]
    for method in ("CoCoOp", "KgCoOp"):
        for split in ("base", "new", "base2new"):
            assert avg[(method, {"base2new": "H"}.get(split, split), "paper")] == ref[(method, "Average", split)]


def test_transfer_average_leaves_the_source_out(results_root):
    values = {"ImageNet": [70.0, 72.0], "Caltech101": [90.0, 80.0], "EuroSAT": [40.0, 44.0]}
    tables.save_table("cocoop_cross_dataset", [_acc("CoOp", d, "test", seed, v[seed - 1])
                                               for d, v in values.items() for seed in (1, 2)], "mini")
    pt = tables.paper_table("cocoop_cross_dataset", "mini")
    per_seed = [(c + e) / 2 for c, e in zip(values["Caltech101"], values["EuroSAT"])]  # 65, 62
    avg = pt.frame.loc["Average (2 targets)"]
    assert pt.source == "ImageNet" and "ImageNet (source)" in pt.frame.index
    assert avg[("CoOp", "ours")] == pytest.approx(statistics.mean(per_seed))
    assert avg[("CoOp", "std")] == pytest.approx(statistics.stdev(per_seed))
    ref = tables.load_reference("cocoop_cross_dataset").set_index(["method", "dataset"])["value"]
    assert avg[("CoOp", "paper")] == pytest.approx((ref[("CoOp", "Caltech101")] + ref[("CoOp", "EuroSAT")]) / 2)
    # the claim's side is the same per-seed average
    side = claims.samples("cocoop_cross_dataset", tables.load_table("cocoop_cross_dataset", "mini"))["CoOp targets"]
    assert list(side) == pytest.approx(per_seed)


def test_the_csv_holds_per_seed_rows_only(results_root):
    path = tables.save_table("cocoop_base2new", ROWS, "mini")
    written = pd.read_csv(path)
    assert len(written) == len(ROWS) and written["seed"].notna().all()
    assert "Average" not in set(written["dataset"]) and set(written["metric"]) == {"acc"}
    for derived_row in ({**ROWS[0], "dataset": "Average"},  # a per-seed average
                        {**ROWS[0], "split": "base2new", "metric": "H", "seed": None}):  # a per-dataset H
        with pytest.raises(ValueError, match="one row per measured seed"):
            tables.save_table("cocoop_base2new", ROWS + [derived_row], "mini")
    assert len(pd.read_csv(path)) == len(ROWS)  # a refused table leaves the saved one as it was


def test_a_csv_with_the_old_derived_rows_reads_as_its_measured_rows(results_root):
    """CSVs written before workbook.derived carried Average and H rows: they are left out and recomputed."""
    tables.save_table("cocoop_base2new", ROWS, "mini")
    clean = tables.paper_table("cocoop_base2new", "mini").frame
    path = tables.tables_dir("mini") / "cocoop_base2new.csv"
    old = pd.read_csv(path)
    stale = old.iloc[:2].assign(dataset="Average", value=1.0)
    stale_h = old.iloc[:1].assign(split="base2new", metric="H", seed=float("nan"), value=2.0)
    pd.concat([old, stale, stale_h]).to_csv(path, index=False)
    assert len(tables.load_table("cocoop_base2new", "mini")) == len(ROWS)
    pd.testing.assert_frame_equal(tables.paper_table("cocoop_base2new", "mini").frame, clean)


def test_the_claims_and_the_figure_read_the_tables_numbers(table1):
    sides = claims.samples("cocoop_base2new", tables.load_table("cocoop_base2new", "mini"))
    avg = table1.frame.loc["Average (2 datasets)"]
    for split in ("base", "new"):
        assert sides[f"CoOp {split}"].mean() == pytest.approx(avg[("CoOp", split, "ours")])
        assert sides[f"CoOp {split}"].std() == pytest.approx(avg[("CoOp", split, "std")])
    fig = plots.figure("cocoop_base2new", "mini")
    try:
        bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]  # base panel: one per method
        heights = [p.get_height() for p in bars[table1.methods.index("CoOp")]]
        assert heights == pytest.approx(list(table1.frame[("CoOp", "base", "ours")]))
    finally:
        plt.close(fig)


def _cells(text: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", text, re.S)


def test_unmeasured_renders_as_a_dash(results_root):
    """CoOp measured on base only: its new and H are unmeasured (NaN, never 0), a dash in HTML and Markdown."""
    tables.save_table("cocoop_base2new", [_acc("CoOp", "EuroSAT", "base", s, 80.0 + s) for s in (1, 2)], "mini")
    pt = tables.paper_table("cocoop_base2new", "mini")
    assert math.isnan(pt.frame.loc["EuroSAT", ("CoOp", "H", "ours")])
    html = report.table_html(pt)
    assert not re.search(r"\bnan\b", html, re.I)
    # the EuroSAT block's CoOp row: base ours, paper, Δ | new ours, paper, Δ | H ours, paper, Δ
    row = _cells(html)[9:18]  # the Average block (its one row) comes first, as the paper prints it
    assert re.sub("<[^>]+>", "", row[0]).strip() == "81.5 ± 0.7"
    assert all(re.sub("<[^>]+>", "", row[i]).strip() == "—" for i in (3, 5, 6, 8)), row  # new / H ours and Δ
    markdown = report.table_markdown(pt)
    line = next(x for x in markdown.splitlines() if "**EuroSAT**" in x)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "— (54.74)" and cells[4] == "— (68.69)" and not re.search(r"\bnan\b|\b0\.0\b", markdown)


def test_before_any_run_every_number_of_ours_is_a_dash(results_root):
    pt = tables.paper_table("cocoop_base2new", "paper")
    html = report.table_html(pt)
    ours = [re.sub("<[^>]+>", "", c).strip() for c in _cells(html)[::3]]  # the first of each ours / paper / Δ
    assert ours and set(ours) == {"—"}
    assert not re.search(r"\bnan\b", html + report.table_markdown(pt), re.I)
