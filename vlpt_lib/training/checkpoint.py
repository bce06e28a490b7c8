"""Atomic checkpoints in a run folder, so a killed run restarts from its last save.

One layout for every job: {"model", "optimizer", "scaler", "scheduler", "epoch", "step", "history", ...}; a finished
run's last save has no optimizer, scaler or scheduler state (nothing resumes it; AdamW's moments are twice the model).
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from ..utils import distributed
from ..utils.faults import fault_point
from ..utils.io import atomic_write


def save(run_dir: str | Path, state: dict, name: str = "last.pt") -> Path | None:
    """Rank 0 writes; the file appears whole or not at all."""
    path = Path(run_dir) / name
    if not distributed.is_main():
        return None
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())
    fault_point("checkpoint")
    return path


def load(run_dir: str | Path, name: str = "last.pt", map_location="cpu") -> dict | None:
    path = Path(run_dir) / name
    if not path.exists():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)


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
