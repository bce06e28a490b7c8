"""Run a job module in-process, under torchrun, or on SLURM, and cache its result.

A job is a module `vlpt_lib.jobs.<job>` with a pydantic `Config` (every default of the job),
`run(cfg, run_dir) -> dict` and, when it reads files, `data_paths(cfg) -> [path]` (the data folders,
split files and upstream checkpoints it reads; plain path arithmetic, no file access).

Its run folder is <runs_dir>/<job>-<key>/ (config.json, checkpoints, metrics.jsonl, result.json), where the
key hashes what the run is: the resolved config and the absolute paths of what it reads (a relative or
$VLPT_DATA_ROOT data root is resolved by then). An upstream result is part of it by name: a fine-tuning cfg
names the pre-training export inside the pre-training run's folder. `run_dir_for` predicts the folder before
anything exists, and the same run keeps its folder across code versions (its checkpoints stay findable).

What is known only by looking at the files or the code is checked when a cached result is about to be served
or an interrupted run resumed, against what config.json recorded:
- the fingerprint of what the job reads (utils.fingerprint: sizes and mtimes, folder listings; the upstream
  checkpoint's too): changed -> recomputed from scratch (checkpoints discarded);
- the code the job runs: its module's import closure inside the package, each module hashed on its meaning
  (utils.fingerprint.code_closure: a comment, docstring or layout edit changes nothing). Changed -> what
  $VLPT_CODE_CHANGE says: "recompute" (the default; smoke/mini), "stop" (raise CodeChanged naming the run and
  the modules: the paper profile never discards a GPU-day silently) or "keep" (`reproduce --keep-runs`:
  resume, or serve, under the new code and record it in the run's `code_versions`);
- `force`, or a run started before $VLPT_RECOMPUTE_BEFORE (epoch seconds; `reproduce --force` sets it for
  the notebooks' kernels, so a run shared by two notebooks is recomputed once): recomputed.
Otherwise a finished run is served from result.json and an interrupted one resumes from its checkpoint.
config.json's `code_versions` lists each start and resume: the closure's hash, the git commit, whether the
checkout had uncommitted changes.

$VLPT_RUN_LOG (set by the runner for each notebook): every run_job appends the run folder and a digest of
its result there, so a notebook's record knows which job results its tables were built from.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from ..utils.faults import RUNNER_PID_ENV
from ..utils.fingerprint import changed_modules, changed_paths, closure_hash, code_closure, fingerprint
from ..utils.io import atomic_write
from ..utils.lock import exclusive
from ..utils import distributed
from ..utils.progress import bar, get_logger

LAUNCHERS = ("inline", "torchrun", "slurm")
RECOMPUTE_BEFORE_ENV = "VLPT_RECOMPUTE_BEFORE"
RUN_LOG_ENV = "VLPT_RUN_LOG"
CODE_CHANGE_ENV = "VLPT_CODE_CHANGE"
CODE_CHANGE_POLICIES = ("recompute", "stop", "keep")


class CodeChanged(RuntimeError):
    """A run was started by other code and $VLPT_CODE_CHANGE is "stop"."""


def config_hash(cfg: dict) -> str:
    text = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def resolve_config(job: str, cfg: dict) -> dict:
    """The job's full config: its defaults with `cfg` on top, checked (unknown keys and wrong types raise)."""
    return _job_module(job).Config.model_validate(cfg).model_dump(mode="json")


def data_paths(job: str, cfg: dict) -> list[str]:
    """What the job reads (its `data_paths(cfg)`, none if it has none), as absolute paths."""
    paths_of = getattr(_job_module(job), "data_paths", None)
    return [os.path.abspath(os.path.expanduser(p)) for p in (paths_of(cfg) if paths_of else [])]


def run_key(job: str, cfg: dict) -> str:
    """The key of a resolved cfg: config + absolute paths it reads (see the module docstring)."""
    return config_hash({"cfg": cfg, "reads": data_paths(job, cfg)})


def job_code(job: str) -> dict[str, str]:
    """{module: meaning hash} of the code `vlpt_lib.jobs.<job>` runs (its import closure in the package)."""
    return code_closure((f"vlpt_lib.jobs.{job}",))


def code_change_policy() -> str:
    """$VLPT_CODE_CHANGE: what a run started by other code gets (see the module docstring)."""
    policy = os.environ.get(CODE_CHANGE_ENV) or "recompute"
    if policy not in CODE_CHANGE_POLICIES:
        raise ValueError(f"${CODE_CHANGE_ENV}={policy!r}: expected one of {', '.join(CODE_CHANGE_POLICIES)}")
    return policy


