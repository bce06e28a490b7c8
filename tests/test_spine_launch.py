"""The engine's launch contract on the smallest job (vlpt_lib.jobs.example.py)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vlpt_lib.jobs import launch
from vlpt_lib.workbook.paths import REPO_ROOT

CFG = {"n": 64, "dim": 8, "batch_size": 16, "epochs": 3, "lr": 0.05, "seed": 3, "device": "cpu"}


def test_inline_run_is_cached_by_config(runs):
    first = launch.run_job("example", CFG, runs)
    run_dir = launch.run_dir_for("example", CFG, runs)
    assert json.loads((run_dir / "config.json").read_text())["cfg"] == launch.resolve_config("example", CFG)
    (run_dir / "result.json").write_text(json.dumps({**first, "marker": 1}))
    assert launch.run_job("example", CFG, runs)["marker"] == 1  # served from cache
    assert "marker" not in launch.run_job("example", CFG, runs, force=True)
    other = launch.run_job("example", {**CFG, "seed": 4}, runs)
    assert other["run_id"] != first["run_id"]


def test_torchrun_two_cpu_processes_match_single_process(runs):
    single = launch.run_job("example", CFG, runs)
    ddp = launch.run_job("example", {**CFG, "tag": "ddp"}, runs, launcher="torchrun", nproc=2)
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert torch.allclose(torch.tensor(ddp["weight"]), torch.tensor(single["weight"]), atol=1e-5)
    assert ddp["bias"] == pytest.approx(single["bias"], abs=1e-5)


def test_killed_run_resumes_from_its_checkpoint(runs):
    cfg = {**CFG, "epochs": 6, "sleep_per_epoch": 0.4}
    run_dir = launch.run_dir_for("example", cfg, runs)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"job": "example", "cfg": launch.resolve_config("example", cfg)}))
    proc = subprocess.Popen([sys.executable, "-m", "vlpt_lib.jobs.example", "--run-dir", str(run_dir)],
                            cwd=REPO_ROOT, env={**os.environ})
    deadline = time.time() + 60
    while not (run_dir / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "result.json").exists(), "the run was killed before it finished"
    resumed = launch.run_job("example", cfg, runs)
    assert resumed["resumed_from_epoch"] >= 1
    uninterrupted = launch.run_job("example", {**cfg, "tag": "straight"}, runs)
    assert uninterrupted["resumed_from_epoch"] == 0
    assert torch.allclose(torch.tensor(resumed["weight"]), torch.tensor(uninterrupted["weight"]), atol=1e-6)


def test_unknown_launcher_is_refused(runs):
    with pytest.raises(ValueError, match="launcher"):
        launch.run_job("example", CFG, runs, launcher="mpi")


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


def test_unknown_config_key_is_refused(runs):
    with pytest.raises(ValueError, match="epohcs"):
        launch.run_job("example", {**CFG, "epohcs": 3}, runs)
