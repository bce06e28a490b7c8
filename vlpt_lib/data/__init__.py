"""Dataset loaders for the real on-disk formats of both papers, and the mini-world generator.

Missing or malformed data raises one `DatasetError` whose message names the path and shows the
layout that was expected, instead of a traceback from deep inside a DataLoader worker.
"""
from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Missing or malformed data: the message names the path and shows the expected layout.

    Constructible from a single message string, so a DataLoader worker can re-raise it in the main
    process with its type intact.
    """

    def __init__(self, message: str, path: str | Path | None = None, layout: str | None = None):
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


__all__ = ["DatasetError", "require"]
