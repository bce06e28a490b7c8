"""MVP jobs end to end on synthetic data with tiny models: pretrain (clip and pixel) -> export -> finetune/segment."""
import json
import math

import pytest
import timm
import torch

from vlpt_lib.jobs import finetune, pretrain, segment
from vlpt_lib.training import checkpoint



@pytest.fixture(scope="module")
def smoke_clip(tmp_path_factory):
    import open_clip
    import vlpt_lib.models.clip  # noqa: F401

    path = tmp_path_factory.mktemp("clip") / "smoke_clip.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model("vlpt-smoke-clip").state_dict(), path)
    return str(path)


def _pre_cfg(smoke_clip, target="clip", epochs=2):
    return dict(seed=0, threads=2, target=target,
                clip=dict(model_name="vlpt-smoke-clip", pretrained=smoke_clip), student=dict(arch="smoke"),
                data=dict(kind="synthetic", n=16), mask=dict(ratio=0.4, min_block_fraction=0.15),
                optim=dict(epochs=epochs, batch_size=8, lr=1e-3, lr_ref_batch=None, warmup_epochs=1, clip_grad=3.0,
                           betas=[0.9, 0.98], weight_decay=0.05))


def _init(result):
    return dict(checkpoint=result["export"], model_name=result["model_name"], kwargs=result["kwargs"])


def _ft_cfg(result, method="MVP", epochs=1):
    return dict(seed=0, threads=2, method=method, init=_init(result) if method != "Scratch" else
                dict(_init(result), checkpoint=None), data=dict(kind="synthetic", n=16, n_val=8, num_classes=4),
                optim=dict(epochs=epochs, batch_size=8, lr=1e-3, lr_ref_batch=None, warmup_epochs=0, layer_decay=0.65,
                           drop_path=0.1))


def _seg_cfg(result, iters=3, eval_every=0):
    return dict(seed=0, threads=2, method="MVP", init=_init(result), eval_every=eval_every,
                data=dict(kind="synthetic", n=4, n_val=2, num_classes=3, crop=32, img_scale=[96, 32], size=40,
                          stride=None),
                model=dict(decoder_channels=16, aux_channels=8),
                optim=dict(iters=iters, batch_size=2, lr=1e-3, lr_ref_batch=None, warmup_iters=1, warmup_ratio=1e-6,
                           layer_decay=0.65))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, smoke_clip):
    run_dir = tmp_path_factory.mktemp("pre")
    return pretrain.run(_pre_cfg(smoke_clip), run_dir), run_dir


def _interrupted_then_resumed(monkeypatch, run, cfg, run_dir):
    """Kill `run` when it saves its second checkpoint (after epoch 2 began), then run it again in run_dir."""
    real_save = checkpoint.save
    saved = []

    def save_once(*args, **kwargs):
        if saved:
            raise KeyboardInterrupt("killed after the first epoch")
        saved.append(real_save(*args, **kwargs))
        return saved[-1]

    monkeypatch.setattr(checkpoint, "save", save_once)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert checkpoint.load(run_dir)["epoch"] == 0  # it stopped after epoch 1
    return run(cfg, run_dir)


def _without_time(history):
    return [{k: v for k, v in h.items() if k != "elapsed_s"} for h in history]


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pretrain_exports_timm_checkpoint(pretrained):
    result, run_dir = pretrained
    assert result["loss_kind"] == "cosine" and len(result["history"]) == 2
    assert all(0 <= h["loss"] <= 2 for h in result["history"])
    assert result["num_masking_patches"] == round(0.4 * 16)
    sd = torch.load(result["export"], weights_only=True)
    model = timm.create_model(result["model_name"], pretrained=False, num_classes=3, **result["kwargs"])
    res = model.load_state_dict(sd, strict=False)
    # the pre-training layout: a mean-pooling model starts fc_norm fresh and leaves the final norm unused (beit2)
    assert sorted(res.missing_keys) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(res.unexpected_keys) == ["norm.bias", "norm.weight"]
    assert json.loads(open(result["export"] + ".json").read())["target"] == "clip"


def test_pretrain_resume_matches_uninterrupted(tmp_path, smoke_clip, monkeypatch):
    full = pretrain.run(_pre_cfg(smoke_clip, "pixel", 2), tmp_path / "full")
    resumed = _interrupted_then_resumed(monkeypatch, pretrain.run, _pre_cfg(smoke_clip, "pixel", 2), tmp_path / "part")
    assert resumed["loss_kind"] == "mse"
    assert resumed["steps"] == full["steps"] and len(resumed["history"]) == 2
    # and exactly the same run: same data order, masks, losses and final weights
    assert _without_time(resumed["history"]) == _without_time(full["history"])
    _assert_same_state(torch.load(resumed["export"], weights_only=True), torch.load(full["export"], weights_only=True))


