"""pyproject.toml is the one dependency list; environment.yml must only bring Python + pip + the project."""
import re
import tomllib

import yaml

from vlpt_lib.workbook.paths import REPO_ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(d.startswith("python=3.11") for d in conda) and "pip" in conda
    assert "-e .[dev]" in pip, "environment.yml must install the project itself (with its dev extra)"
    extra = {_name(p) for p in pip if not p.startswith("-e")}
    assert extra <= declared, f"environment.yml pins packages pyproject.toml does not list: {extra - declared}"
    # Anything besides python/pip on the conda side would be a second, drifting dependency list.
    assert {_name(d) for d in conda} <= {"python", "pip"}


def test_torch_range_admits_the_local_release():
    import torch
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    spec = next(r for r in project["dependencies"] if _name(r) == "torch")
    assert "==" not in spec, "torch is a range, not a pin"
    assert torch.__version__.split("+")[0] in SpecifierSet(spec[len("torch"):])
