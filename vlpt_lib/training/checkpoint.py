"""Atomic checkpoints in a run folder, so a killed run restarts from its last save.

One layout for every job: {"model", "optimizer", "scaler", "scheduler", "epoch", "step", "history", ...}; a finished
run's last save has no optimizer, scaler or scheduler state (nothing resumes it; AdamW's moments are twice the model).
An unfinished run keeps its save before the last one (`previous-last.pt`): a last save damaged after it was written (a
copy cut short, a failing disk) costs one epoch, not the run.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..utils import distributed
from ..utils.faults import fault_point
from ..utils.io import atomic_write
from ..utils.progress import get_logger


def previous_path(path: Path) -> Path:
    return path.with_name(f"previous-{path.name}")


def save(run_dir: str | Path, state: dict, name: str = "last.pt", keep_previous: bool = False) -> Path | None:
    """Rank 0 writes; the file appears whole or not at all. keep_previous: the save it replaces stays as
    previous-<name> (without it, an older previous-<name> is removed: the run needs no fallback any more)."""
    path = Path(run_dir) / name
    if not distributed.is_main():
        return None
    buf = io.BytesIO()
    torch.save(state, buf)
    previous = previous_path(path)
    if keep_previous and path.exists():
        os.replace(path, previous)  # killed before the next line: load() falls back to it
    atomic_write(path, buf.getvalue())
    if not keep_previous:
        previous.unlink(missing_ok=True)
    fault_point("checkpoint")
    return path


def load(run_dir: str | Path, name: str = "last.pt", map_location="cpu") -> dict | None:
    """The last save, or the one before it when the last is missing or unreadable (a warning names the file and
    the error); None when neither is there."""
    path = Path(run_dir) / name
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            return torch.load(candidate, map_location=map_location, weights_only=False)
        except Exception as err:  # torch raises RuntimeError, EOFError, pickle's and zipfile's errors
            fallback = ("falling back to " + previous_path(path).name if candidate == path and
                        previous_path(path).exists() else "this job starts over (delete the file to silence this)")
            get_logger().warning("unreadable checkpoint %s (%s: %s); %s", candidate, type(err).__name__,
                                 str(err).splitlines()[0] if str(err) else "", fallback)
    return None


def restore(run_dir: str | Path, model, optimizer=None, scaler=None, scheduler=None, name: str = "last.pt") -> dict | None:
    """Load the last checkpoint into the given objects; returns the whole state, or None on a fresh start."""
    state = load(run_dir, name)
    if state is None:
        return None
    model.load_state_dict(state["model"])
    for obj, key in ((optimizer, "optimizer"), (scaler, "scaler"), (scheduler, "scheduler")):
        if obj is not None and state.get(key) is not None:
            obj.load_state_dict(state[key])
    return state
