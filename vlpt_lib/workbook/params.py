"""Notebook parameters: params/<profile>/<notebook>.yaml, checked against the notebook before it runs.

The notebook's `parameters` cell is the reference: it names every parameter and its smoke value,
whose type the YAML value must have (None in the cell: any type). A parameter that holds a job's
config diff (e.g. `pretrain`, `recipe`) is checked against that job's `Config` by a check the caller
passes in (the runner passes `PARAM_CHECKS` of workbook/mvp.py and workbook/cocoop.py). Every error names the file, the key
and what was expected, before any job starts.
"""
from __future__ import annotations

import ast
import difflib
from pathlib import Path
from typing import Iterable, Literal, Mapping, Optional

import nbformat
import yaml
from pydantic import TypeAdapter, ValidationError

from ..jobs.launch import LAUNCHERS
from ..utils.fields import Count, Device, Index, Precision, refusal
from . import paths

# The run knobs every notebook that has them shares (how a run runs): their allowed values. A job-config diff
# (`pretrain`, `recipe`, ...) is checked by its own job's Config (the caller's `checks`).
KNOBS = {"seeds": list[Index], "precision": Precision, "device": Device, "threads": Optional[Count],
         "num_workers": Index, "workers": Count, "nproc": Count, "launcher": Literal[LAUNCHERS],
         "test_batch_size": Count, "text_chunk": Optional[Count]}
_KNOB_ADAPTERS = {key: TypeAdapter(kind) for key, kind in KNOBS.items()}


class ParamsError(ValueError):
    pass


def parameters_cell(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ParamsError(f"{nb_path}: no cell tagged 'parameters'")


def notebook_defaults(nb_path: Path) -> dict:
    """{name: value} of the assignments in the notebook's parameters cell (literals only)."""
    out = {}
    for node in ast.parse(parameters_cell(nb_path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                out[node.targets[0].id] = None  # not a literal: any type
    return out


def merge(base: Mapping | None, over: Mapping) -> dict:
    """`over` on top of `base`, nested dicts merged key by key (a job diff, a dry-run cap inside one)."""
    out = dict(base or {})
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: yaml.Mark, again: yaml.Mark):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load's loader, refusing a key given twice in one mapping: YAML alone keeps the last value silently."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then a key of base: an override, not a repeat
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader's own message names it
                continue
            if first is not key_node:
                raise _DuplicateKey(key, first.start_mark, key_node.start_mark)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict:
    """A params file as a dict; a syntax error names the file, line and column, a key given twice both lines."""
    if not path.exists():
        return {}
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path}: not UTF-8 text: byte {err.start} is {err.object[err.start:err.start + 1]!r} "
                          f"(save the file as UTF-8)") from None
    except _DuplicateKey as err:
        raise ParamsError(f"{path}:{err.again.line + 1}: duplicate key {err.key!r} (first on line {err.first.line + 1}"
                          f"): YAML would keep only the last value; remove one") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ParamsError(f"{where}: YAML syntax error: {getattr(err, 'problem', None) or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


def unread_files(folder: Path, notebooks: Iterable[str]) -> list[str]:
    """A warning for each file in a params folder that no notebook reads (a notebook reads <its name>.yaml, nothing
    else: a misnamed file is ignored and the defaults run), with the name it was likely meant to have."""
    if not folder.is_dir():
        return []
    notebooks = sorted(notebooks)
    read = {f"{name}.yaml" for name in notebooks}
    out = []
    for path in sorted(folder.iterdir()):
        if path.name in read or path.name.startswith(".") or path.stem.upper() == "README" or not path.is_file():
            continue
        stem = path.name.split(".", 1)[0]
        close = [stem] if stem in notebooks else difflib.get_close_matches(stem, notebooks, n=1)
        if not close:
            hint = f"notebooks read <notebook>.yaml, for: {', '.join(notebooks)}"
        elif (folder / f"{close[0]}.yaml").exists():
            hint = f"notebook {close[0]} reads {close[0]}.yaml beside it"
        else:
            hint = f"did you mean {close[0]}.yaml?"
        out.append(f"{path}: no notebook reads this file, its values are ignored ({hint})")
    return out


def _type_name(value) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
            tuple: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _same_kind(value, default) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check(name: str, params: dict, defaults: dict, source: str, checks: dict | None = None) -> None:
    """Raise ParamsError for an unknown parameter, a value of the wrong type or a job diff that does not validate."""
    for key, value in params.items():
        if key == "profile":
            continue
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamsError(f"{source}: unknown parameter {key!r} for notebook {name}{hint}; "
                              f"its parameters are: {', '.join(sorted(defaults))}")
        if not _same_kind(value, defaults[key]):
            raise ParamsError(f"{source}: parameter {key!r} must be {_type_name(defaults[key])} "
                              f"(the notebook's default is {defaults[key]!r}), got {value!r}")
        if key in _KNOB_ADAPTERS:
            try:
                _KNOB_ADAPTERS[key].validate_python(value, strict=True)
            except ValidationError as err:
                e = err.errors()[0]
                where = "".join(f"[{i}]" for i in e["loc"])
                raise ParamsError(f"{source}: parameter {key!r}{where} = {e['input']!r} is not allowed: "
                                  f"{refusal(e)}") from None
        if key in (checks or {}):
            try:
                checks[key](value)
            except ValueError as err:
                raise ParamsError(f"{source}: parameter {key!r}: {err}") from None


def load(name: str, profile: str, p_dir: Path | None = None, nb_dir: Path | None = None,
         checks: dict | None = None) -> dict:
    """params/<profile>/<name>.yaml, checked against notebooks/<name>.ipynb, plus `profile`."""
    path = (p_dir or paths.REPO_ROOT / "params") / profile / f"{name}.yaml"
    params = read_yaml(path)
    check(name, params, notebook_defaults((nb_dir or paths.REPO_ROOT / "notebooks") / f"{name}.ipynb"), str(path),
          checks)
    return {**params, "profile": profile}


def effective(name: str, profile: str) -> dict:
    """What a notebook runs with under `profile`: its parameters cell, overridden by the profile's YAML."""
    return {**notebook_defaults(paths.REPO_ROOT / "notebooks" / f"{name}.ipynb"), **load(name, profile)}