def test_finetune_from_export_and_scratch(tmp_path, pretrained):
    result, _ = pretrained
    mvp = finetune.run(_ft_cfg(result, "MVP"), tmp_path / "a")
    scratch = finetune.run(_ft_cfg(result, "Scratch"), tmp_path / "b")
    for r, method in ((mvp, "MVP"), (scratch, "Scratch")):
        assert [row["metric"] for row in r["rows"]] == ["acc", "acc_final"]
        for row in r["rows"]:
            assert row["method"] == method and row["dataset"] == "ImageNet" and 0 <= row["value"] <= 100
    assert sorted(mvp["load_report"]["missing"]) == ["head.bias", "head.weight"]
    assert mvp["top1"] == mvp["history"][-1]["val_top1"] and mvp["val_images"] == 8


def test_finetune_resume_matches_uninterrupted(tmp_path, pretrained, monkeypatch):
    result, _ = pretrained
    cfg = _ft_cfg(result, "MVP", epochs=2)
    full = finetune.run(cfg, tmp_path / "full")
    resumed = _interrupted_then_resumed(monkeypatch, finetune.run, cfg, tmp_path / "part")
    assert len(resumed["history"]) == 2 and resumed["top1"] == full["top1"]
    assert _without_time(resumed["history"]) == _without_time(full["history"])
    _assert_same_state(checkpoint.load(tmp_path / "part")["model"], checkpoint.load(tmp_path / "full")["model"])


def test_segment_from_export(tmp_path, pretrained):
    result, _ = pretrained
    r = segment.run(_seg_cfg(result), tmp_path)
    assert r["rows"][0]["metric"] == "miou" and 0 <= r["miou"] <= 100
    ex = torch.load(r["examples"], weights_only=False)["examples"]
    assert ex[0]["pred"].shape == ex[0]["label"].shape
    # iteration-based inside the epoch loop: 2 steps per epoch, 3 iterations -> 2 epochs, the last one cut short
    assert [h["step"] for h in r["history"]] == [2, 3]
    assert "miou" not in r["history"][0] and r["history"][-1]["miou"] == r["miou"]  # eval_every 0: only the end


def test_segment_resume_matches_uninterrupted(tmp_path, pretrained, monkeypatch):
    result, _ = pretrained
    cfg = _seg_cfg(result, iters=4, eval_every=1)
    full = segment.run(cfg, tmp_path / "full")
    resumed = _interrupted_then_resumed(monkeypatch, segment.run, cfg, tmp_path / "part")
    assert [h["step"] for h in resumed["history"]] == [2, 4] and all("miou" in h for h in resumed["history"])
    assert _without_time(resumed["history"]) == _without_time(full["history"])
    assert resumed["miou"] == full["miou"] and resumed["per_class_iou"] == full["per_class_iou"]
    _assert_same_state(checkpoint.load(tmp_path / "part")["model"], checkpoint.load(tmp_path / "full")["model"])


def test_params_check_names_a_typo_before_any_job_starts():
    """The runner's check of a params file (mvp.PARAM_CHECKS) names the bad key; an empty diff is the paper
    recipe. (A job's Config refusing a typo, for every job: tests/test_spine_launch.py.)"""
    from vlpt_lib.workbook import mvp

    bad = {"pretrain": ({"optim": {"warmup_epoch": 1}}, "optim.warmup_epoch"),
           "finetune": ({"aug": {"mix_up": 0.5}}, "aug.mix_up"), "segment": ({"eval_evry": 2}, "eval_evry")}
    for job, (diff, key) in bad.items():
        with pytest.raises(ValueError, match=key):
            mvp.PARAM_CHECKS[job](diff)
    for job in ("pretrain", "finetune", "segment"):
        mvp.PARAM_CHECKS[job]({})  # an empty diff = the paper recipe


def test_segment_stride_defaults():
    assert segment.Config().data.stride == 341  # the paper's slide stride
    assert segment.Config.model_validate({"data": {"crop": 64, "stride": None}}).data.stride == math.ceil(64 * 2 / 3)


def test_seg_train_transform_joint():
    import numpy as np

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 30:] = 255
    mask = np.zeros((40, 60), np.uint8)
    mask[:, 30:] = 1
    tf = segment.SegTrain(32, img_scale=(120, 40), ratio_range=(1.0, 1.0), photometric=False, mean=(0, 0, 0),
                          std=(1, 1, 1))
    for _ in range(5):
        x, m = tf(img, mask)
        assert x.shape == (3, 32, 32) and m.shape == (32, 32) and m.dtype == torch.long
        # image and mask stay aligned through resize / crop / flip
        bright = x.mean(0) > 0.5
        assert (bright[m == 1]).float().mean() > 0.9 and (~bright[m == 0]).float().mean() > 0.9


def test_bench_mvp_smoke(tmp_path, capsys):
    from vlpt_lib.bench.mvp import run_bench

    out = run_bench(["--device", "cpu", "--model", "smoke", "--batch", "4", "--steps", "1", "--warmup", "0",
                     "--out", str(tmp_path)])
    assert {r["mode"] for r in out["records"]} == {"eager", "tuned"}
    assert out["flops_per_step"]["student_fwd_bwd"] > out["flops_per_step"]["teacher_fwd"] > 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mvp pretrain: ") and "MFU" in last and "over fp32 eager" in last
    assert (tmp_path / "mvp_cpu_smoke_b4.json").exists()
