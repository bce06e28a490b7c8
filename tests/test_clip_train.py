"""The mini CLIP job: the loss goes down, the weights reload through open_clip, rows are tidy, resume works."""
from dataclasses import replace

import open_clip
import pydantic
import pytest
import torch
from torch.utils.data import TensorDataset

from numerics import assert_close_fp32
from vlpt_lib.data import world_layout
from vlpt_lib.jobs import clip_train
from vlpt_lib.jobs.launch import resolve_config
from vlpt_lib.models.zeroshot import ZeroShotHead, zeroshot_classifier
from vlpt_lib.training import checkpoint
from vlpt_lib.training.evaluate import evaluate_classifier
from vlpt_lib.workbook import profiles
from vlpt_lib.worlds import mini_world as M

CFG = replace(M.CONFIGS["smoke"], imagenet_classes=4, imagenet_train=1, imagenet_val=2, variant_per_class=1,
              subset_classes=2, coop_train=1, coop_val=1, coop_test=1, ade_train=1, ade_val=1, captions=128)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return M.ensure_world(tmp_path_factory.mktemp("w") / "world", CFG)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    cfg = {**profiles.mini_clip_cfg("smoke"), "world_root": str(world), "epochs": 4, "batch_size": 32,
           "lr": 3e-3, "warmup_steps": 2}
    run_dir = tmp_path_factory.mktemp("run")
    return cfg, run_dir, clip_train.run(cfg, run_dir)


def test_default_cfgs():
    for profile in ("smoke", "mini"):
        cfg = resolve_config("clip_train", profiles.mini_clip_cfg(profile))
        assert {"model_name", "world_root", "epochs", "batch_size", "lr", "weight_decay", "warmup_steps",
                "seed", "num_workers"} <= set(cfg)
        assert cfg["model_name"] == f"vlpt-{profile}-clip"
        assert {k: cfg[k] for k in profiles.MINI_CLIP[profile]} == profiles.MINI_CLIP[profile]
    with pytest.raises(ValueError):
        profiles.mini_clip_cfg("paper")


def test_world_root_is_required():
    # the world is explicit: no profile, no default (a typo in the Config: tests/test_spine_launch.py)
    with pytest.raises(pydantic.ValidationError, match="world_root"):
        clip_train.Config.model_validate({})


def test_param_groups_are_open_clips_rule():
    """timm's grouping with NO_WEIGHT_DECAY = the hand-written rule the job used before."""
    model = open_clip.create_model("vlpt-smoke-clip")
    decay, no_decay = set(), set()
    for name, p in model.named_parameters():
        exclude = p.ndim < 2 or any(k in name for k in ("bn", "ln", "bias", "logit_scale", "embedding", "token"))
        (no_decay if exclude else decay).add(id(p))
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in clip_train.param_groups(model, 0.1)}
    assert groups == {0.1: decay, 0.0: no_decay}


def test_loss_goes_down(trained):
    _, _, res = trained
    losses = [h["loss"] for h in res["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_checkpoint_reloads_through_open_clip(trained):
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
    assert {r["dataset"] for r in ours} == set(world_layout.MINI_DATASETS + world_layout.MINI_VARIANTS) == set(chance)
    for r in ours:
        assert r["table"] == "mini_clip_zeroshot" and r["split"] == "test" and r["metric"] == "acc"
        assert 0 <= r["value"] <= 100 and chance[r["dataset"]] == round(100 / r["n_classes"], 2)


def test_resume_skips_finished_epochs(trained):
    cfg, run_dir, res = trained
    again = clip_train.run({**cfg, "epochs": 4}, run_dir)
    assert again["history"] == res["history"]


def _without_time(history):
    return [{k: v for k, v in h.items() if k != "elapsed_s"} for h in history]


def test_interrupted_run_resumes_to_the_uninterrupted_result(trained, tmp_path, monkeypatch):
    """Killed right after epoch 1's checkpoint, re-run in the same folder: same weights, history and rows."""
    cfg, run_dir, res = trained
    real_save = checkpoint.save
    calls = []

    def save_then_die(*args, **kwargs):
        out = real_save(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt("killed after the first checkpoint")

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        clip_train.run(cfg, tmp_path / "run")
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert len(calls) == 1 and checkpoint.load(tmp_path / "run")["epoch"] == 0
    resumed = clip_train.run(cfg, tmp_path / "run")
    assert _without_time(resumed["history"]) == _without_time(res["history"])
    assert resumed["rows"] == res["rows"]
    a = torch.load(run_dir / clip_train.CHECKPOINT)
    b = torch.load(tmp_path / "run" / clip_train.CHECKPOINT)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_zeroshot_helpers_accept_template_lists_and_callables(trained):
    cfg, run_dir, _ = trained
    model, _, _ = open_clip.create_model_and_transforms(cfg["model_name"], pretrained=str(run_dir / "mini_clip.pt"))
    tok = open_clip.get_tokenizer(cfg["model_name"])
    one = zeroshot_classifier(model, tok, ["red_circle", "blue star"], "a photo of a {}.")
    both = zeroshot_classifier(model, tok, ["red circle", "blue star"], ["a photo of a {}.", lambda c: f"a {c}."])
    assert one.shape == both.shape == (model.text_projection.shape[1], 2)
    # unit columns: a float32 norm of an embed_dim-vector is off by about embed_dim eps (tests/numerics.py)
    assert_close_fp32(one.norm(dim=0), torch.ones(2), k=one.shape[0], msg="column norms")
    x = torch.randn(6, 3, 32, 32)
    res = evaluate_classifier(ZeroShotHead(model, one), TensorDataset(x, torch.tensor([0, 1, 0, 1, 0, 1])),
                              device=torch.device("cpu"), batch_size=4)
    assert res["n"] == 6 and 0 <= res["top1"] <= 100 and len(res["per_class_acc"]) == 2


def test_zeroshot_weights_in_chunks_equal_open_clips_encode_text():
    """Prompts of different lengths in chunks of 2, each cut after its own last EOT, come back in the class
    order and equal open_clip's full-length encode_text."""
    torch.manual_seed(0)
    model = open_clip.create_model("vlpt-smoke-clip").eval()
    tok = open_clip.get_tokenizer("vlpt-smoke-clip")
    names = ["American Staffordshire terrier", "ox", "golden retriever", "eft", "sea lion on a rock", "cat"]
    got = zeroshot_classifier(model, tok, names, "a photo of a {}.", batch_size=2)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_text(tok([f"a photo of a {n}." for n in names])), dim=-1)
    # float32 rounding along the text tower (tests/numerics.py): per block of width 64 (head width 32, up to 32
    # tokens) qkv, out and MLP-in (64 each), scores (32), attention (32), MLP-out (256), 2 blocks, then the
    # projection and the normalisation (64 each)
    assert_close_fp32(got.t(), ref, k=2 * (7 * 64 + 32 + 32) + 2 * 64, msg="zero-shot weights")