@functools.lru_cache(maxsize=1)
def _checkout() -> dict:
    """The git commit of the package's checkout and whether it has uncommitted changes (None outside git)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _code_version(job: str, how: str) -> dict:
    return {"how": how, "code": closure_hash(job_code(job)), **_checkout(), "at": time.strftime("%Y-%m-%d %H:%M:%S")}


def code_change(run_dir: str | os.PathLike) -> list[str]:
    """The modules whose meaning changed since the run's last recorded code version ([]: none)."""
    try:
        recorded = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return []
    if "modules" not in recorded:
        return ["(no code recorded: run made before code versions were recorded)"]
    return changed_modules(recorded["modules"], job_code(recorded["job"]))


def code_change_message(changes: dict[str, list[str]]) -> str:
    """The runs made by other code, each with its changed modules (what a stop says)."""
    lines = []
    for run_dir, modules in changes.items():
        shown = ", ".join(modules[:4]) + (f" and {len(modules) - 4} more" if len(modules) > 4 else "")
        lines.append(f"  {run_dir}: {shown}")
    return "\n".join(lines)


def run_dir_for(job: str, cfg: dict, runs_dir: str | os.PathLike) -> Path:
    cfg = resolve_config(job, cfg)
    return Path(runs_dir) / f"{job}-{run_key(job, cfg)}"


def load_result(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def recompute_before() -> float | None:
    """$VLPT_RECOMPUTE_BEFORE as epoch seconds (None when unset)."""
    value = os.environ.get(RECOMPUTE_BEFORE_ENV)
    try:
        return float(value) if value else None
    except ValueError:
        raise ValueError(f"${RECOMPUTE_BEFORE_ENV}={value!r}: expected epoch seconds (e.g. 1700000000.5), "
                         f"or unset it") from None


def _restart_reason(run_dir: Path, inputs: dict) -> str | None:
    """Why what run_dir holds (a result or a checkpoint) must not be used, the code aside (None: it may)."""
    config = run_dir / "config.json"
    try:
        recorded = json.loads(config.read_text())
    except (OSError, ValueError):
        return "no readable config.json"
    before = recompute_before()
    if before is not None and recorded.get("started_at", config.stat().st_mtime) < before:
        return f"started before ${RECOMPUTE_BEFORE_ENV} (--force)"
    changed = changed_paths(recorded.get("inputs", {}), inputs)
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"input changed: {changed[0]}{more}"
    return None


def _code_reason(modules: list[str]) -> str:
    return "code changed: " + ", ".join(modules[:3]) + (f" and {len(modules) - 3} more" if len(modules) > 3 else "")


def stale_reason(run_dir: str | os.PathLike) -> str | None:
    """Why run_job would not serve the cached result in run_dir as it is (None: it would): not finished, its
    inputs or code changed (whatever $VLPT_CODE_CHANGE then does), or an upstream run it reads would be
    recomputed (a pre-training run whose code changed: its fine-tuning runs read its export)."""
    run_dir = Path(run_dir)
    if not (run_dir / "result.json").exists():
        return "not finished"
    try:
        reads = json.loads((run_dir / "config.json").read_text()).get("reads", [])
    except (OSError, ValueError):
        return "no readable config.json"
    why = _restart_reason(run_dir, fingerprint(reads))
    modules = code_change(run_dir) if why is None and code_change_policy() != "keep" else []
    if modules:
        why = _code_reason(modules)
    for upstream in {Path(p).parent for p in reads if (Path(p).parent / "config.json").exists()}:
        if why is None and upstream.parent == run_dir.parent:
            inner = stale_reason(upstream)
            why = f"upstream {upstream.name}: {inner}" if inner else None
    return why


def result_digest(run_dir: str | os.PathLike) -> str | None:
    """sha1 of a run's result.json (None: no result): which result a table was built from."""
    path = Path(run_dir) / "result.json"
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12] if path.exists() else None


