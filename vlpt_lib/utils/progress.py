"""Progress bars and logs that only rank 0 prints.

A bar shows only where someone watches it live: in a terminal (plain tqdm on stderr), or in a Jupyter front-end.
Under papermill or nbval (nbclient runs cells with stdin disabled) and when the output goes to a file, bars are off:
an executed notebook or a log would keep each one frozen at its first frame; the jobs' log lines say what happened.
VLPT_NO_PROGRESS=1 turns them off everywhere.

In a kernel a bar is one HTML output redrawn in place through a display handle, not tqdm.auto's ipywidgets bar:
a widget is saved as a reference to a model that lives only in the running kernel, so a notebook saved (Lab
autosaves) and reopened shows "Error displaying widget: model not found" where each bar was. HTML is saved as it
was last drawn: full and green when the loop completed, orange and marked interrupted when it did not.
"""
from __future__ import annotations

import logging
import os
import sys
from html import escape

from tqdm.std import tqdm

from . import distributed

try:
    from IPython import get_ipython
    from IPython.display import display as show  # named apart from tqdm's display() method, which redraws
except ImportError:  # plain Python without IPython: never in a kernel
    def get_ipython():
        return None

    show = None


def _kernel():
    """The Jupyter kernel running this process, or None (plain Python, a terminal IPython)."""
    return getattr(get_ipython(), "kernel", None)


def interactive() -> bool:
    """Whether a person sees this process's output live (a terminal, or a notebook open in a front-end)."""
    if os.environ.get("VLPT_NO_PROGRESS") == "1":
        return False
    kernel = _kernel()
    if kernel is not None:
        # Lab / Notebook / VS Code send each cell with allow_stdin=True; nbclient (papermill, nbval) with False.
        return bool(getattr(kernel, "_allow_stdin", True))
    return sys.stderr.isatty()


def bar(iterable=None, **kw):
    kw.setdefault("disable", not distributed.is_main() or not interactive())
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("mininterval", 1.0)
    return (_NotebookBar if _kernel() is not None and not kw["disable"] else tqdm)(iterable, **kw)


COLOURS = {"running": "#2196f3", "done": "#4caf50", "interrupted": "#e8590c"}


_SHARED: dict = {}  # the current cell's output that leave=False bars take turns in: {cell, handle, busy}


class _NotebookBar(tqdm):
    """tqdm drawn as an HTML output (plus a text/plain fallback) that each refresh replaces in place.

    Only inline styles that Lab's sanitizer keeps are used, so an untrusted reopened notebook draws the same bar."""

    def __init__(self, iterable=None, **kw):
        kw["gui"] = True  # tqdm itself writes nothing to its file: no stderr stream (drawn pink) in the notebook
        super().__init__(iterable, **kw)
        self._failed = False
        if not self.disable:
            self._handle = self._slot()

    def _slot(self):
        """Where the bar draws. Bars that leave nothing behind (leave=False: an epoch's, an evaluation's) take turns
        in one output per cell: a cell that trains forty models keeps one empty output, not forty, and its log
        lines stay above Lab's "Show more outputs" fold."""
        shell = get_ipython()
        cell = (id(shell), getattr(shell, "execution_count", None))
        if not self.leave and _SHARED.get("cell") == cell and not _SHARED["busy"]:
            _SHARED["busy"] = True
            _SHARED["handle"].update(self._bundle(), raw=True)
            return _SHARED["handle"]
        handle = show(self._bundle(), raw=True, display_id=True)
        if not self.leave and _SHARED.get("cell") != cell:
            _SHARED.update(cell=cell, handle=handle, busy=True)
        return handle

    def display(self, msg=None, pos=None):
        # update() calls this at most every mininterval (and before it moves last_print_t); other refreshes
        # (set_postfix_str, write) wait as long after that, so a busy loop does not flood the front-end
        if self._time() - self.last_print_t >= self.mininterval:
            self._handle.update(self._bundle(), raw=True)
        return True

    def clear(self, nolock=False):
        pass  # write() clears terminal bars before printing; an output of its own needs no clearing

    def __exit__(self, exc_type, exc_value, traceback):
        self._failed = exc_type is not None  # an exception (KeyboardInterrupt too) left the with block
        return super().__exit__(exc_type, exc_value, traceback)

    def close(self):
        if getattr(self, "disable", True):
            return
        super().close()  # marks the bar closed; draws nothing for a gui bar
        self._ema_dt = lambda: None  # the last frame gives the average rate over the whole run, as tqdm's does
        bundle = self._bundle(closed=True)
        self._handle.update(bundle, raw=True)
        if _SHARED.get("handle") is self._handle:  # free the shared output, unless an interrupted bar stays in it
            _SHARED["busy"] = False
            if bundle["text/html"]:
                _SHARED.clear()

    def _bundle(self, closed: bool = False) -> dict:
        # Closed short of its total: an exception left a `for` over the bar (tqdm sees only the generator being
        # closed, as after a break) or a hand-counted loop. Callers that stop early on purpose set total = n first.
        short = bool(self.total) and self.n < self.total
        state = "running" if not closed else "interrupted" if self._failed or short else "done"
        if state == "done" and not self.leave:
            return {"text/html": "", "text/plain": ""}  # nothing left where the bar was (interrupted ones stay)
        d = self.format_dict
        stats = self.format_meter(**{**d, "prefix": "", "ncols": 0})  # " 60% 3/5 [00:12<00:08, 2.4it/s, ...]"
        note = " · interrupted" if state == "interrupted" else ""
        frac = min(1.0, self.n / self.total) if self.total else 1.0  # no total: a full strip whose colour tells
        desc = f"{escape(self.desc)} " if self.desc else ""
        html = (f'<div style="font-family: monospace; font-size: 12px; white-space: pre">{desc}'
                '<span style="display: inline-block; width: 20em; height: 10px; background-color: #e0e0e0; '
                'border-radius: 3px; vertical-align: middle">'
                f'<span style="display: inline-block; width: {100 * frac:.1f}%; height: 10px; '
                f'background-color: {COLOURS[state]}; border-radius: 3px; vertical-align: top"></span></span>'
                f' {escape(stats.strip())}{note}</div>')
        return {"text/html": html, "text/plain": self.format_meter(**{**d, "ncols": 80}) + note}


class _ConsoleHandler(logging.StreamHandler):
    """stderr in a terminal or a log; stdout in a notebook kernel, where stderr is drawn as an alarming pink block
    and the lines are the run's normal account, not errors."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout if _kernel() is not None else sys.stderr
        super().emit(record)


def get_logger(name: str = "vlpt") -> logging.Logger:
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if distributed.is_main() else logging.WARNING)
    return logger
