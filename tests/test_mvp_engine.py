"""MVP jobs end to end on synthetic data with tiny models: pretrain (clip and pixel) -> export -> finetune/segment."""
import json

import pytest
import torch

torch.set_num_threads(2)


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
                optim=dict(epochs=epochs, batch_size=8, lr=1e-3, warmup_epochs=1, clip_grad=3.0, betas=[0.9, 0.98],
                           weight_decay=0.05))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, smoke_clip):
    from vlpt_lib.engine import pretrain

    run_dir = tmp_path_factory.mktemp("pre")
    return pretrain.run(_pre_cfg(smoke_clip), run_dir), run_dir


def test_pretrain_exports_timm_checkpoint(pretrained):
    import timm

    result, run_dir = pretrained
    assert result["loss_kind"] == "cosine" and len(result["history"]) == 2
    assert all(0 <= h["loss"] <= 2 for h in result["history"])
    assert result["num_masking_patches"] == round(0.4 * 16)
    sd = torch.load(result["export"], weights_only=True)
    model = timm.create_model(result["model_name"], pretrained=False, num_classes=3, **result["kwargs"])
    res = model.load_state_dict(sd, strict=False)
    assert sorted(res.missing_keys) == ["head.bias", "head.weight"] and not res.unexpected_keys
    assert json.loads(open(result["export"] + ".json").read())["target"] == "clip"


def test_pretrain_resume_matches_uninterrupted(tmp_path, smoke_clip):
    from vlpt_lib.engine import pretrain

    full = pretrain.run(_pre_cfg(smoke_clip, "pixel", 2), tmp_path / "full")
    pretrain.run(_pre_cfg(smoke_clip, "pixel", 1), tmp_path / "part")        # "killed" after epoch 1
    resumed = pretrain.run(_pre_cfg(smoke_clip, "pixel", 2), tmp_path / "part")
    assert resumed["loss_kind"] == "mse"
    # epoch 1 identical; the resumed run continues from the checkpoint (same epoch count and steps)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], rel=1e-4)
    assert resumed["steps"] == full["steps"] and len(resumed["history"]) == 2


def test_weight_decay_groups_follow_beit():
    from vlpt_lib.engine.pretrain import weight_decay_groups
    from vlpt_lib.models.mvp import MVPStudent

    student = MVPStudent("smoke", target_dim=4)
    decay, no_decay = weight_decay_groups(student, 0.05)
    names = {id(p): n for n, p in student.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "mask_token" in nd and "encoder.cls_token" in nd
    assert "encoder.rel_pos_bias.relative_position_bias_table" in nd
    assert all(names[id(p)].endswith("weight") for p in decay["params"])
    assert not any("norm" in names[id(p)] or "gamma" in names[id(p)] for p in decay["params"])


def test_finetune_from_export_and_scratch(tmp_path, pretrained):
    from vlpt_lib.engine import finetune

    result, _ = pretrained
    base = dict(seed=0, threads=2, data=dict(kind="synthetic", n=16, n_val=8, num_classes=4),
                optim=dict(epochs=1, batch_size=8, lr=1e-3, warmup_epochs=0, layer_decay=0.65, drop_path=0.1))
    mvp = finetune.run(dict(base, method="MVP", init=dict(checkpoint=result["export"], model_name=result["model_name"],
                                                          kwargs=result["kwargs"])), tmp_path / "a")
    scratch = finetune.run(dict(base, method="Scratch", init=dict(checkpoint=None, model_name=result["model_name"],
                                                                  kwargs=result["kwargs"])), tmp_path / "b")
    for r, method in ((mvp, "MVP"), (scratch, "Scratch")):
        row = r["rows"][0]
        assert row["method"] == method and row["metric"] == "acc" and row["dataset"] == "ImageNet"
        assert 0 <= row["value"] <= 100
    assert sorted(mvp["load_report"]["missing"]) == ["head.bias", "head.weight"]


def test_segment_from_export(tmp_path, pretrained):
    from vlpt_lib.engine import segment

    result, _ = pretrained
    cfg = dict(seed=0, threads=2, method="MVP",
               init=dict(checkpoint=result["export"], model_name=result["model_name"], kwargs=result["kwargs"]),
               data=dict(kind="synthetic", n=4, n_val=2, num_classes=3, crop=32, img_scale=[96, 32], size=40),
               model=dict(decoder_channels=16, aux_channels=8),
               optim=dict(iters=3, batch_size=2, lr=1e-3, warmup_iters=1, layer_decay=0.65))
    r = segment.run(cfg, tmp_path)
    assert r["rows"][0]["metric"] == "miou" and 0 <= r["miou"] <= 100
    ex = torch.load(r["examples"], weights_only=False)["examples"]
    assert ex[0]["pred"].shape == ex[0]["label"].shape


def test_seg_train_transform_joint():
    import numpy as np
    from vlpt_lib.engine.segment import SegTrain

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, 30:] = 255
    mask = np.zeros((40, 60), np.uint8)
    mask[:, 30:] = 1
    tf = SegTrain(32, img_scale=(120, 40), ratio_range=(1.0, 1.0), photometric=False, mean=(0, 0, 0), std=(1, 1, 1))
    for _ in range(5):
        x, m = tf(img, mask)
        assert x.shape == (3, 32, 32) and m.shape == (32, 32) and m.dtype == torch.long
        # image and mask stay aligned through resize / crop / flip
        bright = x.mean(0) > 0.5
        assert (bright[m == 1]).float().mean() > 0.9 and (~bright[m == 0]).float().mean() > 0.9


def test_bench_mvp_smoke(tmp_path, capsys):
    from vlpt_lib.bench_mvp import run_bench

    out = run_bench(["--device", "cpu", "--model", "smoke", "--batch", "4", "--steps", "1", "--warmup", "0",
                     "--out", str(tmp_path)])
    assert {r["mode"] for r in out["records"]} == {"eager", "tuned"}
    assert out["flops_per_step"]["student_fwd_bwd"] > out["flops_per_step"]["teacher_fwd"] > 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mvp pretrain: ") and "MFU" in last and "over fp32 eager" in last
    assert (tmp_path / "mvp_cpu_smoke_b4.json").exists()
