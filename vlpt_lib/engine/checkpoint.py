"""Atomic checkpoints in a run folder, so a killed run restarts from its last save."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from ..results import atomic_write
from . import distributed


def save(run_dir: str | Path, state: dict, name: str = "last.pt") -> Path | None:
    """Rank 0 writes; the file appears whole or not at all."""
    path = Path(run_dir) / name
    if not distributed.is_main():
        return None
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write(path, buf.getvalue())


def load(run_dir: str | Path, name: str = "last.pt", map_location="cpu") -> dict | None:
    path = Path(run_dir) / name
    if not path.exists():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)


def restore(run_dir: str | Path, model, opt, scaler=None, name: str = "last.pt") -> dict | None:
    """Load the last checkpoint's "model"/"opt"(/"scaler") into the given objects.

    Returns the whole state (the job reads its own counters from it), or None on a fresh start.
    """
    state = load(run_dir, name)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
    return state
