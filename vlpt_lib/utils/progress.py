"""Progress bars and logs that only rank 0 prints.

A bar shows only where someone watches it live: in a terminal, or in a Jupyter front-end (tqdm.auto draws
an ipywidgets bar there). Under papermill or nbval (nbclient runs cells with stdin disabled) and when the
output goes to a file, bars are off: an executed notebook or a log would keep each one frozen at its first
frame; the jobs' log lines say what happened. VLPT_NO_PROGRESS=1 turns them off everywhere.
"""
from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm

from . import distributed

try:
    from IPython import get_ipython
except ImportError:  # plain Python without IPython: never in a kernel
    def get_ipython():
        return None


def interactive() -> bool:
    """Whether a person sees this process's output live (a terminal, or a notebook open in a front-end)."""
    if os.environ.get("VLPT_NO_PROGRESS") == "1":
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is not None:
        # Lab / Notebook / VS Code send each cell with allow_stdin=True; nbclient (papermill, nbval) with False.
        return bool(getattr(kernel, "_allow_stdin", True))
    return sys.stderr.isatty()


def bar(iterable=None, **kw):
    kw.setdefault("disable", not distributed.is_main() or not interactive())
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kw)


class _ConsoleHandler(logging.StreamHandler):
    """stderr in a terminal or a log; stdout in a notebook kernel, where stderr is drawn as an alarming pink block
    and the lines are the run's normal account, not errors."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout if getattr(get_ipython(), "kernel", None) is not None else sys.stderr
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
