"""The prompt-learning job on the smoke world: rows, resume, load_from, optimizer, recipe check, bench (the
tables' averages and H: test_derived.py).

Its lr schedule (Dassl's) is pinned in tests/test_training.py, the lrs a run records in test_fidelity_cocoop.py."""
from __future__ import annotations

import pytest
import torch

from vlpt_lib.jobs import prompt as P
from vlpt_lib.jobs.launch import resolve_config
from vlpt_lib.training import checkpoint
from vlpt_lib.workbook import cocoop as C


def _cfg(env, **kw):
    cfg = {**env, "method": "CoCoOp", "dataset": "OxfordPets", "subsample": "base", "shots": 2, "seed": 1,
           "epochs": 2, "batch_size": 4}
    cfg.update(kw)
    return cfg


def test_optimizer_is_sgd_with_decay_on_every_parameter():
    cfg = P.Config(data_root=".")
    params = [torch.nn.Parameter(torch.zeros(4, 3)), torch.nn.Parameter(torch.zeros(3))]  # a bias-like 1-D one too
    opt = P.make_optimizer(params, cfg)
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["momentum"], g["weight_decay"], g["nesterov"]) == (0.9, 5e-4, False) and len(g["params"]) == 2


def test_config_defaults_are_the_papers_recipes():
    cocoop = P.Config(data_root=".")
    assert (cocoop.method, cocoop.epochs, cocoop.batch_size, cocoop.shots, cocoop.lr) == ("CoCoOp", 10, 1, 16, 0.002)
    coop = P.Config(data_root=".", method="CoOp", dataset="EuroSAT")
    assert (coop.epochs, coop.batch_size) == (200, 32)
    assert P.Config(data_root=".", method="CoOp", dataset="ImageNet").epochs == 50
    assert P.Config(data_root=".", method="CoOp", dataset="ImageNet", epochs=3).epochs == 3  # explicit wins
    again = P.Config.model_validate(P.Config(data_root=".", method="CoOp").model_dump())
    assert again == P.Config(data_root=".", method="CoOp")


def test_recipe_check_names_the_bad_block_and_key():
    """The runner's check of a params file's recipe (a typo in the job's Config itself: test_spine_launch.py)."""
    with pytest.raises(ValueError, match="'CoOp'.*'epoch'"):
        C.check_recipe({"common": {"shots": 2}, "CoOp": {"epoch": 2}})
    with pytest.raises(ValueError, match="'common'.*'shot'"):
        C.check_recipe({"common": {"shot": 2}})
    with pytest.raises(ValueError, match="block"):
        C.check_recipe({"CoCoop": {}})
    C.check_recipe({})
    C.check_recipe({"common": {"crop_scale": [0.8, 1.0]}, "CoOp": {"epochs_by_dataset": {"ImageNet": 50}}})


def test_job_cfg_recipe_per_method_and_dataset():
    params = {"profile": "paper", "recipe": {"common": {"shots": 16, "lr": 0.002},
                                             "CoOp": {"epochs": 200, "batch_size": 32, "epochs_by_dataset": {"ImageNet": 50}},
                                             "CoCoOp": {"epochs": 10, "batch_size": 1}}}
    assert C.job_cfg(params, "CoOp", "ImageNet", 1)["epochs"] == 50
    assert C.job_cfg(params, "CoOp", "EuroSAT", 1)["epochs"] == 200
    c = C.job_cfg(params, "CoCoOp", "EuroSAT", 2)
    assert (c["epochs"], c["batch_size"], c["shots"], c["seed"]) == (10, 1, 16, 2)
    assert "epochs" not in C.job_cfg(params, "CLIP", "EuroSAT", 1)
    # an empty recipe: the job's defaults are the papers' recipes, CoOp's ImageNet epochs included
    empty = {"recipe": {}, "data_root": "/data"}
    assert resolve_config("prompt", C.job_cfg(empty, "CoOp", "ImageNet", 1))["epochs"] == 50
    assert resolve_config("prompt", C.job_cfg(empty, "CoOp", "EuroSAT", 1))["batch_size"] == 32
    assert resolve_config("prompt", C.job_cfg(empty, "CoCoOp", "EuroSAT", 1))["batch_size"] == 1


def test_job_rows_resume_and_load_from(smoke_env, tmp_path):
    full = P.run(_cfg(smoke_env), tmp_path / "full")
    assert {(r["split"], r["metric"]) for r in full["rows"]} == {("base", "acc"), ("new", "acc")}
    assert all(0 <= r["value"] <= 100 for r in full["rows"])
    assert [h["epoch"] for h in full["history"]] == [1, 2] and full["history"][0]["lr"] == 1e-5
    state = checkpoint.load(tmp_path / "full")
    assert set(state["model"]) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                   "meta_net.linear2.weight", "meta_net.linear2.bias"}  # the learner only
    assert not {"optimizer", "scaler", "scheduler"} & set(state)  # finished: nothing to resume
    again = P.run(_cfg(smoke_env), tmp_path / "full")  # a finished run started again trains nothing
    assert again["rows"] == full["rows"] and again["history"] == full["history"]

    evals = [{"dataset": "Caltech101"}, {"dataset": "OxfordPets", "subsample": "new"}]
    loaded = P.run(_cfg(smoke_env, eval=evals, load_from=str(tmp_path / "full")), tmp_path / "eval")
    assert [(r["dataset"], r["split"]) for r in loaded["rows"]] == [("Caltech101", "test"), ("OxfordPets", "new")]
    assert loaded["rows"][1]["value"] == full["rows"][1]["value"]  # the same weights on the same images
    assert loaded["history"] == []


