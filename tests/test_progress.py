"""Progress bars in a Jupyter kernel: plain HTML outputs redrawn in place, which a saved and reopened notebook draws
as they were last drawn (an ipywidgets bar reopens as "Error displaying widget: model not found")."""
from types import SimpleNamespace

import pytest

from vlpt_lib.utils import progress

SAVED_AS = {"text/html", "text/plain"}  # what a notebook keeps of each bar: no widget view, no stderr stream


@pytest.fixture
def kernel(monkeypatch):
    """A faked kernel (allow_stdin as Lab sends it) whose displays are recorded: each entry is one frame drawn."""
    monkeypatch.delenv("VLPT_NO_PROGRESS", raising=False)
    shell = SimpleNamespace(kernel=SimpleNamespace(_allow_stdin=True))
    monkeypatch.setattr(progress, "get_ipython", lambda: shell)
    frames = []

    class Handle:
        def update(self, obj, raw=False, **kw):
            assert raw
            frames.append(obj)

    def show(obj, raw=False, display_id=None, **kw):
        assert raw and display_id is True  # one output per bar, redrawn in place through its handle
        frames.append(obj)
        return Handle()

    monkeypatch.setattr(progress, "show", show, raising=False)
    return SimpleNamespace(shell=shell, frames=frames)


def test_a_completed_loop_leaves_a_full_green_html_bar(kernel, capsys):
    pbar = progress.bar(range(5), desc="train <1/2>")
    for i in pbar:
        if i == 2:
            pbar.set_postfix_str("loss=0.5")
            pbar.write("a line between frames")
    assert len(kernel.frames) >= 2 and all(set(f) == SAVED_AS for f in kernel.frames)
    last = kernel.frames[-1]
    assert "5/5" in last["text/html"] and "5/5" in last["text/plain"]
    assert progress.COLOURS["done"] in last["text/html"] and "width: 100.0%" in last["text/html"]
    assert "interrupted" not in last["text/html"] and "train &lt;1/2&gt;" in last["text/html"]  # desc escaped
    out = capsys.readouterr()
    assert out.err == "" and "a line between frames" in out.out  # Lab draws stderr as a pink block


def test_an_exception_leaves_the_bar_marked_interrupted(kernel):
    with pytest.raises(ValueError):
        for i in progress.bar(range(5), desc="eval"):
            if i == 2:
                raise ValueError("boom")
    last = kernel.frames[-1]
    assert "2/5" in last["text/html"] and progress.COLOURS["interrupted"] in last["text/html"]
    assert "interrupted" in last["text/html"] and "interrupted" in last["text/plain"]
    assert progress.COLOURS["done"] not in last["text/html"]


def test_an_interrupt_after_the_last_step_still_counts_and_stays_visible_with_leave_false(kernel):
    with pytest.raises(KeyboardInterrupt):
        with progress.bar(total=3, desc="epoch", leave=False) as pbar:
            pbar.update(3)
            raise KeyboardInterrupt
    last = kernel.frames[-1]
    assert "3/3" in last["text/html"] and "interrupted" in last["text/html"]


def test_a_finished_leave_false_bar_leaves_nothing_visible(kernel):
    pbar = progress.bar(total=4, desc="epoch 1/3", leave=False)
    pbar.update(4)
    pbar.close()
    assert len(kernel.frames) >= 2 and kernel.frames[0]["text/html"]  # it was drawn while it ran
    assert kernel.frames[-1] == {"text/html": "", "text/plain": ""}


def test_bars_are_drawn_only_where_someone_watches(kernel, monkeypatch):
    progress.bar(range(3)).close()  # a cell run from Lab: drawn
    assert kernel.frames
    kernel.frames.clear()
    kernel.shell.kernel._allow_stdin = False  # papermill / nbval (nbclient): nobody watches
    for _ in progress.bar(range(3)):
        pass
    kernel.shell.kernel._allow_stdin = True
    monkeypatch.setenv("VLPT_NO_PROGRESS", "1")
    for _ in progress.bar(range(3)):
        pass
    assert kernel.frames == []


def test_bars_that_leave_nothing_take_turns_in_one_output_per_cell(kernel):
    """Forty epochs' bars (leave=False) in one cell keep one output, not forty: the cell's log lines stay above
    Lab's "Show more outputs" fold; a new cell starts its own."""
    kernel.shell.execution_count = 1
    outputs = []
    real_show = progress.show

    def counting_show(obj, **kw):
        outputs.append(obj)
        return real_show(obj, **kw)

    progress.show = counting_show
    try:
        for _ in range(3):
            list(progress.bar(range(2), leave=False))
        assert len(outputs) == 1
        kernel.shell.execution_count = 2
        list(progress.bar(range(2), leave=False))
        assert len(outputs) == 2
    finally:
        progress.show = real_show
