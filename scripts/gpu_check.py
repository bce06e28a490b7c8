"""`make gpu-check` and `make gpu-wheels`: everything that needs a GPU, as one prepared run of at most 8 minutes.

    python scripts/gpu_check.py wheels [--python-version 3.12] [--dest .whl]   # where the package registry is
    python scripts/gpu_check.py check  [--budget-s 480] [--wheels .whl]        # one H100/H200, no network

`wheels` builds this project's wheel, lets pip resolve its dependencies for the GPU machine's Python
(Linux x86-64 binary wheels), drops what that machine's image already has (GPU_IMAGE_HAS: torch,
torchvision, timm's neighbours, pandas, matplotlib, ...) and downloads the rest into --dest; it prints
their size against the 64 MiB that travels to the device together with the working tree.

`check` (scripts/gpu_check.sh) on the GPU machine, each step under its own timeout inside the budget:
  setup    a venv with --system-site-packages (torch etc. come from the machine) and the wheels installed
           with --no-index; the working tree is on PYTHONPATH, so the code that runs is this checkout's
  cocoop   python -m vlpt_lib bench cocoop --device cuda: ViT-B/16, 100 classes (training and evaluation
           against the per-image reference), then the ImageNet-val projection at 1,000 classes
  mvp      python -m vlpt_lib bench mvp --device cuda: BEiT ViT-B/16 student + CLIP ViT-B/16 teacher,
           fp32 eager vs bf16 + fused AdamW vs torch.compile; images/s and MFU
  dry-run  python -m vlpt_lib reproduce --profile paper --dry-run (the on_cuda caps apply): what time is left
A failed step is reported and the next one runs; the exit status is 1 if any step did not finish.
Then it writes ONE JSON, results/bench/gpu_check-<card>.json (steps, targets, both bench results, the
dry run's notebooks and per-job peak GPU memory), copies the bench figures to
results/bench/{cocoop,mvp}-<card>.png and prints the summary.

Only the standard library here: the summary must come out even when the install fails.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 480            # the 8 minutes, setup included
SUMMARY_RESERVE_S = 15    # kept back from the last step for the summary
MIN_STEP_S = 30           # a step with less time than this left is skipped, not started
TAIL_LINES = 40           # output lines of a failed step kept in the JSON
CARRY_MIB = 64            # what the device takes along: working tree + carried wheels

# Targets on one H100 (issue #9): (key, what, comparison, goal, unit).
TARGETS = [
    ("cocoop_train_speedup", "CoCoOp training speed-up over the per-image reference, 100 classes", ">=", 20.0, "x"),
    ("imagenet_val_eval_min", "CoCoOp evaluation of ImageNet val (50,000 images x 1,000 classes), projected",
     "<=", 3.0, "min"),
    ("mvp_mfu_pct", "MVP pre-training step MFU (bf16 dense peak of the card)", ">=", 45.0, "%"),
]

# The GPU machine's image already has these (its package list, read 2026-11-17; torch 2.11, Python 3.12):
# `wheels` skips them. timm is not here on purpose: a small wheel, installed only if the image's is too old.
GPU_IMAGE_HAS = {
    "anyio", "attrs", "certifi", "charset-normalizer", "click", "cloudpickle", "contourpy", "cycler", "filelock",
    "fonttools", "fsspec", "h11", "hf-xet", "httpcore", "httpx", "huggingface-hub", "idna", "jinja2", "kiwisolver",
    "markupsafe", "matplotlib", "mpmath", "networkx", "numpy", "packaging", "pandas", "pillow", "pip", "psutil",
    "pygments", "pyparsing", "python-dateutil", "pyyaml", "regex", "requests", "safetensors", "setuptools", "six",
    "sympy", "torch", "torchvision", "tqdm", "triton", "typing-extensions", "tzdata", "urllib3", "wheel",
}
GPU_IMAGE_PREFIXES = ("nvidia-", "cuda-")  # CUDA libraries come with the image's torch


# ----- card name -------------------------------------------------------------------------------
def card_tag(name: str) -> str:
    """A short file-name tag for a card: 'NVIDIA H100 80GB HBM3' -> 'H100', 'NVIDIA H100 PCIe' -> 'H100-PCIe'
    (vendor, memory size and memory type dropped; the model and its variant kept)."""
    words = [w for w in re.split(r"[\s\-_/]+", name)
             if w and w.upper() not in {"NVIDIA", "TESLA", "GEFORCE"} and not re.fullmatch(r"\d+GB|HBM\w*", w, re.I)]
    return "-".join(re.sub(r"[^A-Za-z0-9.]", "", w) for w in words) or "gpu"


def probe_card(python: str) -> str:
    """The name of CUDA device 0 as torch sees it, or '' when there is none (in a child: the GPU stays free)."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""