def run_job(job: str, cfg: dict, runs_dir: str | os.PathLike, *, launcher: str = "inline", nproc: int = 1,
            slurm: dict | None = None, force: bool = False) -> dict:
    """Run `vlpt_lib.jobs.<job>` on `cfg` (or return its cached result) and return the result dict."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    cfg = resolve_config(job, cfg)
    run_dir = run_dir_for(job, cfg, runs_dir)
    with _one_writer(run_dir):
        result = _run_locked(job, cfg, run_dir, launcher, nproc, slurm, force)
    _log_use(run_dir)
    return result


def cached_result(job: str, cfg: dict, runs_dir: str | os.PathLike) -> dict | None:
    """The result run_job would serve from the cache (logged as used), or None when it would run or resume the
    job; runs nothing."""
    cfg = resolve_config(job, cfg)
    run_dir = run_dir_for(job, cfg, runs_dir)
    if not (run_dir / "result.json").exists():
        return None
    with _one_writer(run_dir):
        if _restart_reason(run_dir, fingerprint(data_paths(job, cfg))) is not None or code_change(run_dir):
            return None  # run_job decides (the code change policy)
        get_logger().info("%s: cached result (%s)", job, run_dir.name)
        result = load_result(run_dir)
    _log_use(run_dir)
    return result


def _one_writer(run_dir: Path):
    """The run folder's lock: a second process would resume from the first one's live checkpoint. Processes of
    one `reproduce` (its notebooks' kernels and their workers: the same $VLPT_RUNNER_PID) wait for each other:
    notebooks side by side that share a run (Tables 2 and 3 share the ImageNet-trained runs) compute it once."""
    return exclusive(run_dir.with_name(f".{run_dir.name}.lock"), f"run {run_dir}",
                     group=os.environ.get(RUNNER_PID_ENV) or None)


def run_jobs(jobs: Sequence[tuple[str, dict]], runs_dir: str | os.PathLike, *, workers: int = 1,
             launcher: str = "inline", nproc: int = 1, slurm: dict | None = None, force: bool = False) -> list[dict]:
    """run_job for each (job, cfg); the results in the same order.

    workers > 1 (inline launcher): the runs not served from the cache run side by side in that many spawned
    processes, each with its cfg's `threads`. On a CPU, small jobs at one thread each finish about 1.5x sooner
    than one after another on two threads (params/mini). The jobs must not read each other's results: a
    stage that does (an evaluation loading a trained run) is a later call. Workers find plug-in methods
    through $VLPT_PLUGINS, as torchrun ranks do; their logs are quiet, and each finished run is logged here."""
    if workers <= 1 or launcher != "inline":
        return [run_job(job, cfg, runs_dir, launcher=launcher, nproc=nproc, slurm=slurm, force=force)
                for job, cfg in jobs]
    folders = [run_dir_for(job, cfg, runs_dir) for job, cfg in jobs]
    served = [None if force else cached_result(job, cfg, runs_dir) for job, cfg in jobs]
    todo = {}  # one worker per run folder: the same run listed twice is run once
    for (job, cfg), folder, result in zip(jobs, folders, served):
        if result is None:
            todo.setdefault(folder, (job, cfg))
    done = {}
    if todo:
        log = get_logger()
        context = multiprocessing.get_context("spawn")  # fork would copy the kernel's torch thread pools
        with context.Pool(min(workers, len(todo)), initializer=_quiet_worker) as pool:  # exit: workers stopped
            tasks = [(job, cfg, str(runs_dir), force) for job, cfg in todo.values()]
            for folder, result in bar(pool.imap_unordered(_run_job_task, tasks), total=len(tasks),
                                      desc=f"{len(tasks)} runs, {workers} at a time"):
                done[Path(folder)] = result
                log.info("%s: finished in %.0f s", Path(folder).name, result.get("wall_s", 0.0))
    return [done[folder] if result is None else result for folder, result in zip(folders, served)]


def _quiet_worker() -> None:
    """A pool worker: no bars, only warnings (its output reaches no notebook cell)."""
    os.environ["VLPT_NO_PROGRESS"] = "1"
    for handler in get_logger().handlers:
        handler.setLevel(logging.WARNING)


def _run_job_task(task: tuple) -> tuple[str, dict]:
    job, cfg, runs_dir, force = task
    return str(run_dir_for(job, cfg, runs_dir)), run_job(job, cfg, runs_dir, force=force)


def _log_use(run_dir: Path) -> None:
    """Append the run and its result's digest to $VLPT_RUN_LOG (the notebook's record lists them)."""
    _log_entry({"run_dir": str(run_dir), "result": result_digest(run_dir), "at": time.time()})


def _log_start(run_dir: Path) -> None:
    """Tell $VLPT_RUN_LOG that a run starts computing (the runner prints it under the notebook's bar)."""
    _log_entry({"run_dir": str(run_dir), "event": "start", "at": time.time()})


def _log_entry(entry: dict) -> None:
    log_path = os.environ.get(RUN_LOG_ENV)
    if log_path:
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _run_locked(job: str, cfg: dict, run_dir: Path, launcher: str, nproc: int, slurm: dict | None,
                force: bool) -> dict:
    log = get_logger()
    reads = data_paths(job, cfg)
    inputs = fingerprint(reads)
    code = job_code(job)
    if run_dir.exists():
        why = "force=True" if force else _restart_reason(run_dir, inputs)
        modules = code_change(run_dir) if why is None else []
        how = "resumed"
        if modules:
            policy = code_change_policy()
            if policy == "stop":
                raise CodeChanged(f"{run_dir} was made by other code ({', '.join(modules)}); recompute it "
                                  f"(reproduce --force) or keep it under this code (reproduce --keep-runs, "
                                  f"or ${CODE_CHANGE_ENV}=keep)")
            if policy == "recompute":
                why = _code_reason(modules)
            else:
                how = "kept under changed code"
                log.warning("%s: keeping %s under changed code (%s)", job, run_dir.name, ", ".join(modules))
        if why is not None:  # start over: a checkpoint of other inputs/code (or before --force) is not this run's
            log.info("%s: recomputing %s (%s)", job, run_dir.name, why)
            shutil.rmtree(run_dir)
        else:
            _record_version(run_dir, job, code, how)
            if (run_dir / "result.json").exists():
                log.info("%s: cached result (%s)", job, run_dir.name)
                return load_result(run_dir)
    if not run_dir.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.json", json.dumps(
            {"job": job, "cfg": cfg, "reads": reads, "inputs": inputs, "started_at": time.time(), "modules": code,
             "code_versions": [_code_version(job, "started")]}, indent=2, default=str))
    start = time.time()
    _log_start(run_dir)
    _reset_peak_memory()
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


