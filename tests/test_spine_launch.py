"""The engine's launch contract on the smallest job (vlpt_lib.jobs.example.py); every job's Config refuses
an unknown key by name."""
import importlib
import json
import os
import re
import subprocess
import sys

import pydantic
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


def test_runs_side_by_side_equal_runs_one_after_another(runs, tmp_path):
    """run_jobs with two worker processes: the results of run_job one after another, in the order asked; a run
    listed twice runs once; a finished run is served from the cache."""
    cfgs = [{**CFG, "seed": seed} for seed in (1, 2, 3, 1)]
    side_by_side = launch.run_jobs([("example", cfg) for cfg in cfgs], runs, workers=2)
    one_by_one = [launch.run_job("example", cfg, tmp_path / "one_by_one") for cfg in cfgs]
    assert [(r["weight"], r["bias"]) for r in side_by_side] == [(r["weight"], r["bias"]) for r in one_by_one]
    assert side_by_side[0]["run_id"] == side_by_side[3]["run_id"] and len(list(runs.glob("example-*"))) == 3
    run_dir = launch.run_dir_for("example", cfgs[0], runs)
    (run_dir / "result.json").write_text(json.dumps({**side_by_side[0], "marker": 1}))
    assert launch.run_jobs([("example", cfgs[0])], runs, workers=2)[0]["marker"] == 1


def test_a_failed_run_side_by_side_raises_its_own_error(runs):
    bad = {**CFG, "batch_size": 4 * CFG["n"]}  # fewer samples than one batch
    with pytest.raises(ValueError, match="fewer than one batch"):
        launch.run_jobs([("example", CFG), ("example", bad)], runs, workers=2)


def test_killed_run_resumes_from_its_checkpoint(runs):
    """The job kills itself (SIGKILL) right after its second checkpoint; run again, it resumes after epoch 2
    and ends bit-identical to an uninterrupted run (the data order and every draw follow from seed and epoch)."""
    cfg = {**CFG, "epochs": 4}
    run_dir = launch.run_dir_for("example", cfg, runs)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"job": "example", "cfg": launch.resolve_config("example", cfg),
                                                     "modules": launch.job_code("example")}))
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


# A typo at the top level or inside a block of every job module's Config: (job, cfg, the key as named).
TYPOS = [("example", {**CFG, "epohcs": 3}, "epohcs"),
         ("prompt", {"data_root": ".", "epoch": 3}, "epoch"),
         ("prompt", {"data_root": ".", "clip": {"model": "ViT-B-16"}}, "clip.model"),
         ("clip_train", {"world_root": ".", "epoch": 3}, "epoch"),
         ("pretrain", {"optim": {"warmup_epoch": 1}}, "optim.warmup_epoch"),
         ("finetune", {"aug": {"mix_up": 0.5}}, "aug.mix_up"),
         ("segment", {"eval_evry": 2}, "eval_evry")]


def test_every_job_module_is_listed():
    jobs = {p.stem for p in (REPO_ROOT / "vlpt_lib" / "jobs").glob("*.py")} - {"__init__", "launch"}
    assert {job for job, _, _ in TYPOS} == jobs


@pytest.mark.parametrize("job,cfg,key", TYPOS, ids=[f"{job}-{key}" for job, _, key in TYPOS])
def test_unknown_config_key_is_refused_by_name(job, cfg, key, runs, tmp_path):
    """A job's Config refuses a key it does not have and names it, before anything runs or is written: through
    run_job and through the job module's own run (what torchrun and SLURM start)."""
    refused = rf"(?m)^{re.escape(key)}\n\s+Extra inputs are not permitted"
    with pytest.raises(pydantic.ValidationError, match=refused):
        launch.run_job(job, cfg, runs)
    assert not runs.exists()
    with pytest.raises(pydantic.ValidationError, match=refused):
        importlib.import_module(f"vlpt_lib.jobs.{job}").run(cfg, tmp_path / "direct")
    assert not (tmp_path / "direct").exists()