@pytest.mark.parametrize("method", ["CoOp", "CoCoOp"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(smoke_env, tmp_path, monkeypatch, method):
    """Killed right after epoch 1's checkpoint and re-run in the same folder: same prompts, history, rows."""
    cfg = _cfg(smoke_env, method=method, epochs=3, batch_size=3)  # 3 does not divide the shots (last batch dropped)
    full = P.run(cfg, tmp_path / "full")
    real_save = checkpoint.save

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt("killed after the first checkpoint")

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        P.run(cfg, tmp_path / "run")
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.load(tmp_path / "run")["epoch"] == 0
    resumed = P.run(cfg, tmp_path / "run")
    a, b = checkpoint.load(tmp_path / "full")["model"], checkpoint.load(tmp_path / "run")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in e.items() if k != "elapsed_s"} for e in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"]) and len(full["history"]) == 3
    assert [r["value"] for r in resumed["rows"]] == [r["value"] for r in full["rows"]]


def test_zero_shot_clip_rows(smoke_env, tmp_path):
    cfg = _cfg(smoke_env, method="CLIP", subsample="all", eval=[{"dataset": "EuroSAT", "subsample": "base"}])
    for key in ("epochs", "batch_size"):  # zero-shot CLIP's Recipe has no training fields (and refuses them)
        cfg.pop(key)
    res = P.run(cfg, tmp_path / "clip")
    assert [(r["method"], r["dataset"], r["split"]) for r in res["rows"]] == [("CLIP", "EuroSAT", "base")]


def test_bench_cocoop_smoke(tmp_path, monkeypatch, capsys):
    from vlpt_lib.bench.cocoop import run_bench

    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(tmp_path))
    out = run_bench(["--device", "cpu", "--model", "vlpt-smoke-clip", "--classes", "6", "--batch", "2",
                     "--iters", "1", "--warmup", "0", "--threads", "1"])
    assert out["max_abs_logit_diff"] < 1e-4
    lines = capsys.readouterr().out.strip().splitlines()
    assert "cocoop train speedup:" in lines[-1]
    assert (tmp_path / "bench" / "cocoop_cpu.json").exists() and (tmp_path / "bench" / "cocoop_cpu.png").exists()
    # the deep-prompt methods, timed against the way their official trainers compute, each with its own files
    assert set(out["deep_prompt_methods"]) == {"MaPLe", "PromptSRC"}
    for name, res in out["deep_prompt_methods"].items():
        assert res["max_abs_logit_diff"] < 1e-4 and res["train_speedup"] > 0
        assert any(line.startswith(f"{name} train speedup:") for line in lines)
        assert (tmp_path / "bench" / f"{name.lower()}_cpu.json").exists()


def test_load_from_refuses_another_methods_run(tmp_path):
    (tmp_path / "config.json").write_text('{"job": "prompt", "cfg": {"method": "CoOp"}}')
    P.check_trained_by("CoOp", tmp_path)  # its own method: fine
    with pytest.raises(ValueError, match="trained by 'CoOp', not 'KgCoOp'"):
        P.check_trained_by("KgCoOp", tmp_path)


def test_frozen_test_features_score_as_the_images_do_and_are_encoded_once(smoke_env, tmp_path):
    """A method whose image features are the frozen CLIP's is scored from features encoded once per process:
    the same top-1, loss and per-class accuracy as scoring the images (same batches, same encoder), one
    encoding for every method and seed, and a new one when an image is rewritten."""
    import os
    import shutil

    from vlpt_lib.data import coop
    from vlpt_lib.data.imagefolder import limit
    from vlpt_lib.training.evaluate import evaluate_classifier

    world = tmp_path / "world"
    shutil.copytree(smoke_env["data_root"], world)
    cfg = P.Config.model_validate(_cfg({**smoke_env, "data_root": str(world)}, method="CoOp", max_test_images=20))
    device = torch.device("cpu")
    model, bundle = P.build_model(cfg, device)
    ds = coop.subsample_classes(coop.load_dataset("OxfordPets", world), "base")
    model.set_classnames(ds.classnames)
    model.eval()
    test = limit(coop.ImageListDataset(ds.test, bundle.preprocess_val), cfg.max_test_images, cfg.seed)
    kw = dict(device=device, batch_size=cfg.test_batch_size, num_classes=ds.num_classes)
    from_images = evaluate_classifier(model, test, **kw)
    features = P.frozen_test_features(model, test, ds.test, cfg, device)
    from_features = evaluate_classifier(model.logits_from_features, features, **kw)
    assert from_features == from_images and from_images["n"] == 20
    other = P.Config.model_validate(_cfg({**smoke_env, "data_root": str(world)}, method="KgCoOp", seed=1,
                                         max_test_images=20))
    assert P.frozen_test_features(model, test, ds.test, other, device) is features  # another method: no encoding
    image = ds.test[0].impath
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10**9))  # rewritten in place
    assert P.frozen_test_features(model, test, ds.test, cfg, device) is not features