def _record_version(run_dir: Path, job: str, code: dict, how: str) -> None:
    """Add this process's code version to the run's config.json (a resume; a result served as it is adds one
    only when kept under changed code), and make it the version the next check compares with."""
    config = run_dir / "config.json"
    recorded = json.loads(config.read_text())
    if how == "resumed" and (run_dir / "result.json").exists():
        return  # a finished result served: nothing ran
    recorded["code_versions"] = recorded.get("code_versions", []) + [_code_version(job, how)]
    recorded["modules"] = code
    atomic_write(config, json.dumps(recorded, indent=2, default=str))


def _job_module(job: str):
    return importlib.import_module(f"vlpt_lib.jobs.{job}")


def _reset_peak_memory() -> None:
    """Inline jobs share the notebook's process: each job's peak GPU memory starts from its own beginning."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _save_result(run_dir: Path, result: dict, start: float) -> None:
    result = dict(result or {})
    result.setdefault("run_id", run_dir.name)
    result.setdefault("wall_s", round(time.time() - start, 2))
    if torch.cuda.is_available():  # this process's peak since the job started (gpu-check reports it per job)
        result.setdefault("peak_mem_gib", round(torch.cuda.max_memory_allocated() / 2**30, 2))
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

    options = {"timeout_min": 60 * 24, "nodes": 1, "gpus_per_node": 1, "tasks_per_node": None}
    options.update(slurm)
    # cluster "local": submitit's local executor runs the same tasks on this machine (the dry run's SLURM test)
    executor = submitit.AutoExecutor(folder=run_dir / "slurm", cluster=options.pop("cluster", None))
    if options["tasks_per_node"] is None:
        options["tasks_per_node"] = options["gpus_per_node"]
    executor.update_parameters(**options)
    submitted = executor.submit(_slurm_entry, job, str(run_dir))
    get_logger().info("submitted SLURM job %s for %s; logs in %s", submitted.job_id, job, run_dir / "slurm")
    submitted.results()  # waits for every task; raises with the remote traceback if one failed


def _slurm_entry(job: str, run_dir: str) -> None:
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    _main_body(_job_module(job).run, Path(run_dir))


def _main_body(run, run_dir: Path) -> None:
    cfg = json.loads((run_dir / "config.json").read_text())["cfg"]
    start = time.time()
    distributed.init_from_env(cfg.get("device", "auto"))  # every Config has a device field
    _reset_peak_memory()
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
