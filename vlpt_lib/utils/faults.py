"""Named fault points: a run stops itself right after a chosen event, so a test kills it at an exact place.

    VLPT_FAULT=checkpoint@2:SIGKILL python -m vlpt_lib reproduce ...

The n-th time a process reaches `fault_point("checkpoint")` it sends the signal to the reproduce that
started it ($VLPT_RUNNER_PID, set by the runner for its notebooks' kernels) and then to itself: SIGKILL is
a power cut of the whole run, SIGINT a Ctrl-C that reaches the runner and the running cell. Unset (always,
outside the fault-injection tests), a fault point does nothing.

Events: "checkpoint" (training.checkpoint.save wrote one), "record-running" (the runner marked a notebook's
record "running", before its kernel starts), "table" (workbook.tables.save_table wrote a table).
"""
from __future__ import annotations

import os
import re
import signal

FAULT_ENV = "VLPT_FAULT"
RUNNER_PID_ENV = "VLPT_RUNNER_PID"
EVENTS = ("checkpoint", "record-running", "table")
_SPEC = re.compile(r"(?P<event>[a-z-]+)@(?P<nth>[1-9][0-9]*):(?P<signal>SIGINT|SIGKILL)")
_reached: dict[str, int] = {}


def fault_point(event: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    match = _SPEC.fullmatch(spec)
    if match is None or match["event"] not in EVENTS:
        raise ValueError(f"${FAULT_ENV}={spec!r}: expected <event>@<n>:<SIGINT|SIGKILL> with an event of "
                         f"{EVENTS}, e.g. checkpoint@2:SIGKILL; or unset it")
    if match["event"] != event:
        return
    _reached[event] = _reached.get(event, 0) + 1
    if _reached[event] != int(match["nth"]):
        return
    sig = getattr(signal, match["signal"])
    runner = int(os.environ.get(RUNNER_PID_ENV) or os.getpid())
    if runner != os.getpid():
        os.kill(runner, sig)
    os.kill(os.getpid(), sig)
