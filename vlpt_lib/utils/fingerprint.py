"""Cheap fingerprints of what a result depends on besides its config: the data it reads and the code.

    fingerprint(["/data/imagenet/classnames.txt", "/data/imagenet/images/train"])
        -> {path: "file <size> <mtime_ns>" | {entry: signature, ...} | "missing"}
    code_closure(("vlpt_lib.jobs.pretrain",))   # {module: hash of its meaning} of the code a job runs

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

import ast
import functools
import hashlib
import json
import os
import re
import threading
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
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


PACKAGE = PACKAGE_ROOT.name


def module_file(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source file of a module of the package (`vlpt_lib.a.b` -> a/b.py or a/b/__init__.py); None: not one."""
    parts = module.split(".")
    if parts[0] != root.name:
        return None
    base = root.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _imports(tree: ast.AST, module: str, is_package: bool, root: Path) -> set[str]:
    """The package's modules an AST imports, anywhere in it (a function's lazy import too), with their parent
    packages (importing a.b.c runs a/__init__ and a/b/__init__); a package that imports its own modules by
    listing its folder (a registry: pkgutil.iter_modules) imports all of them."""
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute) and node.attr == "iter_modules" and is_package:
            found.update(f"{module}.{p.stem}" for p in module_file(module, root).parent.glob("*.py")
                         if p.stem != "__init__")
    closure = set()
    for name in found:
        parts = name.split(".")
        closure.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in closure if module_file(name, root) is not None}


def _meaning(tree: ast.AST) -> str:
    """sha1 of what the code means: its AST without docstrings, comments or layout (a docstring, comment,
    blank-line or formatting edit leaves it as it was; any statement, name or value changed changes it)."""
    return hashlib.sha1(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()[:12]


def _data_files(package_dir: Path) -> list[Path]:
    """A package's model configs: *.json in its folders that are not packages themselves (models/configs/)."""
    return sorted(p for p in package_dir.rglob("*.json")
                  if not any((d / "__init__.py").exists() for d in p.parents if d != package_dir
                             and d.is_relative_to(package_dir)))


# CPython 3.11 converts a parse into ast objects with one recursion counter per interpreter, not per thread: two
# threads parsing at once can raise "SystemError: AST constructor recursion depth mismatch" (the symptom of CPython
# gh-106905, reported by threaded projects), as the mini reproduce did computing two notebooks' closures side by
# side. One parse at a time.
_PARSING = threading.Lock()


@functools.lru_cache(maxsize=None)
def code_closure(modules: tuple[str, ...], root: Path = PACKAGE_ROOT) -> dict[str, str]:
    """{module (or config file): meaning hash} of every module of the package that `modules` import, directly
    or through each other: the code a job (or notebook) actually runs. A mini-world generator is not in a paper
    job's closure, so editing it re-keys nothing there. Computed once per process, like the code it imported."""
    with _PARSING:
        return _closure(modules, root)


def _closure(modules: tuple[str, ...], root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    todo = [".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)]  # with its packages
    todo = [m for m in todo if module_file(m, root) is not None]
    while todo:
        module = todo.pop()
        if module in out:
            continue
        path = module_file(module, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        imported = _imports(tree, module, is_package, root)
        out[module] = _meaning(tree)
        if is_package:
            for data in _data_files(path.parent):
                rel = data.relative_to(root).as_posix()
                out[f"{root.name}/{rel}"] = hashlib.sha1(
                    json.dumps(json.loads(data.read_text()), sort_keys=True).encode()).hexdigest()[:12]
        todo += sorted(imported - set(out))
    return dict(sorted(out.items()))


def source_closure(sources: list[str]) -> dict[str, str]:
    """code_closure of what some top-level code imports (a notebook's cells; IPython's %magic and !shell
    lines left out)."""
    found: set[str] = set()
    for source in sources:
        text = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
        with _PARSING:
            found |= _imports(ast.parse(text), "", False, PACKAGE_ROOT)
    return code_closure(tuple(sorted(found)))


def closure_hash(closure: dict[str, str]) -> str:
    return hashlib.sha1(json.dumps(closure, sort_keys=True).encode()).hexdigest()[:12]


def changed_modules(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The modules (and config files) added, removed or changed in meaning between two closures."""
    return [m for m in sorted(set(old) | set(new)) if old.get(m) != new.get(m)]