# ----- steps -----------------------------------------------------------------------------------
def _copy_lines(stream, log, tail: collections.deque) -> None:
    for line in stream:
        print(line, end="", flush=True)
        tail.append(line.rstrip("\n"))
        try:
            log.write(line)
        except ValueError:  # the log was closed after a timeout while a grandchild still printed
            return


def _kill_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the step's process group (it was started in a session of its own), SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


def run_step(name: str, cmd: list[str], timeout_s: float, env: dict | None, log_path: Path) -> dict:
    """Run one step under a timeout, its output shown and logged; what happened as a dict (never raises)."""
    print(f"\n=== {name} (timeout {timeout_s:.0f} s): {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
    timed_out = False
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", start_new_session=True)
        except OSError as err:
            return {"step": name, "status": "failed", "rc": None, "seconds": 0.0, "command": cmd,
                    "tail": [f"{type(err).__name__}: {err}"]}
        reader = threading.Thread(target=_copy_lines, args=(proc.stdout, log, tail), daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc)  # a timed-out step, or what a finished one left running (kernels, workers)
        rc = proc.wait()
        reader.join(timeout=5)  # a grandchild outside the group may still hold the pipe: do not wait on it
    seconds = round(time.monotonic() - start, 1)
    status = "timeout" if timed_out else ("ok" if rc == 0 else "failed")
    print(f"=== {name}: {status} after {seconds:.1f} s", flush=True)
    rec = {"step": name, "status": status, "rc": rc, "seconds": seconds, "command": cmd}
    if status != "ok":
        rec["tail"] = list(tail)
    return rec


def skipped(name: str, cmd: list[str], left_s: float) -> dict:
    note = f"not started: {max(left_s, 0):.0f} s of the budget left (a step needs {MIN_STEP_S} s)"
    print(f"\n=== {name}: skipped, {note}", flush=True)
    return {"step": name, "status": "skipped", "rc": None, "seconds": 0.0, "command": cmd, "tail": [note]}


def bench_commands(python: str) -> list[tuple[str, list[str], int]]:
    """(name, command, cap in seconds) of the two benches, at the sizes the targets are stated for."""
    return [
        ("cocoop", [python, "-m", "vlpt_lib", "bench", "cocoop", "--device", "cuda", "--model", "ViT-B-16",
                    "--classes", "100", "--batch", "32"], 210),
        ("mvp", [python, "-m", "vlpt_lib", "bench", "mvp", "--device", "cuda", "--model", "beit_base",
                 "--batch", "128", "--steps", "20", "--warmup", "5", "--modes", "eager,tuned,compiled",
                 "--max-seconds", "30"], 210),
    ]


def dry_run_command(python: str) -> list[str]:
    return [python, "-m", "vlpt_lib", "reproduce", "--profile", "paper", "--dry-run"]


def venv_site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def setup(venv: Path, wheels: Path) -> int:
    """The venv of the check: the machine's packages visible, the wheels of `make gpu-wheels` installed."""
    project = sorted(wheels.glob("vlpt_lib-*.whl"))
    if not project:
        print(f"no vlpt_lib wheel in {wheels}: run `make gpu-wheels` where the package registry is reachable "
              f"and bring {wheels.name}/ along (the device's `carry`)", file=sys.stderr)
        return 1
    python = venv / "bin" / "python"
    if not python.exists():
        # --without-pip: Debian's Python has no ensurepip; the machine's pip is visible through its site-packages.
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                       check=True)
    if sys.prefix != sys.base_prefix:
        # This Python is itself a venv (the GPU image's is): --system-site-packages reaches only the base
        # interpreter's packages, so point the new venv at this one's too (torch lives there).
        (venv_site_packages(venv) / "_machine_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", str(project[-1])]
    print(" ".join(install), flush=True)
    if subprocess.run(install).returncode != 0:
        return 1
    needed = "import torch, open_clip, ftfy, papermill, ipykernel, nbconvert, submitit"
    return subprocess.run([str(python), "-c", needed + "; print('imports ok, torch', torch.__version__)"]).returncode


