"""Run a job module in-process, under torchrun, or on SLURM, and cache its result by config.

A job is a module `vlpt_lib.jobs.<job>` with a pydantic `Config` (every default of the job) and
`run(cfg, run_dir) -> dict`. Its run folder is <runs_dir>/<job>-<hash of the resolved config>/:
config.json, checkpoints, metrics.jsonl, result.json. A run whose result.json exists is not
repeated unless `force`; one that was interrupted resumes from the checkpoint it left there.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..utils.io import atomic_write
from ..utils.lock import exclusive
from ..utils import distributed
from ..utils.progress import get_logger

LAUNCHERS = ("inline", "torchrun", "slurm")


def config_hash(cfg: dict) -> str:
    text = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def resolve_config(job: str, cfg: dict) -> dict:
    """The job's full config: its defaults with `cfg` on top, checked (unknown keys and wrong types raise)."""
    return _job_module(job).Config.model_validate(cfg).model_dump(mode="json")


def run_dir_for(job: str, cfg: dict, runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / f"{job}-{config_hash(resolve_config(job, cfg))}"


def load_result(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_job(job: str, cfg: dict, runs_dir: str | os.PathLike, *, launcher: str = "inline", nproc: int = 1,
            slurm: dict | None = None, force: bool = False) -> dict:
    """Run `vlpt_lib.jobs.<job>` on `cfg` (or return its cached result) and return the result dict."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    cfg = resolve_config(job, cfg)
    run_dir = run_dir_for(job, cfg, runs_dir)
    # One writer per run folder: a second process would resume from the first one's live checkpoint.
    with exclusive(run_dir.with_name(f".{run_dir.name}.lock"), f"run {run_dir}"):
        return _run_locked(job, cfg, run_dir, launcher, nproc, slurm, force)


def _run_locked(job: str, cfg: dict, run_dir: Path, launcher: str, nproc: int, slurm: dict | None,
                force: bool) -> dict:
    log = get_logger()
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    cached = load_result(run_dir)
    if cached is not None:
        log.info("%s: cached result in %s", job, run_dir)
        return cached
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.json", json.dumps({"job": job, "cfg": cfg}, indent=2, default=str))
    start = time.time()
    if launcher == "inline":
        result = _job_module(job).run(cfg, run_dir)
        _save_result(run_dir, result, start)
    elif launcher == "torchrun":
        _run_torchrun(job, run_dir, nproc)
    else:
        _run_slurm(job, run_dir, slurm or {})
    result = load_result(run_dir)
    if result is None:
        raise RuntimeError(f"job {job} finished without writing {run_dir / 'result.json'}")
    return result


def _job_module(job: str):
    return importlib.import_module(f"vlpt_lib.jobs.{job}")


def _save_result(run_dir: Path, result: dict, start: float) -> None:
    result = dict(result or {})
    result.setdefault("run_id", run_dir.name)
    result.setdefault("wall_s", round(time.time() - start, 2))
    atomic_write(run_dir / "result.json", json.dumps(result, indent=2, default=float))


def _run_torchrun(job: str, run_dir: Path, nproc: int) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", f"vlpt_lib.jobs.{job}", "--run-dir", str(run_dir)]
    get_logger().info("launching: %s", " ".join(cmd))
    # Stream the workers' output into the caller (a notebook cell shows it line by line).
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun job {job} failed (exit {proc.returncode}); re-run by hand with:\n  {' '.join(cmd)}")


def _run_slurm(job: str, run_dir: Path, slurm: dict) -> None:
    """Submit through submitit: one task per GPU, every task runs job_main's body."""
    import submitit

    executor = submitit.AutoExecutor(folder=run_dir / "slurm")
    options = {"timeout_min": 60 * 24, "nodes": 1, "gpus_per_node": 1, "tasks_per_node": None}
    options.update(slurm)
    if options["tasks_per_node"] is None:
        options["tasks_per_node"] = options["gpus_per_node"]
    executor.update_parameters(**options)
    submitted = executor.submit(_slurm_entry, job, str(run_dir))
    get_logger().info("submitted SLURM job %s for %s; logs in %s", submitted.job_id, job, run_dir / "slurm")
    submitted.result()  # waits; raises with the remote traceback if the job failed


def _slurm_entry(job: str, run_dir: str) -> None:
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    _main_body(_job_module(job).run, Path(run_dir))


def _main_body(run, run_dir: Path) -> None:
    cfg = json.loads((run_dir / "config.json").read_text())["cfg"]
    start = time.time()
    distributed.init_from_env(cfg.get("device", "auto"))  # every Config has a device field
    try:
        result = run(cfg, run_dir)
        if distributed.is_main():
            _save_result(run_dir, result, start)
    finally:
        distributed.cleanup()


def job_main(run) -> None:
    """Entry point of `python -m vlpt_lib.jobs.<job> --run-dir DIR` (what torchrun starts on each rank)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args()
    _main_body(run, args.run_dir)
