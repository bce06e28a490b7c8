"""Dataset loaders for the real on-disk formats of both papers (the generated worlds that imitate them
are fixtures in vlpt_lib.worlds, not here).

Missing or malformed data raises one `DatasetError` whose message names the path and shows the
layout that was expected, instead of a traceback from deep inside a DataLoader worker: when torch
re-raises a worker's DatasetError in the main process, the message is the worker's own (one line
for a bad file) and the worker's full traceback is chained below it as `WorkerTraceback`.
"""
from __future__ import annotations

from pathlib import Path


WORKER_PREFIX = "Caught DatasetError in DataLoader worker"  # how torch's ExceptionWrapper.reraise starts


class WorkerTraceback(Exception):
    """A DataLoader worker's full traceback, chained under the short DatasetError (for debugging)."""


def _worker_message(text: str) -> str:
    """The original DatasetError message at the end of a worker's formatted traceback."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        head, sep, rest = lines[i].partition(": ")
        if sep and not lines[i][:1].isspace() and head.endswith("DatasetError"):
            return "\n".join([rest] + lines[i + 1:])
    return text


class DatasetError(Exception):
    """Missing or malformed data: the message names the path and shows the expected layout.

    Constructible from a single message string, so a DataLoader worker can re-raise it in the main
    process with its type intact; that re-raise (torch builds it from the worker's whole traceback)
    keeps only the worker's message and chains the traceback as the cause.
    """

    def __init__(self, message: str, path: str | Path | None = None, layout: str | None = None):
        if message.startswith(WORKER_PREFIX):
            self.__cause__ = WorkerTraceback(message)
            message = _worker_message(message)
        self.path = str(path) if path is not None else None
        self.layout = layout
        text = message
        if path is not None and str(path) not in message:
            text += f"\n  path: {path}"
        if layout:
            text += "\n  expected layout:\n" + "\n".join("    " + line for line in layout.strip("\n").splitlines())
        super().__init__(text)


def require(path: str | Path, what: str, layout: str | None = None, kind: str = "any") -> Path:
    """Return `path` if it exists (as a dir/file when kind says so), else raise DatasetError."""
    path = Path(path)
    ok = path.is_dir() if kind == "dir" else path.is_file() if kind == "file" else path.exists()
    if not ok:
        raise DatasetError(f"{what} not found: {path}", path, layout)
    return path


__all__ = ["DatasetError", "WorkerTraceback", "require"]
