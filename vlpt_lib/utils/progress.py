"""Progress bars and logs that only rank 0 prints."""
from __future__ import annotations

import logging
import os
import sys

from tqdm.auto import tqdm

from . import distributed


def bar(iterable=None, **kw):
    kw.setdefault("disable", not distributed.is_main() or os.environ.get("VLPT_NO_PROGRESS") == "1")
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("mininterval", 1.0)
    return tqdm(iterable, **kw)


def get_logger(name: str = "vlpt") -> logging.Logger:
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if distributed.is_main() else logging.WARNING)
    return logger
