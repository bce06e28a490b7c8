"""`python -m vlpt_lib reproduce`: run every notebook with papermill, in dependency order.

Each notebook runs with params/<profile>/<name>.yaml (plus `profile`), its executed copy lands in
results/<profile>/notebooks/ with a record beside it (<name>.run.json). The report is rendered at the end,
also after a failure.

The notebook cache: a notebook whose record says "ok" is skipped (`cache_parts`, `stale_reason`) unless
its parameters, its cells' source, the code it runs (`notebook_code`: what its cells import, hashed on meaning
as a job's code is, jobs.launch), its data root (the data_root parameter, else $VLPT_DATA_ROOT
on the paper profile or the generated world) or an upstream notebook's run (PIPELINE: a new run of
10_mvp_pretrain re-runs 11 and 12) changed, a table it wrote (tables.TABLES) is missing, or a job run it
used was recomputed or would be (its inputs changed: jobs.launch). `status()` says which and why, running
nothing. `force=True` re-runs the notebooks and, through $VLPT_RECOMPUTE_BEFORE (the time this reproduce
started, inherited by the kernels), recomputes every job result they use that is older, once.

Crash consistency: the record says "running" while a notebook executes and "ok" only after its executed
copy and tables are written; papermill writes into notebooks/.partial/, moved into place when the
notebook ends (ok or failed). A run stopped by Ctrl-C leaves "interrupted", a killed one "running", one the
disk refused (full, read-only) "failed" with the path: all re-run next time, their jobs resuming from their
checkpoints.

`dry_run=True` (paper profile only): the paper notebooks with params/paper unchanged except the caps in
params/dry-run/ (printed first), on a synthetic data root shaped like the real one and ViT-B/16 with random
weights (`profiles.dry_run_params`); everything lands in results/dry-run/, never in results/paper/.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import nbformat
import papermill as pm
from jupyter_client.manager import AsyncKernelManager
from tqdm.auto import tqdm

from ..jobs.launch import CODE_CHANGE_ENV, RECOMPUTE_BEFORE_ENV, RUN_LOG_ENV, code_change, code_change_message
from ..jobs.launch import result_digest
from ..data.check import DataMissing
from ..jobs.launch import stale_reason as job_stale_reason
from ..utils.faults import RUNNER_PID_ENV, fault_point
from ..utils.fingerprint import changed_modules, source_closure
from ..utils.io import atomic_write
from ..utils.lock import exclusive
import torch

from . import cocoop, mvp, paths, profiles
from . import params as notebook_params
from .metadata import write_run_metadata
from .report import render_report
from .tables import TABLES, pipeline, tables_dir

# name -> notebooks it needs first (from the table specs, tables.pipeline). The key order is a valid run order.
PIPELINE: dict[str, tuple[str, ...]] = pipeline()
ALWAYS_RUN = {"99_report"}
SETUP = "00_setup"
PARAM_CHECKS = {**mvp.PARAM_CHECKS, **cocoop.PARAM_CHECKS}  # job-config diffs in the notebooks' parameters
DATA_NEEDS = {**mvp.DATA_NEEDS, **cocoop.DATA_NEEDS}  # notebook -> the datasets its parameters make it read
class NotebookFailed(RuntimeError):
    pass


class DataNotReady(NotebookFailed):
    """00_setup found data or CLIP weights missing (data.check.DataMissing): its message is all the user reads."""


class RunsMadeByOtherCode(RuntimeError):
    """Job runs this reproduce would use were made by other code, and the profile never discards them unasked."""


@dataclass
class Outcome:
    name: str
    status: str  # "ran", "cached", "failed", "skipped"
    seconds: float = 0.0
    message: str = ""
    reason: str = ""  # why it ran (stale_reason)
    data_missing: bool = False  # failed with 00_setup's DataMissing: `message` is that text alone


@dataclass
class NotebookState:
    """What `status` reports for one notebook."""
    name: str
    reason: str | None  # None: cached; else why it would run
    runs_cached: int = 0  # of the job runs its last run used, those still served from cache
    runs_total: int = 0
    stale_runs: list = None  # [(run folder name, why it would not be served)]
    seconds: float | None = None  # its last run's time (None: never ran)


def notebooks_dir() -> Path:
    return paths.REPO_ROOT / "notebooks"


def params_dir() -> Path:
    return paths.REPO_ROOT / "params"


def available(nb_dir: Path | None = None, profile: str | None = None) -> list[str]:
    """Notebooks that exist, in run order (unknown extra notebooks run before the report); on `profile`, those it
    runs (the paper profile has no generated world to make)."""
    nb_dir = nb_dir or notebooks_dir()
    present = sorted(p.stem for p in nb_dir.glob("*.ipynb") if p.stem not in profiles.notebooks_skipped(profile))
    ordered = [n for n in PIPELINE if n in present]
    extra = [n for n in present if n not in PIPELINE]
    return [n for n in ordered if n != "99_report"] + extra + (["99_report"] if "99_report" in present else [])


def resolve(names: list[str], present: list[str]) -> list[str]:
    """Map --only arguments (notebook names, with or without the number, or table names) to notebooks."""
    chosen = []
    for name in names:
        table = TABLES.get(name)
        matches = [n for n in present if name in (n, n.split("_", 1)[1]) or (table and table.notebook == n)]
        if not matches:
            raise SystemExit(f"--only {name}: no such notebook or table; notebooks: {', '.join(present)}")
        chosen += matches
    # Dependencies come along (cached ones cost nothing), then the report.
    needed: list[str] = []

    def add(n: str) -> None:
        for dep in PIPELINE.get(n, []):
            if dep in present:
                add(dep)
        if n not in needed:
            needed.append(n)

    if SETUP in present:  # the data/weights check comes first, whatever is selected (it stops a paper run early)
        add(SETUP)
    for n in chosen:
        add(n)
    if "99_report" in present and "99_report" not in needed:
        needed.append("99_report")
    return [n for n in present if n in needed]


def load_params(name: str, profile: str, p_dir: Path | None = None, nb_dir: Path | None = None) -> dict:
    """params/<profile>/<name>.yaml checked against the notebook's parameters cell (ParamsError if not)."""
    return notebook_params.load(name, profile, p_dir or params_dir(), nb_dir or notebooks_dir(), PARAM_CHECKS)


