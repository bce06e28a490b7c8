"""The figures' reported problems, pinned on the figure objects (Agg, tiny inputs, no runs):
paper marks apart from error-bar caps, the pre-training loss in each row's colour, whole iterations on the
ADE20K curves, and a class-colour legend under the ADE20K examples."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb, to_rgba  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from vlpt_lib.workbook import mvp, plots  # noqa: E402
from vlpt_lib.workbook.tables import PaperTable  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----- 1: the paper's value never lies on an error bar's cap ------------------------------------------------
def _paper_table(rows: int = 3) -> PaperTable:
    """A transfer-shaped frame where the paper's value equals ours + std everywhere (the worst case)."""
    methods = ["CoOp", "CoCoOp"]
    cols = pd.MultiIndex.from_product([methods, ["ours", "std", "paper"]])
    ours = np.linspace(40, 80, rows)
    data = {}
    for m in methods:
        data[(m, "ours")], data[(m, "std")], data[(m, "paper")] = ours, np.full(rows, 3.0), ours + 3.0
    frame = pd.DataFrame(data, index=[f"set{i}" for i in range(rows)], columns=cols)
    return PaperTable("cocoop_cross_dataset", "test", frame, pd.DataFrame(), measured=True)


def _points(ax, x, y):
    """Display coordinates of data points, in typographic points."""
    xy = ax.transData.transform(np.column_stack([x, y]))
    return xy * 72 / ax.figure.dpi


@pytest.mark.parametrize("rows", [3, 12])  # the mini table and the paper's 12 rows of Table 2
def test_paper_marker_is_apart_from_the_caps(rows):
    pt = _paper_table(rows)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    plots._bars(ax, pt, ["CoOp", "CoCoOp"])
    fig.tight_layout()
    fig.canvas.draw()
    paper = [line for line in ax.lines if line.get_label() == plots.PAPER_LABEL]
    assert len(paper) == 1, "the paper's values are one marker line with the legend label"
    paper = paper[0]
    assert paper.get_linestyle() == "None" and paper.get_marker() not in ("_", "|", "None", "", None, ","), \
        "the paper's value is a marker of another kind than the caps' horizontal ticks"
    caps = [cap for c in ax.containers if isinstance(c, ErrorbarContainer) for cap in c.lines[1]]
    assert caps and all(cap.get_marker() == "_" for cap in caps)
    # every method draws its paper marks with the first method's style (one legend entry): collect all of them
    marks = np.column_stack([paper.get_xdata(), paper.get_ydata()])
    marks = np.concatenate([marks] + [np.column_stack([line.get_xdata(), line.get_ydata()]) for line in ax.lines
                                      if line is not paper and line.get_marker() == paper.get_marker()])
    assert len(marks) == 2 * rows
    for cap in caps:
        cap_xy = _points(ax, cap.get_xdata(), cap.get_ydata())
        cap_half = cap.get_markersize() / 2
        for mark_xy in _points(ax, marks[:, 0], marks[:, 1]):
            same_height = np.abs(cap_xy[:, 1] - mark_xy[1]) < paper.get_markersize() / 2 + 1
            gap = np.abs(cap_xy[same_height, 0] - mark_xy[0]) - cap_half - paper.get_markersize() / 2
            assert (gap > 0).all(), f"a paper mark touches a cap ({gap.min():.2f} pt apart)"
    # each paper mark lies inside its bar
    bars = [p for p in ax.patches if p.get_width() > 0]
    for x in marks[:, 0]:
        assert any(b.get_x() < x < b.get_x() + b.get_width() for b in bars)


def test_paper_has_a_legend_entry_in_the_figure(monkeypatch):
    monkeypatch.setattr(plots, "paper_table", lambda table, profile: _paper_table())
    fig = plots.cross_dataset("test")
    texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any(t.startswith("paper") for t in texts)
    handle = next(h for legend in fig.legends for h, t in zip(legend.legend_handles, legend.get_texts())
                  if t.get_text().startswith("paper"))
    assert handle.get_marker() == "D"


# ----- 2: the pre-training loss in each target's row colour --------------------------------------------
def test_pretrain_loss_uses_the_row_colours():
    runs = {t: {"history": [{"epoch": e, "loss": 1.0 / e} for e in (1, 2, 3)], "loss_kind": "mse"}
            for t in ("clip", "pixel", "hog")}
    fig = mvp.figure_pretrain_loss(runs)
    label_of = {t: label for label, t in mvp.method_targets().items() if t is not None}
    for ax, t in zip(fig.axes, runs):
        (line,) = ax.lines
        assert to_rgba(line.get_color()) == to_rgba(mvp.colors()[label_of[t]]), t
        assert label_of[t] in ax.get_title()
    assert len({to_rgba(ax.lines[0].get_color()) for ax in fig.axes}) == 3


