import os

import pytest

os.environ.setdefault("MPLBACKEND", "agg")
os.environ.setdefault("VLPT_NO_PROGRESS", "1")


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    """Point every results/ path at a temp folder for this test."""
    root = tmp_path / "results"
    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(root))
    return root
