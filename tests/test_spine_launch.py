"""The engine's launch contract on the smallest job (vlpt_lib.jobs.example.py)."""
import json
import os
import subprocess
import sys

import pytest

from numerics import assert_close_fp32
from vlpt_lib.jobs import launch
from vlpt_lib.utils.faults import FAULT_ENV
from vlpt_lib.workbook.paths import REPO_ROOT

CFG = {"n": 64, "dim": 8, "batch_size": 16, "epochs": 3, "lr": 0.05, "seed": 3, "device": "cpu"}
STEPS = CFG["epochs"] * CFG["n"] // CFG["batch_size"]


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
    # Float32 (tests/numerics.py): each step's gradient is a sum over the batch (16 samples of dim 8) that DDP
    # splits in two and all-reduces, so one step differs by rounding of about batch + dim; SGD carries every
    # step's difference into the weights.
    k = STEPS * (CFG["batch_size"] + CFG["dim"])
    assert_close_fp32(ddp["weight"], single["weight"], k=k, msg="weight")
    assert_close_fp32(ddp["bias"], single["bias"], k=k, msg="bias")


def test_killed_run_resumes_from_its_checkpoint(runs):
    """The job kills itself (SIGKILL) right after its second checkpoint; run again, it resumes after epoch 2
    and ends bit-identical to an uninterrupted run (the data order and every draw follow from seed and epoch)."""
    cfg = {**CFG, "epochs": 4}
    run_dir = launch.run_dir_for("example", cfg, runs)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"job": "example", "cfg": launch.resolve_config("example", cfg)}))
    proc = subprocess.run([sys.executable, "-m", "vlpt_lib.jobs.example", "--run-dir", str(run_dir)],
                          cwd=REPO_ROOT, env={**os.environ, FAULT_ENV: "checkpoint@2:SIGKILL"}, timeout=120)
    assert proc.returncode == -9, "the job did not stop at its fault point"
    assert not (run_dir / "result.json").exists()
    resumed = launch.run_job("example", cfg, runs)
    assert resumed["resumed_from_epoch"] == 2
    uninterrupted = launch.run_job("example", {**cfg, "tag": "straight"}, runs)
    assert uninterrupted["resumed_from_epoch"] == 0
    assert (resumed["weight"], resumed["bias"]) == (uninterrupted["weight"], uninterrupted["bias"])


def test_unknown_launcher_is_refused(runs):
    with pytest.raises(ValueError, match="launcher"):
        launch.run_job("example", CFG, runs, launcher="mpi")


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


def test_unknown_config_key_is_refused(runs):
    with pytest.raises(ValueError, match="epohcs"):
        launch.run_job("example", {**CFG, "epohcs": 3}, runs)
