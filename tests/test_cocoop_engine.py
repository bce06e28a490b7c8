"""The prompt-learning job on the smoke world: rows, resume, load_from, schedule, table rules, bench."""
from __future__ import annotations

import math

import open_clip
import pytest
import torch

import vlpt_lib.models.clip  # noqa: F401  (registers vlpt-smoke-clip)
from vlpt_lib.engine import checkpoint
from vlpt_lib.engine import prompt as P


@pytest.fixture(scope="module")
def smoke_env(tmp_path_factory):
    from vlpt_lib.data.mini_world import ensure_world

    base = tmp_path_factory.mktemp("cocoop")
    world = ensure_world("smoke", root=base / "world")
    torch.manual_seed(0)
    weights = base / "smoke_clip.pt"
    torch.save(open_clip.create_model("vlpt-smoke-clip").state_dict(), weights)
    return {"profile": "smoke", "data_root": str(world), "clip_model": "vlpt-smoke-clip",
            "clip_pretrained": str(weights), "threads": 1, "test_batch_size": 32}


def _cfg(env, **kw):
    cfg = {**env, "method": "CoCoOp", "dataset": "OxfordPets", "subsample": "base", "shots": 2, "seed": 1,
           "epochs": 2, "batch_size": 4}
    cfg.update(kw)
    return cfg


def test_lr_schedule_is_constant_warmup_then_cosine():
    cfg = {"lr": 0.002, "epochs": 10, "warmup_epochs": 1, "warmup_lr": 1e-5}
    assert P.lr_at(0, cfg) == 1e-5
    assert P.lr_at(1, cfg) == pytest.approx(0.001 * (1 + math.cos(math.pi / 10)))
    assert P.lr_at(5, cfg) == pytest.approx(0.001)
    assert P.lr_at(9, cfg) < 1e-4


def test_average_row_is_h_of_averaged_accuracies():
    rows = [{"method": "M", "dataset": d, "split": s, "seed": 1, "metric": "acc", "value": v}
            for d, b, n in [("A", 90.0, 50.0), ("B", 70.0, 90.0)] for s, v in (("base", b), ("new", n))]
    out = P.base2new_rows(rows)
    h = {(r["dataset"]): r["value"] for r in out if r["metric"] == "H"}
    assert h["A"] == pytest.approx(2 * 90 * 50 / 140)
    assert h["Average"] == pytest.approx(P.harmonic_mean(80.0, 70.0))  # not the mean of per-dataset H
    assert P.harmonic_mean(80.47, 71.69) == pytest.approx(75.83, abs=0.01)
    avg = [r for r in out if r["dataset"] == "Average" and r["metric"] == "acc"]
    assert {(r["split"], r["value"]) for r in avg} == {("base", 80.0), ("new", 70.0)}


def test_job_cfg_recipe_per_method_and_dataset():
    params = {"profile": "paper", "recipe": {"common": {"shots": 16, "lr": 0.002},
                                             "CoOp": {"epochs": 200, "batch_size": 32, "epochs_by_dataset": {"ImageNet": 50}},
                                             "CoCoOp": {"epochs": 10, "batch_size": 1}}}
    assert P.job_cfg(params, "CoOp", "ImageNet", 1)["epochs"] == 50
    assert P.job_cfg(params, "CoOp", "EuroSAT", 1)["epochs"] == 200
    c = P.job_cfg(params, "CoCoOp", "EuroSAT", 2)
    assert (c["epochs"], c["batch_size"], c["shots"], c["seed"]) == (10, 1, 16, 2)
    assert "epochs" not in P.job_cfg(params, "CLIP", "EuroSAT", 1)


def test_job_rows_resume_and_load_from(smoke_env, tmp_path):
    full = P.run(_cfg(smoke_env), tmp_path / "full")
    assert {(r["split"], r["metric"]) for r in full["rows"]} == {("base", "acc"), ("new", "acc")}
    assert all(0 <= r["value"] <= 100 for r in full["rows"])
    assert [h["epoch"] for h in full["history"]] == [1, 2] and full["history"][0]["lr"] == 1e-5

    P.run(_cfg(smoke_env, epochs=1), tmp_path / "part")  # as if killed after epoch 1 ...
    resumed = P.run(_cfg(smoke_env), tmp_path / "part")  # ... and started again
    a = checkpoint.load(tmp_path / "full")["prompt_learner"]
    b = checkpoint.load(tmp_path / "part")["prompt_learner"]
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert resumed["rows"] == [{**r, "run_id": "part"} for r in full["rows"]]

    evals = [{"dataset": "Caltech101"}, {"dataset": "OxfordPets", "subsample": "new"}]
    loaded = P.run(_cfg(smoke_env, eval=evals, load_from=str(tmp_path / "full")), tmp_path / "eval")
    assert [(r["dataset"], r["split"]) for r in loaded["rows"]] == [("Caltech101", "test"), ("OxfordPets", "new")]
    assert loaded["rows"][1]["value"] == pytest.approx(full["rows"][1]["value"])
    assert loaded["history"] == []


def test_zero_shot_clip_rows(smoke_env, tmp_path):
    res = P.run(_cfg(smoke_env, method="CLIP", subsample="all", eval=[{"dataset": "EuroSAT", "subsample": "base"}]),
                tmp_path / "clip")
    assert [(r["method"], r["dataset"], r["split"]) for r in res["rows"]] == [("CLIP", "EuroSAT", "base")]


def test_bench_cocoop_smoke(tmp_path, monkeypatch, capsys):
    from vlpt_lib.bench_cocoop import run_bench

    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(tmp_path))
    out = run_bench(["--device", "cpu", "--model", "vlpt-smoke-clip", "--classes", "6", "--batch", "2",
                     "--iters", "1", "--warmup", "0", "--threads", "1"])
    assert out["max_abs_logit_diff"] < 1e-4
    assert "cocoop train speedup:" in capsys.readouterr().out.strip().splitlines()[-1]
    assert (tmp_path / "bench" / "cocoop_cpu.json").exists() and (tmp_path / "bench" / "cocoop_cpu.png").exists()
