"""Cheap fingerprints of what a result depends on besides its config: the data it reads and the code.

    fingerprint(["/data/imagenet/classnames.txt", "/data/imagenet/images/train"])
        -> {path: "file <size> <mtime_ns>" | {entry: signature, ...} | "missing"}
    code_hash(JOB_CODE_EXCLUDE)   # the library's source that a job's result depends on

A file is read as its size and modification time (a stat, never its bytes). A folder is read two levels
deep: each entry's name, each file's size and mtime, and for each subfolder (a class folder) the digest of
the same for every file in it. A rewrite in place (a re-downloaded or repaired image, a converted format)
changes the file's mtime, so its class folder's digest: the run is recomputed. ImageNet's train folder costs
one stat per image: 1.28 M empty files in 1000 folders took 10-13 s from the page cache and 34 s after dropping
it (2 AMD EPYC cores, local disk), at the start of a run and each time a finished run is served; the recorded
fingerprint holds one digest per class folder.

What it catches: another folder (the path itself is part of a job's key), files added, removed, renamed or
rewritten in a listed folder or in its subfolders, a listed file rewritten (split JSON, classnames.txt, a
checkpoint). What it does not catch: a change three levels below a listed folder, and a rewrite that keeps
both the size and the modification time (cp -p or rsync -a of other content with the same sizes and times).
For those: `reproduce --force`. The caches this project writes beside the data (split_fewshot/, scan*.json)
and hidden files are left out.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# What a job's result does not depend on: the workbook glue, the benchmarks and the command line.
JOB_CODE_EXCLUDE = ("workbook", "bench", "__main__.py")
CODE_SUFFIXES = (".py", ".json")  # the source and the model config files (models/configs/*.json)
_DERIVED = re.compile(r"^(split_fewshot|scan(_\w+)?\.json)$")


def _file_signature(st: os.stat_result) -> str:
    return f"file {st.st_size} {st.st_mtime_ns}"


def _listing(folder: Path, depth: int = 2) -> dict[str, str]:
    """{name: signature} of the folder's entries; a subfolder (depth 2) is the digest of its own listing."""
    out = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or _DERIVED.match(entry.name):
                continue
            try:
                if entry.is_dir():
                    inner = _listing(Path(entry.path), depth - 1) if depth > 1 else {}
                    out[entry.name] = "dir " + hashlib.sha1(repr(sorted(inner.items())).encode()).hexdigest()[:16]
                else:
                    out[entry.name] = _file_signature(entry.stat())
            except OSError:  # vanished while listing, or a broken link
                out[entry.name] = "missing"
    return dict(sorted(out.items()))


def fingerprint(paths: list[str]) -> dict[str, object]:
    """{path: its signature} for files and folders (see the module docstring); a missing path reads "missing"."""
    out: dict[str, object] = {}
    for path in paths:
        p = Path(path)
        try:
            out[path] = _listing(p) if p.is_dir() else _file_signature(p.stat())
        except OSError:
            out[path] = "missing"
    return out


def changed_paths(old: dict, new: dict) -> list[str]:
    """The paths whose signature differs between two fingerprints (one missing on either side counts)."""
    return [p for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]


@functools.lru_cache(maxsize=None)
def code_hash(exclude: tuple[str, ...] = JOB_CODE_EXCLUDE, root: Path = PACKAGE_ROOT) -> str:
    """sha1 of the package's *.py and *.json files (relative path + bytes), leaving out the top-level names in
    `exclude`. Computed once per process: the code a process runs is the code it imported when it started."""
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix not in CODE_SUFFIXES or rel.parts[0] in exclude or "__pycache__" in rel.parts:
            continue
        digest.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
