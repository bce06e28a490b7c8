"""A prompt method is one file: a toy method written into a temporary folder, named in $VLPT_PLUGINS, is found
by the registry (in this process and in a child process, as torchrun ranks and papermill kernels are), runs
through the prompt job and fills a smoke Table 1 (rows, paper-shaped table, figure, claims) with no other file
touched."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from vlpt_lib.jobs import prompt as P
from vlpt_lib.jobs.launch import run_job
from vlpt_lib.methods import prompt as methods
from vlpt_lib.workbook import claims, cocoop, plots, tables

TOY = textwrap.dedent('''
    """ToyLS: CoOp trained with label smoothing 0.1 (a toy method for the plug-in test)."""
    from typing import Literal

    import torch
    import torch.nn.functional as F
    from pydantic import Field

    from vlpt_lib.methods.prompt import register
    from vlpt_lib.methods.prompt.base import DasslRecipe, PromptMethod


    class Recipe(DasslRecipe):
        method: Literal["ToyLS"] = Field("ToyLS", description="tests/test_prompt_plugins.py")
        smoothing: float = Field(0.1, description="[A] a toy value")


    @register
    class ToyLS(PromptMethod):
        name = "ToyLS"
        Recipe = Recipe
        color = "tab:pink"
        claims = (("cocoop_base2new", "ToyLS is not worse than CoOp on new classes", "ToyLS new", ">=", "CoOp new"),)

        def __init__(self, *args, smoothing=0.1, **kwargs):
            super().__init__(*args, **kwargs)
            self.smoothing = smoothing

        @classmethod
        def model_kwargs(cls, recipe):
            return {**super().model_kwargs(recipe), "smoothing": recipe.smoothing}

        def logits_from_features(self, image_features):
            return self.logit_scale() * image_features @ self.shared_text_features().t()

        def training_loss(self, images, labels):
            logits = self.logits_from_features(self.encode_images(images))
            return {"loss": F.cross_entropy(logits, labels, label_smoothing=self.smoothing)}
''')


@pytest.fixture()
def toy_method(tmp_path, monkeypatch):
    path = tmp_path / "toy_ls.py"  # a new path per test: the plug-in loader imports each file once
    path.write_text(TOY)
    methods.names()  # the built-in methods are registered before the copy (and the toy is not yet named)
    monkeypatch.setattr(methods, "_REGISTRY", dict(methods._REGISTRY))  # the toy leaves with the test
    monkeypatch.setenv("VLPT_PLUGINS", str(path))
    return path


def test_a_plugin_file_registers_its_method(toy_method):
    assert "ToyLS" in methods.names() and methods.get("ToyLS").color == "tab:pink"
    cfg = P.Config.model_validate({"method": "ToyLS", "data_root": "."})
    assert (type(cfg).__name__, cfg.smoothing, cfg.epochs) == ("Recipe", 0.1, 10)
    assert methods.input_paths("ToyLS") == [str(toy_method)]  # its file keys its runs


def test_a_child_process_finds_the_plugin(toy_method):
    code = "from vlpt_lib.methods import prompt; print(prompt.get('ToyLS').__module__)"
    out = subprocess.run([sys.executable, "-c", code], env=os.environ.copy(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() != ""


def test_each_method_refuses_the_fields_of_another(toy_method):
    with pytest.raises(ValueError, match="smoothing"):
        P.Config.model_validate({"method": "CoOp", "data_root": ".", "smoothing": 0.2})
    with pytest.raises(ValueError, match="epochs"):
        P.Config.model_validate({"method": "CLIP", "data_root": ".", "epochs": 2})


def test_the_toy_is_gone_after_its_test():
    assert "ToyLS" not in methods.names()


def test_an_unknown_method_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown prompt method 'CoOOp'; registered: CLIP, CoOp, CoCoOp"):
        P.Config.model_validate({"method": "CoOOp", "data_root": "."})


def test_toy_method_runs_through_the_job_and_a_smoke_table_1(toy_method, smoke_env, tmp_path, monkeypatch):
    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(tmp_path / "results"))
    recipe = {"common": {"shots": 2, "epochs": 1, "batch_size": 4}}
    world = SimpleNamespace(data_root=smoke_env["data_root"], clip=smoke_env["clip"])
    params = cocoop.job_params(world, recipe, threads=1, test_batch_size=32)
    cocoop.check_recipe({**recipe, "ToyLS": {"smoothing": 0.2}})
    rows = cocoop.base2new_runs(params, ["CoOp", "ToyLS"], ["EuroSAT"], [1], tmp_path / "runs")
    assert {(r["method"], r["split"]) for r in rows} == {(m, s) for m in ("CoOp", "ToyLS") for s in ("base", "new")}
    again = run_job("prompt", cocoop.job_cfg(params, "ToyLS", "EuroSAT", 1), tmp_path / "runs")
    assert again["rows"] == [r for r in rows if r["method"] == "ToyLS"]  # the run cache knows it

    tables.save_table("cocoop_base2new", rows, "smoke")
    assert "ToyLS" in tables.methods_of("cocoop_base2new")
    pt = tables.paper_table("cocoop_base2new", "smoke")
    assert ("ToyLS", "base", "ours") in pt.frame.columns and ("ToyLS", "H", "ours") in pt.frame.columns
    assert plots.figure("cocoop_base2new", "smoke") is not None
    found = {v.claim.left for v in claims.verdicts_of("cocoop_base2new", "smoke")}
    assert "ToyLS new" in found  # its own claim, declared in its file
