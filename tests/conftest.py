import os

import open_clip
import pytest
import torch

import vlpt_lib.models.clip  # noqa: F401  (registers the vlpt-*-clip configs with open_clip)
from vlpt_lib.worlds.mini_world import CONFIGS, ensure_world

os.environ.setdefault("MPLBACKEND", "agg")
os.environ.setdefault("VLPT_NO_PROGRESS", "1")


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    """Point every results/ path at a temp folder for this test."""
    root = tmp_path / "results"
    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(root))
    return root


@pytest.fixture(scope="session")
def smoke_env(tmp_path_factory):
    """The prompt job's inputs on the smoke world: data root + a random smoke CLIP saved as a weights file."""
    base = tmp_path_factory.mktemp("prompt_env")
    world = ensure_world(base / "world", CONFIGS["smoke"])
    torch.manual_seed(0)
    weights = base / "smoke_clip.pt"
    torch.save(open_clip.create_model("vlpt-smoke-clip").state_dict(), weights)
    return {"data_root": str(world), "clip": {"model_name": "vlpt-smoke-clip", "pretrained": str(weights)},
            "threads": 1, "test_batch_size": 32}