# ----- 3: whole iterations on the ADE20K curves --------------------------------------------------------
def _seg_runs(evals: tuple[int, ...]) -> dict:
    runs = {}
    for method in ("MVP", "Scratch"):
        for seed in (0, 1):
            history = [{"step": s, "epoch": 1, "loss": 3.0 - 0.1 * s - 0.01 * seed} for s in (1, 2, 3)]
            for h in history:
                if h["step"] in evals:
                    h["miou"] = 5.0 + h["step"] + seed
            runs[(method, seed)] = {"history": history, "miou": 5.0 + seed}
    return runs


def _integral_ticks(ax) -> bool:
    lo, hi = sorted(ax.get_xlim())
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("evals", [(2, 3), (3,)])  # mIoU curves, or the final mIoU bars
def test_ade20k_curves_have_whole_iterations(monkeypatch, evals):
    monkeypatch.setattr(mvp, "runs_of_table", lambda table, profile: _seg_runs(evals))
    fig = plots.ade20k_segmentation("test")
    fig.canvas.draw()
    curves = fig.axes[:2] if len(evals) > 1 else fig.axes[:1]
    for ax in curves:
        assert ax.get_xlabel() == "iteration"
        assert _integral_ticks(ax), list(ax.get_xticks())
    if len(evals) == 1:  # the bar panel keeps its method names
        assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["MVP", "Scratch"]


# ----- 4: the ADE20K examples' class-colour legend ------------------------------------------------------
NAMES = ["banded", "dotted", "striped", "zigzagged"]


def _example_runs(tmp_path, data: dict) -> dict:
    """Two methods' segment runs with 2 tiny examples: ground truth classes {0, 2} (+ ignored 255), predictions
    {0, 1}; class 3 appears nowhere."""
    label = torch.tensor([[0, 0, 2, 2], [0, 255, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2]], dtype=torch.int16)
    pred = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.int16)
    runs = {}
    for method in ("MVP", "Scratch"):
        run_dir = tmp_path / f"segment-{method}"
        run_dir.mkdir()
        examples = [{"image": torch.zeros(3, 4, 4), "label": label, "pred": pred} for _ in range(2)]
        torch.save({"examples": examples, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}, run_dir / "examples.pt")
        (run_dir / "config.json").write_text(json.dumps({"job": "segment", "cfg": {"data": data}}))
        runs[(method, 0)] = {"examples": str(run_dir / "examples.pt"), "num_classes": 4, "rows": [{"method": method}]}
    return runs


def _legend(fig) -> dict[str, tuple]:
    assert fig.legends, "the examples have a class-colour legend"
    legend = fig.legends[0]
    return {t.get_text(): to_rgb(h.get_facecolor()) for h, t in zip(legend.legend_handles, legend.get_texts())}


def test_examples_legend_names_the_shown_classes(tmp_path):
    base = tmp_path / "world" / "ADEChallengeData2016"
    base.mkdir(parents=True)
    (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n" + "".join(
        f"{k}\t0.1\t1\t1\t{name}\n" for k, name in enumerate(NAMES, 1)))
    fig = mvp.figure_segmentation_examples(_example_runs(tmp_path, {"kind": "ade20k", "root": str(tmp_path / "world")}))
    legend = _legend(fig)
    assert list(legend) == NAMES[:3]  # classes 0, 1, 2 in label order; 3 is not shown, 255 is not a class
    # each patch has the colour the overlays draw that class with
    pred_image = fig.axes[2].get_images()[1]
    for c, name in enumerate(NAMES[:3]):
        assert np.allclose(legend[name], pred_image.cmap(pred_image.norm(c))[:3])


def test_examples_legend_without_names(tmp_path):
    runs = _example_runs(tmp_path, {"kind": "synthetic", "root": None})
    assert list(_legend(mvp.figure_segmentation_examples(runs))) == ["class 0", "class 1", "class 2"]
    plt.close("all")
    given = mvp.figure_segmentation_examples(runs, classnames=["a", "b"])
    assert list(_legend(given)) == ["a", "b", "class 2"]


def test_label_colours_distinct_for_ade20k():
    colours = np.asarray(mvp.label_colours(150).colors)
    assert len({tuple(np.round(c, 4)) for c in colours}) == 150
    old = np.concatenate([plt.get_cmap("tab20").colors, plt.get_cmap("tab20b").colors])
    assert np.allclose(colours[:40], old)  # the mini world's (and notebook 01's) colours are unchanged
