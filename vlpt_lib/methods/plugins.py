"""Plug-in modules: a user's own method file, found in this process and in every child process.

    VLPT_PLUGINS=/path/to/my_target.py:my_package.my_prompt python -m vlpt_lib reproduce ...

`load_plugins()` imports each entry of the environment variable (os.pathsep-separated) once: an entry that
names a file (ends in ".py" or contains a path separator) is imported from that file
(importlib.util.spec_from_file_location), any other entry as a module name (importlib.import_module).
Importing is all it does: a plug-in module registers itself with the registry it imports (for example
`vlpt_lib.methods.targets.register`). Because the list travels in the environment, torchrun / SLURM ranks
and papermill kernels started from this process find the same plug-ins; the registries call `load_plugins()`
whenever they are asked for a name, so setting the variable later in a process also works.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ENV_VAR = "VLPT_PLUGINS"
_loaded: dict[str, ModuleType] = {}  # resolved file path or module name -> the imported module


def plugin_entries(env_var: str = ENV_VAR) -> list[str]:
    """The non-empty entries of $env_var, in order."""
    return [e.strip() for e in os.environ.get(env_var, "").split(os.pathsep) if e.strip()]


def _is_file(entry: str) -> bool:
    return entry.endswith(".py") or os.sep in entry or bool(os.altsep and os.altsep in entry)


def load_plugin(entry: str) -> ModuleType:
    """Import one plug-in (a .py file or a module name), once: a second call returns the same module."""
    if not _is_file(entry):
        if entry not in _loaded:
            _loaded[entry] = importlib.import_module(entry)
        return _loaded[entry]
    path = Path(entry).expanduser().resolve()
    key = str(path)
    if key in _loaded:
        return _loaded[key]
    if not path.is_file():
        raise FileNotFoundError(f"plug-in file {entry!r} (from ${ENV_VAR} or load_plugin) does not exist")
    name = f"vlpt_plugin_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import plug-in file {key}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and pydantic look a module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    _loaded[key] = module
    return module


_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # vlpt_lib/


def source_outside_package(module_name: str) -> list[str]:
    """[the module's source file] when it lies outside vlpt_lib (a plug-in), else []: the run cache's code hash
    covers the package only, so a plug-in's runs are keyed by its file too (editing it re-runs them)."""
    source = getattr(sys.modules.get(module_name), "__file__", None)
    if source and not Path(source).resolve().is_relative_to(_PACKAGE_DIR):
        return [str(Path(source).resolve())]
    return []


def load_plugins(env_var: str = ENV_VAR) -> list[ModuleType]:
    """Import every plug-in listed in $env_var (each once per process); return them in order."""
    return [load_plugin(entry) for entry in plugin_entries(env_var)]