def warn_unread_params(profile: str, p_dir: Path | None = None, nb_dir: Path | None = None,
                       dry_run: bool = False) -> list[str]:
    """Print (and return) a warning for each file in params/<profile>/ (and params/dry-run/ for a dry run) that no
    notebook reads: a misnamed file would otherwise be ignored without a word while the defaults run."""
    notebooks = available(nb_dir)
    lines = []
    for folder in [profile] + (["dry-run"] if dry_run else []):
        lines += notebook_params.unread_files((p_dir or params_dir()) / folder, notebooks)
    for line in lines:
        print(f"WARNING: {line}", file=sys.stderr)
    return lines


def dry_run_caps_path(name: str, p_dir: Path | None = None) -> Path:
    return (p_dir or params_dir()) / "dry-run" / f"{name}.yaml"


def dry_run_caps(name: str, p_dir: Path | None = None, cuda: bool | None = None) -> dict:
    """params/dry-run/<name>.yaml: the dry run's caps on the paper params (its `on_cuda` block merged when a
    GPU is present)."""
    caps = notebook_params.read_yaml(dry_run_caps_path(name, p_dir))
    on_cuda = caps.pop("on_cuda", None) or {}
    if torch.cuda.is_available() if cuda is None else cuda:
        caps = notebook_params.merge(caps, on_cuda)
    return caps


def dry_run_params(name: str, p_dir: Path | None = None, nb_dir: Path | None = None) -> dict:
    """The paper params of a notebook with the dry run's caps on top, checked like any params file."""
    params = load_params(name, "paper", p_dir, nb_dir)
    caps = dry_run_caps(name, p_dir)
    merged = notebook_params.merge(params, caps)
    nb_path = (nb_dir or notebooks_dir()) / f"{name}.ipynb"
    notebook_params.check(name, merged, notebook_params.notebook_defaults(nb_path),
                          str(dry_run_caps_path(name, p_dir)), PARAM_CHECKS)
    return merged


ROOT_ENV = ("VLPT_RESULTS_ROOT", "VLPT_DATA_ROOT")
PART_REASONS = (("params", "params changed"), ("source", "notebook source changed"), ("code", "code changed"),
                ("data_root", "data root changed"))


