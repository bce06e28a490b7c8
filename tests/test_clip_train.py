"""The mini CLIP job: the loss goes down, the weights reload through open_clip, rows are tidy, resume works."""
from dataclasses import replace

import pytest
import torch

from vlpt_lib.data import mini_world as M
from vlpt_lib.engine import clip_train
from vlpt_lib.engine.zeroshot import evaluate, zeroshot_classifier

CFG = replace(M.CONFIGS["smoke"], imagenet_classes=4, imagenet_train=1, imagenet_val=2, variant_per_class=1,
              subset_classes=2, coop_train=1, coop_val=1, coop_test=1, ade_train=1, ade_val=1, captions=128)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    world = M.ensure_world("smoke", tmp_path_factory.mktemp("w") / "world", cfg=CFG)
    cfg = {**clip_train.default_clip_train_cfg("smoke"), "world_root": str(world), "epochs": 4, "batch_size": 32,
           "lr": 3e-3, "warmup_steps": 2}
    run_dir = tmp_path_factory.mktemp("run")
    return cfg, run_dir, clip_train.run(cfg, run_dir)


def test_default_cfgs():
    for profile in ("smoke", "mini"):
        cfg = clip_train.default_clip_train_cfg(profile)
        assert {"profile", "model_name", "world_root", "epochs", "batch_size", "lr", "weight_decay", "warmup_steps",
                "seed", "num_workers"} <= set(cfg)
        assert cfg["model_name"] == f"vlpt-{profile}-clip"
    with pytest.raises(ValueError):
        clip_train.default_clip_train_cfg("paper")


def test_loss_goes_down(trained):
    _, _, res = trained
    losses = [h["loss"] for h in res["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_checkpoint_reloads_through_open_clip(trained):
    import open_clip

    cfg, run_dir, res = trained
    path = run_dir / clip_train.CHECKPOINT
    assert res["checkpoint"] == str(path) and path.is_file()
    model, _, _ = open_clip.create_model_and_transforms(cfg["model_name"], pretrained=str(path))
    saved = torch.load(path, map_location="cpu")
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_rows_are_tidy_with_chance(trained):
    _, _, res = trained
    rows = res["rows"]
    ours = [r for r in rows if r["method"] == "CLIP (mini)"]
    chance = {r["dataset"]: r["value"] for r in rows if r["method"] == "chance"}
    assert {r["dataset"] for r in ours} == set(M.MINI_DATASETS + M.MINI_VARIANTS) == set(chance)
    for r in ours:
        assert r["table"] == "mini_clip_zeroshot" and r["split"] == "test" and r["metric"] == "acc"
        assert 0 <= r["value"] <= 100 and chance[r["dataset"]] == round(100 / r["n_classes"], 2)


def test_resume_skips_finished_epochs(trained):
    cfg, run_dir, res = trained
    again = clip_train.run({**cfg, "epochs": 4}, run_dir)
    assert again["history"] == res["history"]


def test_zeroshot_helpers_accept_template_lists_and_callables(trained):
    import open_clip
    from torch.utils.data import TensorDataset, DataLoader

    cfg, run_dir, _ = trained
    model, _, _ = open_clip.create_model_and_transforms(cfg["model_name"], pretrained=str(run_dir / "mini_clip.pt"))
    tok = open_clip.get_tokenizer(cfg["model_name"])
    one = zeroshot_classifier(model, tok, ["red_circle", "blue star"], "a photo of a {}.")
    both = zeroshot_classifier(model, tok, ["red circle", "blue star"], ["a photo of a {}.", lambda c: f"a {c}."])
    assert one.shape == both.shape == (model.text_projection.shape[1], 2)
    assert torch.allclose(one.norm(dim=0), torch.ones(2), atol=1e-5)
    x = torch.randn(6, 3, 32, 32)
    res = evaluate(model, one, DataLoader(TensorDataset(x, torch.tensor([0, 1, 0, 1, 0, 1])), batch_size=4), "cpu")
    assert res["n"] == 6 and 0 <= res["acc"] <= 100 and len(res["per_class_acc"]) == 2
