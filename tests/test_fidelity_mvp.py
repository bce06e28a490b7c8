"""Issue #8, MVP points 6-10 and the recipe card: the jobs' recipes equal the official BEiT code.

Every expected value is computed here from the reference's own rule, written out below (or, when another
test file needs it too, in tests/references.py) with its source (microsoft/unilm, beit/ and beit2/), never by
calling the project's function. The jobs run for a few steps on tiny synthetic data; what they actually used
(optimizer groups, per-step lrs, history, rows) is captured and compared with the rule.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torchvision.transforms import v2

from numerics import EPS64, LR_SCALE_REL
from references import beit_cosine_scheduler, mmseg_layer_decay_groups
from vlpt_lib.jobs import finetune, pretrain, segment
from vlpt_lib.models.mvp import MVPStudent
from vlpt_lib.training import optim
from vlpt_lib.workbook import recipe

REPO = Path(__file__).resolve().parents[1]


# ----- the reference rules, written out ----------------------------------------------------------
def beit_get_num_layer_for_vit(var_name, num_max_layer):
    """unilm beit/optim_factory.py get_num_layer_for_vit (fine-tuning; beit2 has the same)."""
    if var_name in ("cls_token", "mask_token", "pos_embed"):
        return 0
    elif var_name.startswith("patch_embed"):
        return 0
    elif var_name.startswith("rel_pos_bias"):
        return num_max_layer - 1
    elif var_name.startswith("blocks"):
        return int(var_name.split('.')[1]) + 1
    else:
        return num_max_layer - 1


def beit_get_parameter_groups(named_params, weight_decay, skip_list, get_num_layer=None, get_layer_scale=None):
    """unilm beit/optim_factory.py get_parameter_groups: {name: (weight decay, lr scale)}."""
    out = {}
    for name, param in named_params:
        if len(param.shape) == 1 or name.endswith(".bias") or name in skip_list:
            this_weight_decay = 0.
        else:
            this_weight_decay = weight_decay
        scale = 1.
        if get_num_layer is not None:
            layer_id = get_num_layer(name)
            scale = get_layer_scale(layer_id) if get_layer_scale is not None else 1.
        out[name] = (this_weight_decay, scale)
    return out


def _truncated_std(std):
    """Standard deviation of N(0, std) truncated at +-std (BEiT's trunc_normal_ with a=-std, b=std)."""
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    mass = math.erf(1 / math.sqrt(2))  # P(|z| < 1)
    return std * math.sqrt(1 - 2 * phi1 / mass)


# ----- running the jobs with a spy on the optimizer and the schedule --------------------------------
class _Recording:
    """The job's scheduler, recording each group's lr after every step_update (the lr that step trains with)."""

    def __init__(self, sched, opt, sink):
        self.sched, self.opt, self.sink = sched, opt, sink

    def step_update(self, step):
        self.sched.step_update(step)
        self.sink.append((step, [g["lr"] for g in self.opt.param_groups]))

    def state_dict(self):
        return self.sched.state_dict()

    def load_state_dict(self, state):
        self.sched.load_state_dict(state)


class Spy:
    """Captures what a job hands the optimizer factory and the lr every group has at every step."""

    def __init__(self, mp):
        self.optimizers, self.lrs, self.models, self.schedule = [], [], [], None
        real_opt, real_sched = optim.create_optimizer, optim.create_scheduler

        def create_optimizer(model_or_groups, **kw):
            opt = real_opt(model_or_groups, **kw)
            self.optimizers.append((model_or_groups, opt))
            return opt

        def create_scheduler(opt, name, **kw):
            self.schedule = (name, kw)
            return _Recording(real_sched(opt, name, **kw), opt, self.lrs)

        mp.setattr(optim, "create_optimizer", create_optimizer)
        mp.setattr(optim, "create_scheduler", create_scheduler)

    def opt(self):
        return self.optimizers[-1][1]

    def per_param(self, model):
        """{name: (weight_decay, lr_scale, group index)} of the job's optimizer."""
        where = {id(p): (g["weight_decay"], g.get("lr_scale", 1.0), i)
                 for i, g in enumerate(self.opt().param_groups) for p in g["params"]}
        return {n: where[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def _capture_model(mp, module, attr):
    """Wrap module.attr (a builder returning (model, report)) to keep the model it built."""
    built = []
    real = getattr(module, attr)

    def wrapper(*a, **k):
        out = real(*a, **k)
        built.append(out[0])
        return out
    mp.setattr(module, attr, wrapper)
    return built


TINY_BEIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, init_values=0.1,
                 use_abs_pos_emb=False, use_rel_pos_bias=True, use_shared_rel_pos_bias=False)
PRE = dict(seed=0, threads=2, target="pixel", student=dict(arch="smoke"), data=dict(kind="synthetic", n=16),
           mask=dict(ratio=0.4, min_block_fraction=0.15),
           optim=dict(epochs=3, batch_size=8, lr=1e-3, lr_ref_batch=None, warmup_epochs=1, min_lr=1e-5))
FT = dict(seed=0, threads=2, method="Scratch", init=dict(checkpoint=None, model_name="beit_base_patch16_224",
                                                         kwargs=TINY_BEIT),
          data=dict(kind="synthetic", n=16, n_val=8, num_classes=4),
          optim=dict(epochs=3, batch_size=8, lr=1e-3, lr_ref_batch=None, warmup_epochs=1, min_lr=1e-6,
                     layer_decay=0.65))


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        spy = Spy(mp)
        result = pretrain.run(PRE, tmp_path_factory.mktemp("pre"))
    return spy, result


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        spy = Spy(mp)
        models = _capture_model(mp, finetune, "create_backbone")
        run_dir = tmp_path_factory.mktemp("ft")
        result = finetune.run(FT, run_dir)
    return spy, models[0], result, run_dir


# ----- 6: segmentation layer decay ---------------------------------------------------------------------
def test_segment_layer_decay_is_beits_mmseg_constructor(tmp_path, monkeypatch):
    """12 blocks -> num_layers 14: ids 0 (embeddings), i + 1 (block i), 13 (pyramid, decoder, heads), scale
    0.65 ** (13 - id), on the model exactly as the job builds it (final norm and head pruned): what the job's
    optimizer holds. (models.segmentation.layer_decay_param_groups on its own: tests/test_mvp_models.py.)"""
    cfg = dict(seed=0, threads=2, eval_every=0, examples=0,
               init=dict(checkpoint=None, model_name="beit_base_patch16_224", kwargs=dict(TINY_BEIT, depth=12)),
               data=dict(kind="synthetic", n=2, n_val=1, num_classes=3, crop=32, img_scale=[64, 32], size=32,
                         stride=None),
               model=dict(decoder_channels=16, aux_channels=8),
               optim=dict(iters=1, batch_size=2, lr=7e-4, lr_ref_batch=None, warmup_iters=1, weight_decay=0.05,
                          layer_decay=0.65))
    spy = Spy(monkeypatch)
    models = _capture_model(monkeypatch, segment, "build_model")
    segment.run(cfg, tmp_path)
    model = models[0]
    assert len(model.backbone.blocks) == 12 and not any(n.startswith("backbone.norm") for n, _ in
                                                           model.named_parameters())
    expected = mmseg_layer_decay_groups(model.named_parameters(), 0.05, paramwise_num_layers=12,
                                        layer_decay_rate=0.65)
    got = spy.per_param(model)
    assert got.keys() == expected.keys()
    for name, (wd, scale) in expected.items():
        assert got[name][0] == wd, name
        assert got[name][1] == pytest.approx(scale, rel=LR_SCALE_REL), name
    # the consequences the issue names: block 11 at 0.65 (was 1.0), the decoder at 1.0, cls token decayed
    assert got["backbone.blocks.11.mlp.fc2.weight"][1] == pytest.approx(0.65)
    assert got["backbone.cls_token"][:2] == (0.05, pytest.approx(0.65 ** 13))
    assert got["backbone.blocks.0.attn.relative_position_bias_table"][0] == 0.05
    assert got["decode_head.conv_seg.weight"][1] == 1.0 and got["auxiliary_head.convs.0.conv.weight"][1] == 1.0


# ----- 7: UperNet width ----------------------------------------------------------------------------
def test_upernet_widths_are_beits():
    m = segment.Config().model
    assert (m.decoder_channels, m.aux_channels, m.aux_weight) == (768, 256, 0.4)  # upernet_beit_base_12_512 + _base_
    cfg = segment.Config.model_validate(
        {"init": {"model_name": "beit_base_patch16_224", "kwargs": dict(TINY_BEIT, depth=4)}, "data": {"crop": 32}})
    model, _ = segment.build_model(cfg, 150)
    assert model.decode_head.conv_seg.in_channels == 768 and model.auxiliary_head.convs[0].conv.out_channels == 256
    assert model.auxiliary_head.convs[0].conv.in_channels == 32  # level 2 of the pyramid (in_index=2): backbone width
    paper = yaml.safe_load((REPO / "params/paper/12_ade20k_segmentation.yaml").read_text())["segment"]
    assert "model" not in paper  # the paper profile uses these defaults
    mini = yaml.safe_load((REPO / "params/mini/12_ade20k_segmentation.yaml").read_text())["segment"]["model"]
    assert mini == {"decoder_channels": 32, "aux_channels": 16}  # mini keeps its explicit small UperNet


# ----- 8: BEiT's cosine_scheduler in pre-training and fine-tuning -------------------------------------
def _check_lrs(spy, history, expected, scales):
    """Every group's lr at every step = schedule[step] x the group's lr scale; history lr = the epoch's last."""
    steps = [s for s, _ in spy.lrs]
    peak = max(expected) * max(scales)
    assert steps == list(range(len(expected)))
    for step, lrs in spy.lrs:
        # float64 formulas in another arrangement: a few eps64 of the peak lr (tests/numerics.py)
        assert lrs == pytest.approx([expected[step] * s for s in scales], rel=0, abs=16 * EPS64 * peak), step
    niter = len(expected) // len(history)
    assert [h["lr"] for h in history] == pytest.approx(
        [expected[(e + 1) * niter - 1] * max(scales) for e in range(len(history))], rel=0, abs=16 * EPS64 * peak)


def test_pretrain_lr_is_beits_cosine_scheduler(pretrained_run):
    spy, result = pretrained_run
    o = PRE["optim"]
    expected = beit_cosine_scheduler(o["lr"], o["min_lr"], o["epochs"], 16 // o["batch_size"], o["warmup_epochs"])
    assert expected[0] == 0.0  # the warm-up starts from 0 (start_warmup_value is never passed)
    _check_lrs(spy, result["history"], expected, [1.0] * len(spy.opt().param_groups))
    assert pretrain.Config().optim.warmup_lr == 0.0 and pretrain.Config().optim.schedule == "beit_cosine"


def test_finetune_lr_is_beits_cosine_scheduler(finetuned_run):
    spy, model, result, _ = finetuned_run
    o = FT["optim"]
    expected = beit_cosine_scheduler(o["lr"], o["min_lr"], o["epochs"], 16 // o["batch_size"], o["warmup_epochs"])
    _check_lrs(spy, result["history"], expected, [g["lr_scale"] for g in spy.opt().param_groups])
    assert finetune.Config().optim.warmup_lr == 0.0 and finetune.Config().optim.schedule == "beit_cosine"


# ----- 9: pre-training augmentation, init, weight decay; fine-tuning groups ------------------------------
def test_pretrain_view_is_beits():
    """beit/ and beit2/ datasets.py DataAugmentationForBEiT: ColorJitter(0.4, 0.4, 0.4), RandomHorizontalFlip(0.5),
    then the random resized crop (scale (min_crop_scale, 1), bicubic); ToTensor/Normalize aside."""
    data = pretrain.Config().data
    ops = [t for t in pretrain.pretrain_transform(224, data).transforms if not isinstance(t, (v2.ToImage, v2.ToDtype))]
    assert [type(t) for t in ops] == [v2.ColorJitter, v2.RandomHorizontalFlip, v2.RandomResizedCrop]
    jitter, flip, crop = ops
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.6, 1.4),) * 3 + (None,)
    assert flip.p == 0.5
    assert crop.size == (224, 224) and crop.scale == (0.2, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert crop.interpolation == v2.InterpolationMode.BICUBIC


def test_student_init_is_beits_pretraining_init():
    """beit2 modeling_pretrain.py VisionTransformerForMaskedImageModeling: trunc_normal_(std=0.02, a=-0.02,
    b=0.02) on pos/cls/mask tokens, lm_head and every Linear/Conv2d weight, biases 0, LayerNorm 1/0
    (_init_weights), then fix_init_weight: attn.proj.weight and mlp.fc2.weight of block i / sqrt(2 (i + 1));
    relative position table zeros, q/v biases zeros, layer scale gamma = init_values."""
    torch.manual_seed(0)
    student = MVPStudent({"model_name": "beit_base_patch16_224",
                          "kwargs": dict(img_size=64, patch_size=16, embed_dim=192, depth=3, num_heads=3)},
                         target_dim=96, layer_scale_init=0.1)
    std = 0.02

    def check_trunc(t, bound, name):
        t = t.detach().flatten()
        assert t.abs().max() <= bound * (1 + 1e-6), name
        # a sample std of n draws has a relative standard error of at most 1/sqrt(2n) (the normal's; truncation
        # lowers it): 6 of them
        assert t.std().item() == pytest.approx(_truncated_std(bound), rel=6 / math.sqrt(2 * t.numel())), name

    for name, m in student.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            i = int(name.split(".")[2]) if name.startswith("encoder.blocks.") else None
            fixed = i is not None and (name.endswith("attn.proj") or name.endswith("mlp.fc2"))
            check_trunc(m.weight, std / math.sqrt(2 * (i + 1)) if fixed else std, name)
            if m.bias is not None:
                assert (m.bias == 0).all(), name
        elif isinstance(m, torch.nn.LayerNorm):
            assert (m.weight == 1).all() and (m.bias == 0).all(), name
    for name in ("encoder.cls_token", "mask_token"):
        t = dict(student.named_parameters())[name]
        assert t.abs().max() <= std and t.abs().max() > 0, name
    assert student.encoder.pos_embed is None  # BEiT pre-training: relative positions only
    for name, p in student.named_parameters():
        if "relative_position_bias_table" in name or name.endswith(("q_bias", "v_bias")):
            assert (p == 0).all(), name
        if name.endswith(("gamma_1", "gamma_2")):
            assert (p == 0.1).all(), name


def test_pretrain_weight_decay_is_beits(pretrained_run):
    """run_beit_pretraining.py: create_optimizer(args, model) -> get_parameter_groups with skip =
    model.no_weight_decay() = {'pos_embed', 'cls_token'} (modeling_pretrain.py): the mask token and the shared
    relative position table are decayed. Our names: encoder.X = BEiT's X, head = BEiT's lm_head."""
    spy, _ = pretrained_run
    student = spy.optimizers[-1][0]
    to_beit = {n: (n[len("encoder."):] if n.startswith("encoder.") else n.replace("head.", "lm_head.", 1))
               for n, _ in student.named_parameters()}
    beit_params = [(to_beit[n], p) for n, p in student.named_parameters()]
    expected = beit_get_parameter_groups(beit_params, 0.05, {"pos_embed", "cls_token"})
    got = spy.per_param(student)
    assert len(spy.opt().param_groups) == 2  # get_parameter_groups without layer ids: "decay" and "no_decay"
    for name, beit_name in to_beit.items():
        assert got[name][:2] == expected[beit_name], name  # weight decay, and lr scale 1
    assert got["mask_token"][0] == 0.05 and got["encoder.rel_pos_bias.relative_position_bias_table"][0] == 0.05
    assert got["encoder.cls_token"][0] == 0.0


def test_finetune_groups_are_beits(finetuned_run):
    """run_class_finetuning.py: LayerDecayValueAssigner([ld ** (num_layers + 1 - i) for i in range(num_layers + 2)]),
    skip = model.no_weight_decay() = {'pos_embed', 'cls_token'} (modeling_finetune.py): the per-layer relative
    position tables are decayed and go with their block (layer id i + 1)."""
    spy, model, _, _ = finetuned_run
    num_layers = len(model.blocks)
    values = [0.65 ** (num_layers + 1 - i) for i in range(num_layers + 2)]
    expected = beit_get_parameter_groups(model.named_parameters(), 0.05, {"pos_embed", "cls_token"},
                                         lambda n: beit_get_num_layer_for_vit(n, len(values)),
                                         lambda layer_id: values[layer_id])
    got = spy.per_param(model)
    assert got.keys() == expected.keys()
    for name, (wd, scale) in expected.items():
        assert got[name][0] == wd and got[name][1] == pytest.approx(scale, rel=LR_SCALE_REL), name
    table = "blocks.1.attn.relative_position_bias_table"
    assert got[table][:2] == (0.05, pytest.approx(0.65 ** 2)) and got[table][2] == got["blocks.1.attn.qkv.weight"][2]
    assert got["head.weight"][1] == 1.0 and got["cls_token"][0] == 0.0


# ----- 10: what the table reports --------------------------------------------------------------------------
def test_finetune_reports_best_and_final_top1(finetuned_run, results_root):
    """BEiT run_class_finetuning.py keeps max_accuracy (best val acc1 over the evaluated epochs): the table's
    "acc" row (the metric the reference rows use) is that; "acc_final" is the last epoch's."""
    from vlpt_lib.workbook import tables

    _, _, result, _ = finetuned_run
    history = result["history"]
    evaluated = [h["val_top1"] for h in history if "val_top1" in h]
    assert len(evaluated) == FT["optim"]["epochs"]  # evaluated after every epoch, as BEiT
    max_accuracy = 0.0
    for acc1 in evaluated:
        if max_accuracy < acc1:
            max_accuracy = acc1
    assert result["top1_best"] == result["top1"] == max_accuracy
    assert result["top1_final"] == evaluated[-1]
    assert [h["val_top1_best"] for h in history] == [max(evaluated[:i + 1]) for i in range(len(evaluated))]
    rows = {r["metric"]: r for r in result["rows"]}
    assert rows["acc"]["value"] == max_accuracy and rows["acc_final"]["value"] == evaluated[-1]
    assert all(r["split"] == "val" and r["method"] == "Scratch" for r in rows.values())
    # the tidy table and the comparison with the paper still work; the paper number sits beside "acc"
    mvp_rows = [dict(r, method="MVP") for r in result["rows"]]
    tables.save_table("imagenet_finetune", mvp_rows, "smoke")
    df = tables.compare("imagenet_finetune", "smoke").set_index(["method", "metric"])
    assert df.loc[("MVP", "acc"), "paper"] == 84.4 and df.loc[("MVP", "acc"), "ours"] == pytest.approx(max_accuracy)
    assert np.isnan(df.loc[("MVP", "acc_final"), "paper"])


# ----- the recipe card -------------------------------------------------------------------------------------
def _paper_params(nb):
    return yaml.safe_load((REPO / f"params/paper/{nb}.yaml").read_text())


@pytest.mark.parametrize("job,nb", [(pretrain, "10_mvp_pretrain"), (finetune, "11_imagenet_finetune"),
                                    (segment, "12_ade20k_segmentation")])
def test_paper_configs_have_no_undocumented_field(job, nb):
    assert recipe.undocumented(job.Config()) == []
    diff = _paper_params(nb)[job.__name__.split(".")[-1]]
    assert recipe.undocumented(job.Config.model_validate(diff)) == []


def test_recipe_cards_of_the_paper_profile_resolve_without_running_anything(results_root, monkeypatch):
    from vlpt_lib.workbook import mvp, profiles

    def refuse(*a, **k):
        raise AssertionError("the recipe card must not generate or train anything")
    monkeypatch.setattr(profiles, "ensure_world_of", refuse)
    monkeypatch.setattr(profiles, "ensure_mini_clip", refuse)
    monkeypatch.setattr(mvp, "run_jobs", refuse)
    monkeypatch.setenv("VLPT_DATA_ROOT", "/data")
    p10 = _paper_params("10_mvp_pretrain")
    cfgs = mvp.pretrain_cfgs("paper", p10["pretrain"], p10["targets"])
    card = mvp.recipe_card("pretrain", cfgs)
    assert list(card.columns) == ["clip", "pixel", "hog", "paper", "deviates", "source"] and (card["source"] != "").all()
    # the paper profile runs the paper recipe: nothing deviates (a row's target names its row, not a deviation)
    assert set(card.index[card["deviates"] != ""]) == set()
    assert card.loc["data.color_jitter", "clip"] == "0.4" and card.loc["optim.warmup_lr", "clip"] == "0"
    assert card.loc["data.root", "clip"] == "/data"
    exports = mvp.pretrained_exports("paper")
    for job, nb, build in (("finetune", "11_imagenet_finetune", mvp.finetune_cfg),
                           ("segment", "12_ade20k_segmentation", mvp.segment_cfg)):
        p = _paper_params(nb)
        card = mvp.recipe_card(job, {m: build("paper", p[job], m, 0, exports) for m in p["methods"]})
        assert (card["source"] != "").all() and card.loc["init.checkpoint", "Scratch"] == "None"
        assert card.loc["init.checkpoint", "MVP"].endswith("student_timm.pth")
    assert card.loc["model.decoder_channels", "MVP"] == "768"


def test_the_configs_are_resolved_without_preparing_anything(results_root):
    """The card shows the configs that run, computed before anything exists: nothing generated or trained, and
    notebook 10's exports named where its runs will put them."""
    from vlpt_lib.workbook import mvp

    diff = {"student": {"arch": "smoke"}}
    assert mvp.pretrain_cfgs("smoke", diff)["clip"]["clip"]["pretrained"].endswith("mini_clip.pt")
    exports = mvp.pretrained_exports("smoke")
    assert set(exports) == {"clip", "pixel", "hog"}  # the targets of notebook 10's parameters
    for build in (mvp.finetune_cfg, mvp.segment_cfg):
        assert build("smoke", {}, "MVP", 0, exports)["init"]["checkpoint"] == exports["clip"]["export"]
    assert not any(results_root.rglob("*"))  # no world, no CLIP, no run
    # a smoke / mini card shows the paper's value beside every value its diff changes
    card = mvp.recipe_card("pretrain", mvp.pretrain_cfgs("smoke", {"optim": {"epochs": 2}}, ["pixel"]))
    assert card.loc["optim.epochs", "pixel"] == "2" and card.loc["optim.epochs", "paper"] == "300"
    assert card.loc["optim.lr", "deviates"] == ""