def notebook_code(sources: list[str]) -> dict[str, str]:
    """{module: meaning hash} of the library code a notebook runs: what its cells import, through each other
    (the workbook that builds its tables, the jobs it launches): the rule a job's code follows."""
    return source_closure(sources)


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _absolute(path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def data_root_of(profile: str, params: dict, nb_path: Path) -> str | None:
    """The data root a notebook reads, absolute (profiles.resolve of its data_root parameter). None: it has no
    data_root parameter, or the paper profile has no root (the notebook stops and says so)."""
    defaults = notebook_params.notebook_defaults(nb_path)
    if "data_root" not in defaults:
        return None
    root = profiles.resolve(profile, {**defaults, **params}.get("data_root"), need_clip=False).data_root
    return str(root) if root else None


def _record(profile: str, name: str) -> dict | None:
    try:
        return json.loads((paths.executed_dir(profile) / f"{name}.run.json").read_text())
    except (OSError, ValueError):
        return None


def _execution_of(name: str, profile: str) -> str | None:
    """The id of a notebook's last run if it finished ok (what its downstream notebooks were built on)."""
    record = _record(profile, name) or {}
    return record.get("execution") if record.get("status") == "ok" else None


def cache_parts(name: str, profile: str, params: dict, nb_dir: Path | None = None) -> dict:
    """Everything a notebook's cached run depends on, part by part (each one a reason to re-run it)."""
    nb_dir = nb_dir or notebooks_dir()
    src = nb_dir / f"{name}.ipynb"
    cells = nbformat.read(src, as_version=4).cells
    sources = [c.source for c in cells]  # outputs are not part of it
    deps = [d for d in PIPELINE.get(name, []) if (nb_dir / f"{d}.ipynb").exists()]
    return {"params": _digest(params), "source": _digest(sources), "code": notebook_code([c.source for c in cells if c.cell_type == "code"]),
            "data_root": data_root_of(profile, params, src), "upstream": {d: _execution_of(d, profile) for d in deps}}


def run_key(parts: dict) -> str:
    return _digest(parts)


def _job_run_change(run: dict) -> str | None:
    """Why a job run a notebook used no longer gives the result its tables were built from (None: it does)."""
    why = job_stale_reason(run["run_dir"])
    if why is None and result_digest(run["run_dir"]) != run.get("result"):
        why = "recomputed since"
    return why


def stale_reason(name: str, profile: str, parts: dict, force: bool = False) -> str | None:
    """Why run_notebook would execute the notebook (None: its cached run stands)."""
    if force:
        return "--force"
    if name in ALWAYS_RUN:
        return "always runs"
    record = _record(profile, name)
    if record is None:
        return "never ran"
    if record.get("status") != "ok":
        return {"running": "last run did not finish (killed, or running now)",
                "interrupted": "last run was interrupted"}.get(record.get("status"), "last run failed")
    if not (paths.executed_dir(profile) / f"{name}.ipynb").exists():
        return "executed notebook missing"
    old = record.get("parts")
    if not old:
        return "recorded by an older version of the runner (no cache parts)"
    for part, reason in PART_REASONS:
        if old.get(part, "?") != parts[part]:
            if part == "code" and isinstance(old.get(part), dict):
                modules = changed_modules(old[part], parts[part])
                return f"{reason}: " + ", ".join(modules[:3]) + (f" and {len(modules) - 3} more" if len(modules) > 3 else "")
            return reason
    for dep, execution in parts["upstream"].items():
        if (old.get("upstream") or {}).get(dep, "?") != execution:
            return f"upstream {dep} changed"
    for table in record.get("tables", []):
        if not (tables_dir(profile) / f"{table}.csv").exists():
            return f"table {table} missing"
    for run in record.get("runs", []):
        why = _job_run_change(run)
        if why:
            return f"job run {Path(run['run_dir']).name}: {why}"
    return None


def rerun_command(name: str, profile: str) -> str:
    return f"python -m vlpt_lib reproduce --profile {profile} --only {name} --force"


def data_needs(todo: list[str], profile: str, p_dir: Path | None = None, nb_dir: Path | None = None,
               extra: dict[str, dict] | None = None) -> list[str] | None:
    """The datasets the selected notebooks read with the parameters they run with (DATA_NEEDS): 00_setup's
    `needs`, all that its strict check requires. None: not the paper profile (a generated world holds every
    dataset; its notebooks run on their own defaults), no setup notebook taking `needs` is selected, or no selected
    notebook reads data (`--only 00_setup`: the check of everything the profile reads)."""
    nb_dir = nb_dir or notebooks_dir()
    if profile != "paper" or SETUP not in todo or not any(name in DATA_NEEDS for name in todo) or \
            "needs" not in notebook_params.notebook_defaults(nb_dir / f"{SETUP}.ipynb"):
        return None
    needs = set()
    for name in todo:
        if name in DATA_NEEDS:
            params = {**notebook_params.notebook_defaults(nb_dir / f"{name}.ipynb"),
                      **notebook_params_for(name, profile, p_dir, nb_dir, (extra or {}).get(name))}
            needs.update(str(n) for n in DATA_NEEDS[name](params) if n)
    return sorted(needs)


def checked_tables(todo: list[str]) -> list[str]:
    """What 00_setup checks when only some notebooks run: their tables (and pre-training's data for 11/12)."""
    names = [name for name, table in TABLES.items() if table.notebook in todo]
    return names + (["mvp pre-training"] if "10_mvp_pretrain" in todo else [])


def notebook_params_for(name: str, profile: str, p_dir: Path | None = None, nb_dir: Path | None = None,
                        overrides: dict | None = None) -> dict:
    """What the notebook runs with: its checked params file, `overrides` on top, a relative data_root made
    absolute (the kernel runs in the notebooks' folder)."""
    params = notebook_params.merge(load_params(name, profile, p_dir, nb_dir), overrides or {})
    if isinstance(params.get("data_root"), str) and params["data_root"]:
        params["data_root"] = _absolute(params["data_root"])
    return params


def run_notebook(name: str, profile: str, *, force: bool = False, nb_dir: Path | None = None,
                 p_dir: Path | None = None, overrides: dict | None = None) -> Outcome:
    params = notebook_params_for(name, profile, p_dir, nb_dir, overrides)
    parts = cache_parts(name, profile, params, nb_dir)
    reason = stale_reason(name, profile, parts, force)
    if reason is None:
        return Outcome(name, "cached", (_record(profile, name) or {}).get("seconds", 0.0))
    return _execute(name, profile, (nb_dir or notebooks_dir()) / f"{name}.ipynb", params, parts, reason)


def _execute(name: str, profile: str, src: Path, params: dict, parts: dict, reason: str) -> Outcome:
    out_dir = paths.executed_dir(profile)
    out, record = out_dir / f"{name}.ipynb", out_dir / f"{name}.run.json"
    partial = out_dir / ".partial" / f"{name}.ipynb"  # papermill writes as it goes: not where the report looks
    run_log = partial.with_suffix(".runs.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    run_log.unlink(missing_ok=True)
    base = {"key": run_key(parts), "parts": parts, "params": params, "execution": uuid.uuid4().hex[:12]}
    # "running" until everything the record vouches for is written: a killed run never leaves an "ok" behind
    _write_record(record, {**base, "status": "running", "pid": os.getpid(), "started": _now()})
    start = time.time()
    status, message, data_missing = "ok", "", False
    try:
        out.unlink(missing_ok=True)  # the old executed copy describes a run whose results are being replaced
        fault_point("record-running")
        kernel_env = {RUN_LOG_ENV: str(run_log), RUNNER_PID_ENV: str(os.getpid())}
        with contextlib.ExitStack() as stack:
            if threading.current_thread() is threading.main_thread():  # one notebook at a time: this process too
                stack.enter_context(_environ(kernel_env))
            stack.enter_context(_following(name, run_log))
            pm.execute_notebook(str(src), str(partial), parameters=params, kernel_name="python3",
                                progress_bar=False, log_output=False,
                                kernel_manager_class=_kernel_manager(kernel_env, src.parent),
                                # quiet kernel logs: no "KeyboardInterrupt caught in kernel" at each shutdown
                                extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except pm.PapermillExecutionError as err:
        if err.ename == "KeyboardInterrupt":  # Ctrl-C reached the kernel: an interruption, not a failure
            _interrupted(record, base, partial, start)
            raise KeyboardInterrupt(f"notebook {name} interrupted") from None
        status = "failed"
        first_line = (err.source or "").strip().splitlines()[:1]
        if err.ename == DataMissing.__name__:  # the data check: what to do and what is missing, nothing else
            message, data_missing = err.evalue, True
        else:
            message = (f"notebook {name} failed in cell {err.cell_index} "
                       f"({first_line[0] if first_line else 'empty'}): {err.ename}: {err.evalue}\n"
                       f"  executed copy with the traceback: {out}\n"
                       f"  re-run it with: {rerun_command(name, profile)}")
    except OSError as err:  # the disk (full, read-only), not the notebook: the CLI says it in one line
        _best_effort_record(record, {**base, "status": "failed", "reason": f"{err.strerror or err}: {err.filename}",
                                     "seconds": round(time.time() - start, 1), "finished": _now()})
        partial.unlink(missing_ok=True)
        raise
    except BaseException:  # KeyboardInterrupt (or SystemExit) in the runner itself
        _interrupted(record, base, partial, start)
        raise
    _portable(partial, params.get("data_root"))
    os.replace(partial, out)
    seconds = round(time.time() - start, 1)
    tables = [t for t, spec in TABLES.items()
              if spec.notebook == name and (tables_dir(profile) / f"{t}.csv").exists()]
    _write_record(record, {**base, "status": status, "seconds": seconds, "finished": _now(),
                           "runs": _runs_used(run_log), "tables": tables})
    run_log.unlink(missing_ok=True)
    return Outcome(name, "ran" if status == "ok" else "failed", seconds, message, reason, data_missing)


def _portable(executed: Path, data_root: str | None) -> None:
    """Write the executed notebook's outputs with this machine's folders named as the user sets them ($VLPT_RESULTS_ROOT
    or results/, the repository as ., the data root as $VLPT_DATA_ROOT): the copy is committed and published (the
    report), and the paths of the machine that ran it mean nothing elsewhere."""
    results = paths.results_root().resolve()
    roots = [(str(results), "$VLPT_RESULTS_ROOT" if os.environ.get("VLPT_RESULTS_ROOT") else "results"),
             (str(paths.REPO_ROOT), ".")]
    if data_root and not Path(data_root).resolve().is_relative_to(results):
        roots.append((str(Path(data_root).resolve()), "$VLPT_DATA_ROOT"))
    roots.sort(key=lambda r: -len(r[0]))  # the longest first: a results root inside the repository

    def rewrite(text: str) -> str:
        for root, name in roots:
            text = text.replace(root + os.sep, name + os.sep).replace(root, name)
        return text

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError):
        return  # nothing readable to rewrite (the run's error is what gets reported)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = rewrite(output["text"])
            for kind in ("text/plain", "text/html", "text/markdown"):
                if kind in output.get("data", {}):
                    value = output["data"][kind]
                    output["data"][kind] = rewrite(value if isinstance(value, str) else "".join(value))
            if "traceback" in output:
                output["traceback"] = [rewrite(line) for line in output["traceback"]]
    run_info = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(run_info.get(key), str):
            run_info[key] = rewrite(run_info[key])
    nbformat.write(nb, executed)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _write_record(path: Path, record: dict) -> None:
    atomic_write(path, json.dumps(record, indent=2, default=str))


def _interrupted(record: Path, base: dict, partial: Path, start: float) -> None:
    """Mark the run interrupted (it re-runs next time) and drop its half-written executed copy."""
    _best_effort_record(record, {**base, "status": "interrupted", "seconds": round(time.time() - start, 1),
                                 "finished": _now()})
    partial.unlink(missing_ok=True)


def _best_effort_record(path: Path, record: dict) -> None:
    """A record written on the way out of an error: if the disk refuses it too, the error that is propagating is
    the one to report (the record then still says "running", which re-runs the notebook next time as well)."""
    try:
        _write_record(path, record)
    except OSError:
        pass


def _runs_used(run_log: Path) -> list[dict]:
    """The job runs the notebook's run_job calls logged ({run_dir, result digest}), the last entry per run."""
    if not run_log.exists():
        return []
    runs = {}
    for line in run_log.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry.get("event") != "start":
                runs[entry["run_dir"]] = entry
    return list(runs.values())


@contextlib.contextmanager
def _following(name: str, run_log: Path):
    lines = _JobLines(name, run_log)
    lines.start()
    try:
        yield
    finally:
        lines.done.set()
        lines.join()


class _JobLines(threading.Thread):
    """Follows a running notebook's run log ($VLPT_RUN_LOG): a line under the bar when one of its job runs starts
    computing and when it finishes (served-from-cache runs stay quiet), so a long notebook is never silent."""

    def __init__(self, name: str, run_log: Path):
        super().__init__(daemon=True)
        self.name_, self.run_log, self.done, self.started = name, run_log, threading.Event(), {}

    def run(self) -> None:
        offset = 0
        while not self.done.wait(2.0):
            offset = self._follow(offset)
        self._follow(offset)

    def _follow(self, offset: int) -> int:
        try:
            with open(self.run_log, "rb") as f:
                f.seek(offset)
                text = f.read().decode()
        except OSError:
            return offset
        complete = text[:text.rfind("\n") + 1]  # a line being written is read next time
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            run = Path(entry["run_dir"]).name
            if entry.get("event") == "start":
                self.started[run] = entry["at"]
                tqdm.write(f"    {self.name_}: {run} started")
            elif run in self.started:
                seconds = entry.get("at", time.time()) - self.started.pop(run)
                tqdm.write(f"    {self.name_}: {run} finished in {seconds:.0f} s")
        return offset + len(complete.encode())


_KERNELS: set = set()  # kernel managers of the notebooks running now (an interrupt reaches each)


def _kernel_manager(env: dict[str, str], cwd: Path) -> type:
    """The kernel manager of one notebook run: its kernel starts in `cwd` with `env` on top of this process's
    environment. Papermill's own cwd= would chdir this whole process, and two notebooks running side by side
    (reproduce's `notebooks`) share one process environment, so neither is set process-wide."""
    class Manager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**os.environ, **(kw.get("env") or {}), **env}
            kw["cwd"] = str(cwd)
            _KERNELS.add(self)
            return await super().start_kernel(**kw)

        async def shutdown_kernel(self, *args, **kw):
            _KERNELS.discard(self)
            return await super().shutdown_kernel(*args, **kw)

    return Manager


@contextlib.contextmanager
def _environ(values: dict[str, str | None]):
    """Set (None: unset) environment variables for the block; the notebooks' kernels inherit them."""
    def apply(env: dict[str, str | None]) -> None:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    before = {k: os.environ.get(k) for k in values}
    try:
        apply(values)
        yield
    finally:
        apply(before)


def _absolute_roots():
    """$VLPT_RESULTS_ROOT and $VLPT_DATA_ROOT as absolute paths: the kernels run in the notebooks' folder."""
    return _environ({k: _absolute(os.environ[k]) for k in ROOT_ENV if os.environ.get(k)})


def _overrides(name: str, todo: list[str], selective: bool, extra: dict[str, dict] | None = None,
               needs: list[str] | None = None) -> dict:
    """The parameters the runner adds: the dry run's, with --only the tables 00_setup checks, and the datasets
    the selected notebooks read (`data_needs`), the only ones 00_setup requires."""
    overrides = (extra or {}).get(name, {})
    if name == SETUP and selective:  # with --only, 00_setup checks the data of the selected tables only
        overrides = notebook_params.merge(overrides, {"tables": checked_tables(todo)})
    if name == SETUP and needs is not None:
        overrides = notebook_params.merge(overrides, {"needs": needs})
    return overrides


def status(profile: str, only: list[str] | None = None, force: bool = False, nb_dir: Path | None = None,
           p_dir: Path | None = None) -> list[NotebookState]:
    """For each notebook `reproduce` would visit: cached, or why it would run. Runs and writes nothing."""
    present = available(nb_dir, profile)
    todo = resolve(only, present) if only else present
    warn_unread_params(profile, p_dir, nb_dir)
    states: list[NotebookState] = []
    would_run: set[str] = set()
    recorded_seconds = _committed_seconds(profile)
    with _absolute_roots():
        needs = data_needs(todo, profile, p_dir, nb_dir)
        for name in todo:
            params = notebook_params_for(name, profile, p_dir, nb_dir, _overrides(name, todo, bool(only), None, needs))
            parts = cache_parts(name, profile, params, nb_dir)
            reason = stale_reason(name, profile, parts, force)
            late = [d for d in parts["upstream"] if d in would_run]
            if late and (reason is None or reason.startswith("upstream")):
                reason = f"upstream {late[0]} would run"
            if reason is not None:
                would_run.add(name)
            record = _record(profile, name) or {}
            runs = record.get("runs", [])
            changes = [(Path(r["run_dir"]).name, _job_run_change(r)) for r in runs]
            stale = [(run, why) for run, why in changes if why is not None]
            seconds = record.get("seconds") if record.get("status") == "ok" else recorded_seconds.get(name)
            states.append(NotebookState(name, reason, len(runs) - len(stale), len(runs), stale, seconds))
    return states


def status_header(profile: str) -> list[str]:
    """Where `reproduce --profile` reads and writes (absolute), and, where no run was recorded in it yet but
    tables are there (a fresh clone's committed mini results), that running recomputes them."""
    results = paths.results_dir(profile).resolve()
    lines = [f"results: {results} (profile {profile}); what `reproduce` would do:"]
    tables = sorted(tables_dir(profile).glob("*.csv")) if tables_dir(profile).is_dir() else []
    if tables and not any(paths.executed_dir(profile).glob("*.run.json")):
        lines.append(f"  {len(tables)} tables are there (committed with the repository: {tables_dir(profile).resolve()}); "
                     "no run was recorded here, so running recomputes every one of them")
    return lines


def _committed_seconds(profile: str) -> dict[str, float]:
    """Each notebook's time in the results' run_metadata.json (the committed mini run on a fresh clone)."""
    try:
        notebooks = json.loads((paths.results_dir(profile) / "run_metadata.json").read_text()).get("notebooks", {})
    except (OSError, ValueError):
        return {}
    return {n: v["seconds"] for n, v in notebooks.items() if v.get("status") == "ok" and "seconds" in v}


def status_lines(states: list[NotebookState], at_once: int = 1) -> list[str]:
    """A line per notebook (cached, or would run and why), a line per job run it used that would not be served
    (why: its code, its data, an upstream run), and the estimated time of what would run."""
    width = max((len(s.name) for s in states), default=0)
    lines = []
    for s in states:
        runs = f" ({s.runs_cached}/{s.runs_total} job runs cached)" if s.runs_total else ""
        lines.append(f"  {s.name:<{width}}  {'cached' if s.reason is None else 'would run: ' + s.reason}{runs}")
        lines += [f"  {'':<{width}}    job {run}: {why}" for run, why in (s.stale_runs or [])]
    todo = [s for s in states if s.reason is not None and s.name not in ALWAYS_RUN]
    if not todo:
        lines.append("nothing to run: every table is served from the cache (`reproduce` re-renders the report)")
    elif any(s.seconds is None for s in todo):
        lines.append(f"{len(todo)} notebook(s) would run; time: unknown (not all ran here before)")
    else:
        total = sum(s.seconds for s in todo) / 60
        side = f", {at_once} side by side: about {total / at_once:.0f} min of wall-clock" if at_once > 1 else ""
        lines.append(f"{len(todo)} notebook(s) would run; time: {total:.0f} min of notebook time as last recorded"
                     f"{side} (less where their job runs are cached)")
    return lines


def changed_code_runs(profile: str, todo: list[str]) -> dict[str, list[str]]:
    """{run folder: modules changed} of the job runs made by other code that this reproduce may use: those the
    selected notebooks' last runs used, and those no notebook's record lists (an interrupted notebook's)."""
    runs_dir = paths.runs_dir(profile)
    if not runs_dir.is_dir():
        return {}
    listed: dict[str, set] = {}
    for record in paths.executed_dir(profile).glob("*.run.json"):
        for run in (_record(profile, record.name.removesuffix(".run.json")) or {}).get("runs", []):
            listed.setdefault(str(Path(run["run_dir"]).name), set()).add(record.name.removesuffix(".run.json"))
    changes = {}
    for run_dir in sorted(p for p in runs_dir.iterdir() if (p / "config.json").exists()):
        users = listed.get(run_dir.name)
        if users is None or users & set(todo):
            modules = code_change(run_dir)
            if modules:
                changes[str(run_dir)] = modules
    return changes


def code_change_lines(profile: str, only: list[str] | None = None, nb_dir: Path | None = None) -> list[str]:
    """`--status`'s account of the job runs made by other code (changed_code_runs) and what `reproduce` does
    with them on this profile."""
    present = available(nb_dir, profile)
    changes = changed_code_runs(profile, resolve(only, present) if only else present)
    if not changes:
        return []
    then = ("reproduce stops before any notebook and asks: --keep-runs or --force"
            if profiles.code_change_policy(profile) == "stop" else "reproduce recomputes them")
    return [f"job runs made by other code ({then}):", code_change_message(changes)]


def code_change_stop(changes: dict[str, list[str]]) -> str:
    return ("These job runs were made by other code (the modules whose code changed since):\n"
            f"{code_change_message(changes)}\n"
            "Nothing was run or discarded. Choose:\n"
            "  --keep-runs  keep them: interrupted ones resume from their checkpoints, finished ones are served, "
            "the code change is recorded in each run (config.json code_versions)\n"
            "  --force      recompute the selected notebooks' runs from scratch (with --only NAME, those "
            "notebooks' only)")


def reproduce(profile: str, only: list[str] | None = None, force: bool = False,
              nb_dir: Path | None = None, p_dir: Path | None = None, render: bool = True,
              dry_run: bool = False, notebooks: int | None = None, keep_runs: bool = False) -> list[Outcome]:
    """Run the selected notebooks (cached ones skipped) and render the report. notebooks: how many run side by
    side, each once its upstream has run (None: the profile's, profiles.notebooks_at_once). A job run made by
    other code: what profiles.code_change_policy says (paper: stop before any notebook runs, naming the runs),
    unless keep_runs (keep and resume them) or force (recompute)."""
    if force and keep_runs:
        raise notebook_params.ParamsError("--force recomputes the runs --keep-runs keeps: choose one")
    present = available(nb_dir, profile)
    todo = resolve(only, present) if only else present
    if dry_run and profile != "paper":
        raise notebook_params.ParamsError(f"--dry-run runs the paper profile on synthetic data; got --profile {profile}")
    warn_unread_params(profile, p_dir, nb_dir, dry_run)
    for name in todo:  # every parameter file is checked before the first notebook runs
        dry_run_params(name, p_dir, nb_dir) if dry_run else load_params(name, profile, p_dir, nb_dir)
    extra: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(_absolute_roots())
        if dry_run:
            extra = _dry_run_setup(todo, p_dir, nb_dir)
            # results here and in the kernels, which inherit the environment
            stack.enter_context(_environ({"VLPT_RESULTS_ROOT": str(paths.dry_run_dir())}))
        # One writer per results folder: a second `reproduce` of the same profile is refused, not interleaved.
        stack.enter_context(exclusive(paths.results_dir(profile) / ".reproduce.lock", f"results/{profile}"))
        if force:  # jobs too: a result older than this run is recomputed, once (the kernels inherit the variable)
            stack.enter_context(_environ({RECOMPUTE_BEFORE_ENV: f"{time.time():.3f}"}))
        policy = "recompute" if force else "keep" if keep_runs else profiles.code_change_policy(profile)
        stack.enter_context(_environ({CODE_CHANGE_ENV: policy}))  # the kernels' jobs follow it
        if policy == "stop":
            changes = changed_code_runs(profile, todo)
            if changes:
                raise RunsMadeByOtherCode(code_change_stop(changes))
        at_once = profiles.notebooks_at_once(profile) if notebooks is None else int(notebooks)
        return _reproduce_locked(profile, todo, force, nb_dir, p_dir, render, selective=bool(only), extra=extra,
                                 notebooks=at_once)


def _waits_for(name: str, todo: list[str]) -> set[str]:
    """The selected notebooks `name` must wait for: its upstream (PIPELINE), the setup notebook's data check
    (everything waits for it), and for the report, every other notebook."""
    if name == SETUP:
        return set()
    if name in ALWAYS_RUN:
        return {n for n in todo if n != name}
    return {d for d in PIPELINE.get(name, ()) if d in todo} | ({SETUP} & set(todo))


def _finish(bar, outcome: Outcome) -> Outcome:
    why = f": {outcome.reason}" if outcome.reason else ""
    bar.write(f"  {outcome.name}: {outcome.status} ({outcome.seconds:.0f} s){why}")
    bar.update()
    return outcome


def _dry_run_setup(todo: list[str], p_dir: Path | None, nb_dir: Path | None) -> dict[str, dict]:
    """Print the caps, generate the synthetic world; return each notebook's parameters on top of the paper's."""
    cuda = torch.cuda.is_available()
    print(f"DRY RUN of the paper profile: params/paper/ with the caps of params/dry-run/ on top "
          f"({'GPU: their on_cuda blocks apply' if cuda else 'no GPU: their on_cuda blocks do not apply'})")
    extra = {}
    shared = profiles.dry_run_params()
    for name in todo:
        caps = dry_run_caps(name, p_dir, cuda)
        defaults = notebook_params.notebook_defaults((nb_dir or notebooks_dir()) / f"{name}.ipynb")
        extra[name] = notebook_params.merge({k: v for k, v in shared.items() if k in defaults}, caps)
        caps_file = dry_run_caps_path(name, p_dir)
        if caps_file.exists():  # the file itself: its comments say what each cap replaces
            print(f"--- {caps_file.relative_to(caps_file.parents[2])}\n" + caps_file.read_text().rstrip())
    print(f"  every notebook: data_root {shared['data_root']} (synthetic, real class counts), "
          f"clip_pretrained {shared['clip_pretrained']} (ViT-B/16 architecture, random weights)")
    return extra


def _reproduce_locked(profile: str, todo: list[str], force: bool, nb_dir: Path | None, p_dir: Path | None,
                      render: bool, selective: bool, extra: dict[str, dict] | None = None,
                      notebooks: int = 1) -> list[Outcome]:
    outcomes: dict[str, Outcome] = {}
    failed: Outcome | None = None
    if extra:  # a dry run says so from the start (99_report reads it before the final metadata is written)
        write_run_metadata(profile, [], caps=extra)
    waits_for = {name: _waits_for(name, todo) for name in todo}
    pending = list(todo)
    needs = data_needs(todo, profile, p_dir, nb_dir, extra)

    def run(name: str) -> Outcome:
        overrides = _overrides(name, todo, selective, extra, needs)
        return run_notebook(name, profile, force=force, nb_dir=nb_dir, p_dir=p_dir, overrides=overrides)

    last_seconds = {**_committed_seconds(profile), **{n: (_record(profile, n) or {}).get("seconds") for n in todo
                                                      if (_record(profile, n) or {}).get("status") == "ok"}}

    def eta(running_names) -> str:
        """Time left if each notebook left takes what its last recorded run took (a cached one takes less)."""
        left = [n for n in pending + list(running_names) if n not in ALWAYS_RUN]
        if any(last_seconds.get(n) is None for n in left):
            return "time left: unknown"
        return f"at most ~{sum(last_seconds[n] for n in left) / 60 / max(1, notebooks):.0f} min left (last runs' times)"

    with tqdm(total=len(todo), desc=f"reproduce [{profile}]", unit="notebook", dynamic_ncols=True) as bar, \
            ThreadPoolExecutor(max(1, notebooks), thread_name_prefix="notebook") as pool:
        running: dict = {}
        while pending or running:
            for name in list(pending):  # start what may start: its upstream done, a free slot
                if failed is not None:
                    outcomes[name] = Outcome(name, "skipped", message=f"not run: {failed.name} failed")
                    pending.remove(name)
                    bar.update()
                elif len(running) < max(1, notebooks) and waits_for[name] <= set(outcomes):
                    pending.remove(name)
                    if notebooks <= 1:  # one at a time: in this thread (an interrupt reaches it directly)
                        bar.set_postfix_str(f"{name} · {eta([name])}")
                        outcomes[name] = _finish(bar, run(name))
                        failed = failed or (outcomes[name] if outcomes[name].status == "failed" else None)
                        break
                    running[pool.submit(run, name)] = name
                    bar.set_postfix_str(", ".join(running.values()) + " · " + eta(running.values()))
            if not running:
                if pending and failed is None and not any(waits_for[n] <= set(outcomes) for n in pending):
                    raise RuntimeError(f"cannot order the notebooks {pending}: each waits for another")
                continue
            try:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # stop the notebooks running beside each other: each marks itself
                for km in list(_KERNELS):  # as Lab's "interrupt kernel": the running cell raises KeyboardInterrupt
                    process = getattr(getattr(km, "provisioner", None), "process", None)
                    if process is not None and process.poll() is None:
                        process.send_signal(signal.SIGINT)
                wait(running)
                raise
            for future in done:
                name = running.pop(future)
                outcomes[name] = _finish(bar, future.result())
                if outcomes[name].status == "failed" and failed is None:
                    failed = outcomes[name]
    outcomes = [outcomes[name] for name in todo]
    # results/<profile>/run_metadata.json: what produced these numbers (a dry run: its parameters on the paper's)
    write_run_metadata(profile, outcomes, caps=extra or None)
    if render:
        index = render_report(profile)
        print(f"report: {index}")
    if failed is not None:
        raise (DataNotReady if failed.data_missing else NotebookFailed)(failed.message)
    return outcomes
