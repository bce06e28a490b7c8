"""One writer at a time: a second process on the same run folder or results folder is refused by name."""
import os
import signal
import subprocess
import sys

import pytest

from vlpt_lib.jobs import launch
from vlpt_lib.utils.lock import Busy
from vlpt_lib.workbook import runner
from vlpt_lib.workbook.paths import REPO_ROOT

CFG = {"n": 32, "dim": 4, "batch_size": 8, "epochs": 1, "seed": 0, "device": "cpu"}
HOLD = ("import sys, time\nfrom vlpt_lib.utils.lock import exclusive\n"
        "with exclusive(sys.argv[1], 'test'):\n    print('held', flush=True)\n    time.sleep(60)\n")


def _hold(lock_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_of_a_run_is_refused_and_a_killed_holder_frees_it(tmp_path):
    runs = tmp_path / "runs"
    run_dir = launch.run_dir_for("example", CFG, runs)
    holder = _hold(run_dir.with_name(f".{run_dir.name}.lock"))
    try:
        with pytest.raises(Busy, match=rf"(?s)in use by process {holder.pid} on .*Wait for it"):
            launch.run_job("example", CFG, runs)
        assert not (run_dir / "last.pt").exists(), "the refused process wrote nothing"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert launch.run_job("example", CFG, runs)["world_size"] == 1  # the dead holder left no stale lock


def test_a_second_reproduce_of_the_same_profile_is_refused(results_root, tmp_path):
    holder = _hold(results_root / "smoke" / ".reproduce.lock")
    try:
        with pytest.raises(Busy, match=f"results/smoke is in use by process {holder.pid}"):
            runner.reproduce("smoke", only=["00_setup"], render=False)
        proc = subprocess.run([sys.executable, "-m", "vlpt_lib", "reproduce", "--profile", "smoke", "--only",
                               "00_setup"], cwd=REPO_ROOT, capture_output=True, text=True,
                              env={**os.environ, "VLPT_RESULTS_ROOT": str(results_root)})
        assert proc.returncode == 1 and f"process {holder.pid}" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_run_held_by_a_process_of_the_same_reproduce_is_waited_for(tmp_path, monkeypatch):
    """Two notebooks of one reproduce (the same $VLPT_RUNNER_PID) sharing a run: the second waits for the first
    and serves its result; a process of another reproduce is still refused at once."""
    import time

    from vlpt_lib.utils.faults import RUNNER_PID_ENV

    runs = tmp_path / "runs"
    run_dir = launch.run_dir_for("example", CFG, runs)
    lock = run_dir.with_name(f".{run_dir.name}.lock")
    hold = ("import sys, time\nfrom vlpt_lib.utils.lock import exclusive\n"
            "with exclusive(sys.argv[1], 'test', group='4242'):\n    print('held', flush=True)\n    time.sleep(1.5)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.setenv(RUNNER_PID_ENV, "4343")
    with pytest.raises(Busy, match=rf"in use by process {holder.pid}"):
        launch.run_job("example", CFG, runs)
    monkeypatch.setenv(RUNNER_PID_ENV, "4242")
    start = time.monotonic()
    assert launch.run_job("example", CFG, runs)["world_size"] == 1
    assert time.monotonic() - start > 0.5 and holder.wait() == 0  # it waited for the holder to let go