def step_env(venv: Path, results_root: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The checkout first (its code, not the wheel's copy), then the venv's packages: a notebook kernel started
    # through another kernelspec's Python still finds both.
    paths = [str(REPO), str(venv_site_packages(venv))] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if results_root is not None:
        env["VLPT_RESULTS_ROOT"] = str(results_root)
    return env


def results_root() -> Path:
    """vlpt_lib.workbook.paths.results_root without importing the package (this script needs no install)."""
    return Path(os.environ.get("VLPT_RESULTS_ROOT", REPO / "results"))


def check(budget_s: float, wheels: Path, venv: Path, work: Path) -> int:
    start = time.monotonic()
    deadline = start + budget_s
    card = probe_card(sys.executable)
    if not card:
        print("gpu-check needs a CUDA GPU that torch can see, and none is visible from "
              f"{sys.executable} (GPU_PYTHON picks another Python)", file=sys.stderr)
        return 2
    print(f"gpu-check on {card} ({card_tag(card)}), budget {budget_s:.0f} s; logs in {work}", flush=True)
    python = str(venv / "bin" / "python")
    bench_root = work / "results"  # the benches write here; the summary gathers their JSON into one
    steps = []
    plan = [("setup", [sys.executable, str(Path(__file__).resolve()), "setup", "--venv", str(venv),
                       "--wheels", str(wheels)], 120, None)]
    plan += [(name, cmd, cap, bench_root) for name, cmd, cap in bench_commands(python)]
    plan += [("dry-run", dry_run_command(python), None, None)]
    for name, cmd, cap, root in plan:
        left = deadline - time.monotonic() - SUMMARY_RESERVE_S
        timeout = left if cap is None else min(cap, left)
        if timeout < MIN_STEP_S:
            steps.append(skipped(name, cmd, left))
            continue
        if name == "dry-run":  # nothing cached by an earlier run may hide a bug (as `make dry-run`)
            shutil.rmtree(results_root() / "dry-run" / "paper", ignore_errors=True)
        steps.append(run_step(name, cmd, timeout, step_env(venv, root), work / f"{name}.log"))
    summary = summarize(card, steps, bench_root / "bench", results_root(), time.monotonic() - start, budget_s)
    return 0 if all(s["status"] == "ok" for s in summary["steps"]) else 1


# ----- summary ---------------------------------------------------------------------------------
def _load(path: Path | None) -> dict | None:
    try:
        return json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None


def _newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def best_mvp_record(mvp: dict | None) -> dict | None:
    """The record the bench names as its best mode, else the fastest that ran."""
    records = [r for r in (mvp or {}).get("records", []) if "img_per_s" in r]
    named = [r for r in records if r.get("mode") == (mvp or {}).get("best_mode")]
    return named[0] if named else max(records, key=lambda r: r["img_per_s"], default=None)


def target_values(cocoop: dict | None, mvp: dict | None) -> dict:
    """The measured value of each target (None where the bench did not measure it)."""
    cocoop = cocoop or {}
    best = best_mvp_record(mvp)
    mfu = best.get("mfu") if best else None
    return {
        "cocoop_train_speedup": cocoop.get("train_speedup") if cocoop.get("classes") == 100 else None,
        "imagenet_val_eval_min": cocoop.get("imagenet_val_projection_min"),
        "mvp_mfu_pct": 100 * mfu if mfu is not None else None,
    }


def judge(value: float | None, op: str, goal: float, unit: str) -> tuple[bool | None, str]:
    """(pass?, note); a miss says by what factor."""
    if value is None:
        return None, "not measured (see the steps)"
    if op == ">=":
        return (True, "") if value >= goal else (False, f"{goal / value:.2f}x short of {goal:g} {unit}")
    return (True, "") if value <= goal else (False, f"{value / goal:.2f}x over {goal:g} {unit}")


def evaluate_targets(cocoop: dict | None, mvp: dict | None) -> list[dict]:
    values = target_values(cocoop, mvp)
    rows = []
    for key, what, op, goal, unit in TARGETS:
        passed, note = judge(values[key], op, goal, unit)
        rows.append({"key": key, "target": what, "goal": f"{op} {goal:g} {unit}", "value": values[key],
                     "unit": unit, "pass": passed, "note": note})
    return rows


def dry_run_summary(folder: Path) -> dict:
    """The dry run's notebooks (status, seconds) and jobs (wall time, peak GPU memory where recorded)."""
    notebooks = [{"notebook": p.name[:-len(".run.json")], **{k: rec.get(k) for k in ("status", "seconds")}}
                 for p in sorted((folder / "notebooks").glob("*.run.json")) if (rec := _load(p)) is not None]
    jobs = [{"run": p.parent.name, "wall_s": rec.get("wall_s"), "peak_mem_gib": rec.get("peak_mem_gib")}
            for p in sorted((folder / "runs").glob("*/result.json")) if (rec := _load(p)) is not None]
    peaks = [j["peak_mem_gib"] for j in jobs if j["peak_mem_gib"] is not None]
    return {"folder": str(folder), "notebooks": notebooks, "jobs": jobs,
            "max_peak_mem_gib": max(peaks) if peaks else None,
            "jobs_without_peak_mem": sum(j["peak_mem_gib"] is None for j in jobs)}


def summarize(card: str, steps: list[dict], bench_src: Path, root: Path, total_s: float,
              budget_s: float = BUDGET_S) -> dict:
    """Write results/bench/gpu_check-<card>.json and the figures; print the summary; return the JSON's dict."""
    tag = card_tag(card)
    out_dir = root / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    cocoop = _load(_newest(bench_src, "cocoop_cuda*.json"))
    mvp = _load(_newest(bench_src, "mvp_cuda*.json"))
    figures = {}
    for name in ("cocoop", "mvp"):
        png = _newest(bench_src, f"{name}_cuda*.png")
        if png is not None:
            figures[name] = str(shutil.copyfile(png, out_dir / f"{name}-{tag}.png"))
    dry_ran = any(s["step"] == "dry-run" and s["status"] != "skipped" for s in steps)
    summary = {
        "card": card, "tag": tag, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "total_s": round(total_s, 1),
        "budget_s": budget_s, "steps": steps, "targets": evaluate_targets(cocoop, mvp),
        "cocoop": cocoop, "mvp": mvp, "dry_run": dry_run_summary(root / "dry-run" / "paper") if dry_ran else None,
        "figures": figures,
    }
    path = out_dir / f"gpu_check-{tag}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
    print(summary_text(summary, path))
    return summary


def _fmt(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.1f} {unit}"


def summary_text(summary: dict, path: Path) -> str:
    lines = [f"\n=== gpu-check on {summary['card']}: {summary['total_s'] / 60:.1f} min "
             f"(budget {summary['budget_s'] / 60:.0f})"]
    for s in summary["steps"]:
        lines.append(f"  {s['step']:8s} {s['status']:8s} {s['seconds']:7.1f} s")
    lines.append("  targets:")
    for t in summary["targets"]:
        verdict = {True: "pass", False: "MISS", None: "n/a"}[t["pass"]]
        lines.append(f"  {verdict:4s}  {t['target']}: {_fmt(t['value'], t['unit'])} (goal {t['goal']})"
                     + (f"; {t['note']}" if t["note"] else ""))
    mvp, best = summary["mvp"], best_mvp_record(summary["mvp"])
    if best:
        lines.append(f"  mvp: {best['img_per_s']:.0f} img/s in mode {best['mode']}, "
                     f"{_fmt(best.get('peak_mem_gib'), 'GiB')} peak memory; MFU against {mvp.get('peak_tflops')} "
                     f"TFLOP/s ({mvp.get('peak_source')})")
        failed_modes = [r["mode"] for r in mvp.get("records", []) if "error" in r]
        if failed_modes:
            lines.append(f"  mvp modes that failed: {', '.join(failed_modes)} (errors in the JSON)")
    cocoop = summary["cocoop"]
    if cocoop:
        lines.append(f"  cocoop: {_fmt(cocoop.get('peak_mem_gib'), 'GiB')} peak memory at {cocoop.get('classes')} "
                     f"classes, {_fmt(cocoop.get('projection_peak_mem_gib'), 'GiB')} in the projection")
        for name, res in (cocoop.get("deep_prompt_methods") or {}).items():
            lines.append(f"  {name}: training {res['train_speedup']:.1f}x, evaluation {res['eval_speedup']:.1f}x faster "
                         f"than its official way of computing ({res['train_fast_images_per_s']:.0f} / "
                         f"{res['eval_fast_images_per_s']:.0f} images/s, batch {res['batch']})")
    dry = summary["dry_run"]
    if dry:
        ok = sum(n["status"] == "ok" for n in dry["notebooks"])
        lines.append(f"  dry run: {ok}/{len(dry['notebooks'])} notebooks ok, {len(dry['jobs'])} jobs, "
                     f"{_fmt(dry['max_peak_mem_gib'], 'GiB')} peak GPU memory at most "
                     f"({dry['jobs_without_peak_mem']} jobs without a record)")
    lines.append(f"  JSON {path}; figures {', '.join(summary['figures'].values()) or 'none'}")
    return "\n".join(lines)


# ----- wheels ----------------------------------------------------------------------------------
def platform_args(python_version: str) -> list[str]:
    """pip's flags for CPython `python_version` on Linux x86-64 (pip matches manylinux tags exactly: list them)."""
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(17, 40)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for p in platforms:
        args += ["--platform", p]
    return args


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def on_gpu_image(name: str) -> bool:
    name = normalize(name)
    return name in GPU_IMAGE_HAS or name.startswith(GPU_IMAGE_PREFIXES)


def tree_bytes() -> int:
    """Bytes of what travels with every device call: tracked and untracked-but-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return sum((REPO / f).stat().st_size for f in out.split("\0") if f and (REPO / f).is_file())


def wheels(dest: Path, python_version: str) -> int:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):  # one version of each: two of one package stop the install there
        old.unlink()
    had_build = (REPO / "build").exists()
    subprocess.run(pip + ["wheel", "--no-deps", "--quiet", "-w", str(dest), str(REPO)], check=True)
    if not had_build:  # setuptools builds in the tree: leave no untracked build/ to travel with the tree
        shutil.rmtree(REPO / "build", ignore_errors=True)
    project = sorted(dest.glob("vlpt_lib-*.whl"))[-1]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        print(f"resolving the dependencies of {project.name} for CPython {python_version} on Linux x86-64 ...",
              flush=True)
        subprocess.run(pip + ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                              "--target", str(Path(tmp) / "target"), *platform_args(python_version), str(project)],
                       check=True)
        installs = json.loads(report.read_text())["install"]
        resolved = [(i["metadata"]["name"], i["metadata"]["version"]) for i in installs]
    wanted = [f"{name}=={version}" for name, version in resolved
              if not on_gpu_image(name) and normalize(name) != "vlpt-lib"]
    print(f"{len(resolved)} packages resolved; {len(wanted)} missing on the GPU image: {' '.join(wanted)}", flush=True)
    subprocess.run(pip + ["download", "--no-deps", "--quiet", "-d", str(dest), *platform_args(python_version),
                          *wanted], check=True)
    files = sorted(dest.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
    mib = sum(p.stat().st_size for p in files) / 2**20
    tree_mib = tree_bytes() / 2**20
    print(f"{len(files)} wheels, {mib:.1f} MiB in {dest}; working tree {tree_mib:.1f} MiB; "
          f"together {mib + tree_mib:.1f} of the {CARRY_MIB} MiB a device call carries")
    print("largest: " + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in files[:5]))
    if mib + tree_mib > CARRY_MIB:
        print(f"OVER by {mib + tree_mib - CARRY_MIB:.1f} MiB: drop the largest wheels above whose package the "
              "GPU image turns out to have (add it to GPU_IMAGE_HAS), or carry fewer results", file=sys.stderr)
        return 1
    return 0


# ----- command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="the GPU check (one H100/H200, no network)")
    c.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole run's time, setup included")
    c.add_argument("--wheels", type=Path, default=REPO / ".whl", help="folder of `make gpu-wheels`")
    c.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "vlpt-gpu-venv",
                   help="venv to create or reuse (outside the checkout: nothing to ignore)")
    c.add_argument("--work", type=Path, default=None, help="folder for step logs and raw bench output "
                                                           "(default: a new temp folder)")
    s = sub.add_parser("setup", help="only the venv + install step (run by check)")
    s.add_argument("--venv", type=Path, required=True)
    s.add_argument("--wheels", type=Path, required=True)
    w = sub.add_parser("wheels", help="download the wheels the GPU machine lacks (needs the package registry)")
    w.add_argument("--python-version", default="3.12", help="the GPU machine's Python (major.minor)")
    w.add_argument("--dest", type=Path, default=REPO / ".whl")
    args = parser.parse_args(argv)
    if args.command == "wheels":
        return wheels(args.dest, args.python_version)
    if args.command == "setup":
        return setup(args.venv, args.wheels)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    return check(args.budget_s, args.wheels, args.venv, work)


if __name__ == "__main__":
    sys.exit(main())
