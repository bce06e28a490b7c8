"""MVP pieces: block masking invariants, student/export into timm, CLIP teacher targets, mIoU, UperNet and its
layer-decay groups."""
import math

import numpy as np
import pytest
import timm
import torch

from numerics import EPS64, LR_SCALE_REL, assert_close_fp32
from references import beit_seg_resize_rel_pos_table, mmseg_layer_decay_groups

from vlpt_lib.utils.metrics import MeanIoU, intersect_and_union, mean_iou, reduce_zero_label
from vlpt_lib.models.masking import BlockMaskGenerator
from vlpt_lib.models.mvp import (MVPStudent, PixelTarget, create_backbone, export_kwargs, export_timm_state_dict,
                                 masked_loss, patchify, save_exported, load_exported_meta)
from vlpt_lib.models.relpos import beit_geometric_offsets, beit_resize_rel_pos_table



# ----- masking -----------------------------------------------------------------------------------
def test_block_mask_exact_count_and_seeded():
    gen = BlockMaskGenerator((14, 14), num_masking_patches=75, min_num_patches=16)
    masks = gen.batch(200, seed=3)
    assert masks.shape == (200, 14, 14) and masks.dtype == bool
    assert (masks.reshape(200, -1).sum(1) == 75).all()
    np.testing.assert_array_equal(masks, gen.batch(200, seed=3))
    assert not np.array_equal(masks, gen.batch(200, seed=4))
    np.testing.assert_array_equal(gen(7), gen(np.random.default_rng(7)))


def _components(mask):
    """4-connected components of a boolean grid."""
    seen, comps = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, size = [start], 0
        seen[start] = True
        while stack:
            i, j = stack.pop()
            size += 1
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                    seen[a, b] = True
                    stack.append((a, b))
        comps.append(size)
    return comps


def test_block_mask_is_blockwise():
    """Masks are made of blocks: far fewer connected pieces than random masking, and big ones."""
    gen = BlockMaskGenerator((14, 14), 75, 16)
    rng = np.random.default_rng(0)
    pieces, largest = [], []
    for _ in range(100):
        comps = _components(gen(rng))
        pieces.append(len(comps))
        largest.append(max(comps))
    assert np.mean(pieces) < 6          # random 75/196 masks have ~20 pieces
    assert np.min(largest) >= 12       # at least one block of BEiT's minimum size (up to rounding)


def test_block_aspect_ratio_and_area_bounds():
    """Blocks are rectangles inside the grid, aspect in [0.3, 1/0.3] up to rounding, and the first
    block of every mask is at least BEiT's minimum area up to rounding."""
    gen = BlockMaskGenerator((14, 14), 75, 16)
    lo, hi = gen.log_aspect
    assert math.isclose(math.exp(lo), 0.3) and math.isclose(math.exp(hi), 1 / 0.3)
    for s in range(100):
        mask = gen(s)
        assert gen.last_blocks
        for top, left, h, w in gen.last_blocks:
            assert 0 <= top and top + h <= 14 and 0 <= left and left + w <= 14
            assert mask[top:top + h, left:left + w].all()
            assert 0.2 <= h / w <= 5.0
        top, left, h, w = gen.last_blocks[0]
        assert h * w >= 12


def test_block_mask_from_ratio_scales():
    gen = BlockMaskGenerator.from_ratio((8, 8))
    assert gen.num_masking_patches == round(64 * 75 / 196) and gen.min_num_patches >= 1
    assert (gen.batch(20).reshape(20, -1).sum(1) == gen.num_masking_patches).all()


# ----- student and export -------------------------------------------------------------------------
def test_student_predicts_masked_positions_and_exports_to_timm(tmp_path):
    student = MVPStudent("smoke", target_dim=24)
    gen = BlockMaskGenerator.from_ratio(student.grid)
    mask = torch.from_numpy(gen.batch(3)).flatten(1)
    x = torch.rand(3, 3, 32, 32)
    pred = student(x, mask)
    assert pred.shape == (3 * gen.num_masking_patches, 24)
    # BEiT's pre-training skip list: pos_embed and cls_token only (the mask token is decayed)
    assert student.no_weight_decay() == {"encoder.pos_embed", "encoder.cls_token"}
    path = save_exported(student, tmp_path / "student.pth")
    sd = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    meta = load_exported_meta(path)
    assert meta["kwargs"] == export_kwargs("smoke", 0.1)  # what the recipe card plans before pre-training
    model = timm.create_model(meta["model_name"], pretrained=False, num_classes=5, **meta["kwargs"])
    res = model.load_state_dict(sd, strict=False)
    # what beit2's loader reports for a pre-training checkpoint under mean pooling: fc_norm and head fresh, the final
    # norm unused
    assert sorted(res.missing_keys) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(res.unexpected_keys) == ["norm.bias", "norm.weight"]
    # the shared relative position bias was copied into every block
    shared = student.encoder.rel_pos_bias.relative_position_bias_table
    for blk in model.blocks:
        assert torch.equal(blk.attn.relative_position_bias_table, shared.detach())  # a copy
    model.eval(), student.eval()
    with torch.no_grad():
        ours = student.forward_tokens(x).mean(1)
        theirs = model.forward_head(model.forward_features(
            (x - torch.tensor(student.mean).view(1, 3, 1, 1)) / torch.tensor(student.std).view(1, 3, 1, 1)),
            pre_logits=True)
    # LayerNorm of the mean vs mean of LayerNorms differ; only check the shapes and finiteness here
    assert ours.shape == theirs.shape and torch.isfinite(theirs).all()
    backbone, report = create_backbone(meta["model_name"], meta["kwargs"], path, num_classes=7)
    assert sorted(report["missing"]) == ["head.bias", "head.weight"] and not report["unexpected"]
    assert report["fresh"] == ["fc_norm.weight", "fc_norm.bias"] and report["unused"] == ["norm.bias", "norm.weight"]


def test_export_matches_timm_paper_layout():
    """The base student exports exactly the key set of timm's beit_base_patch16_224 with a final norm (the
    pre-training layout, global_pool='token'), minus head."""
    student = MVPStudent({"model_name": "beit_base_patch16_224", "kwargs": dict(img_size=32, depth=2)}, target_dim=8)
    sd = export_timm_state_dict(student)
    ref = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, depth=2,
                            global_pool="token").state_dict()
    ref_keys = {k for k in ref if "relative_position_index" not in k}
    assert set(sd) == ref_keys - {"head.weight", "head.bias"}
    assert all(sd[k].shape == ref[k].shape for k in sd)


def test_finetuning_starts_fc_norm_fresh_as_beit2(tmp_path):
    """beit2's fine-tuning with --use_mean_pooling (its default, run_class_finetuning.py lines 156-157) builds
    modeling_finetune.py's VisionTransformer with norm = Identity and a new fc_norm (lines 302-303), initialised by
    _init_weights to weight 1, bias 0 (lines 312, 332-334); it deletes only head.* of a mismatched shape from the
    checkpoint (run_class_finetuning.py lines 359-370) and loads with utils.load_state_dict (line 470; utils.py
    lines 413-457), which leaves fc_norm missing (at its init) and the checkpoint's norm.* unused. So fine-tuning
    starts fc_norm at 1 / 0 whatever the pre-training norm learnt, and every block is the checkpoint's."""
    student = MVPStudent("smoke", target_dim=8)
    with torch.no_grad():
        student.encoder.norm.weight.uniform_(0.5, 2.0)
        student.encoder.norm.bias.normal_()
    path = save_exported(student, tmp_path / "student.pth")
    sd = torch.load(path, weights_only=True)
    assert torch.equal(sd["norm.weight"], student.encoder.norm.weight.detach()) and "fc_norm.weight" not in sd
    meta = load_exported_meta(path)
    model, report = create_backbone(meta["model_name"], meta["kwargs"], path, num_classes=5, global_pool="avg")
    assert torch.equal(model.fc_norm.weight, torch.ones(64)) and torch.equal(model.fc_norm.bias, torch.zeros(64))
    assert isinstance(model.norm, torch.nn.Identity)
    own = model.state_dict()
    blocks = [k for k in sd if k.startswith("blocks.")]
    assert blocks and all(torch.equal(own[k], sd[k]) for k in blocks)
    assert sorted(report["missing"]) == ["head.bias", "head.weight"] and not report["unexpected"]  # the job's check
    assert report["fresh"] == ["fc_norm.weight", "fc_norm.bias"] and report["unused"] == ["norm.bias", "norm.weight"]
    # an export that stores the pre-training norm as fc_norm.* starts fc_norm fresh as well
    sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    torch.save(sd, tmp_path / "old.pth")
    model, report = create_backbone(meta["model_name"], meta["kwargs"], tmp_path / "old.pth", num_classes=5)
    assert torch.equal(model.fc_norm.weight, torch.ones(64)) and torch.equal(model.fc_norm.bias, torch.zeros(64))
    assert report["unused"] == ["fc_norm.bias", "fc_norm.weight"] and not report["unexpected"]
    # a model with a final norm instead (beit2's --use_cls) loads the pre-training norm into it
    model, report = create_backbone(meta["model_name"], meta["kwargs"], path, num_classes=5, global_pool="token")
    assert torch.equal(model.norm.weight, student.encoder.norm.weight.detach()) and not report["unused"]


# ----- relative position table resize (BEiT's loaders) ---------------------------------------------
# scipy 1.13.1's interp2d(kind='cubic') as BEiT's load_checkpoint calls it (tests/references.py
# beit_seg_resize_rel_pos_table with scipy's interp2d), for the 5x5 table below (window 3 -> 4, BEiT's q capped at 1.5:
# source offsets +-1, +-2.5, destination -3..3, the outer ones clamped to the edge), rounded to float32. Computed
# once with scipy (no dependency of the project): it pins interp2d's layout (rows relative y), edge clamping and
# spline.
INTERP2D_3_TO_4_IN = [[3, -1, 4, 1, -5], [9, 2, -6, 5, 3], [5, 8, -9, 7, 9], [-3, 2, 3, 8, 4], [6, -2, 6, 4, -3]]
INTERP2D_3_TO_4_OUT = [
    [3.0, -2.4952311515808105, -1.0, 4.0, 1.0, -4.438094615936279, -5.0],
    [6.577138900756836, -2.6493897438049316, -3.8247570991516113, 2.6590473651885986, 2.441903591156006,
     -2.463282823562622, -4.765712738037109],
    [9.0, 11.87237548828125, 2.0, -6.0, 5.0, 11.700940132141113, 3.0],
    [5.0, 19.340932846069336, 8.0, -9.0, 7.0, 20.31236457824707, 9.0],
    [-3.0, 0.42856767773628235, 2.0, 3.0, 8.0, 8.771422386169434, 4.0],
    [-2.3371329307556152, -12.735252380371094, -4.281900405883789, 11.28761100769043, 6.384759426116943,
     -3.892824172973633, -2.994284152984619],
    [6.0, -3.1009409427642822, -2.0, 6.0, 4.0, -2.072381019592285, -3.0]]


def test_rel_pos_resize_is_beits_bicubic_rule():
    """BEiT's resize (beit/semantic_segmentation/mmcv_custom/checkpoint.py lines 378-437) of a random 2-head table,
    14x14 -> 32x32 (segmentation at 512 px), equals the written-out reference: the project solves the not-a-knot
    spline by slopes, the reference by FITPACK's B-spline collocation, both in float64 and each rounded once to
    float32, so they differ by at most one float32 ulp of an entry: k = 1. The 3 extra rows are kept bit for bit."""
    table = torch.randn(27 * 27 + 3, 2, generator=torch.Generator().manual_seed(0))
    ours = beit_resize_rel_pos_table(table, (32, 32))
    ref = beit_seg_resize_rel_pos_table(table, (32, 32))
    assert ours.shape == (63 * 63 + 3, 2) and ours.dtype == torch.float32
    assert_close_fp32(ours, ref, k=1, msg="14x14 -> 32x32")
    assert torch.equal(ours[-3:], table[-3:])
    # scipy's own interp2d on a small table (a float64 spline rounded to float32 there and here): k = 1
    small = torch.cat([torch.tensor(INTERP2D_3_TO_4_IN, dtype=torch.float32).reshape(-1, 1),
                       torch.tensor([[0.5], [-0.25], [2.0]])])
    out = beit_resize_rel_pos_table(small, (4, 4))
    assert_close_fp32(out[:-3].view(7, 7), torch.tensor(INTERP2D_3_TO_4_OUT), k=1, msg="interp2d 3 -> 4")
    assert_close_fp32(beit_seg_resize_rel_pos_table(small, (4, 4))[:-3].view(7, 7), torch.tensor(INTERP2D_3_TO_4_OUT),
                      k=1, msg="reference vs interp2d")
    assert torch.equal(out[-3:], small[-3:])
    assert torch.equal(beit_resize_rel_pos_table(table, (14, 14)), table)  # same window: untouched


def test_rel_pos_spline_reproduces_bicubic_polynomials():
    """interp2d's spline on a grid is FITPACK's s=0 spline: not-a-knot, which reproduces every polynomial of degree
    <= 3 in each variable exactly (a natural or clamped-slope end condition would not). On BEiT's geometric grid
    14x14 -> 32x32, in float64, the resize of p(nodes) is p at the destination offsets (clamped to the outermost
    node, as FITPACK's evaluation does). Rounding: a 27x27 solve and two 27-term sums per entry, each growing
    the error by at most about 27, so 27 * 27 eps64 of max|p| bounds it; natural ends miss these cubics by
    1e-3 to 1e-2 of max|p|."""
    nodes = torch.from_numpy(beit_geometric_offsets(27, 63))
    dst = torch.arange(-31.0, 32.0, dtype=torch.float64).clamp(nodes[0], nodes[-1])
    powers = lambda v: torch.stack([(v / 31) ** i for i in range(4)], -1)  # noqa: E731
    for seed in range(3):
        coef = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        p_src = torch.einsum("yi,hij,xj->yxh", powers(nodes), coef, powers(nodes)).reshape(27 * 27, 2)
        p_dst = torch.einsum("yi,hij,xj->yxh", powers(dst), coef, powers(dst)).reshape(63 * 63, 2)
        extra = torch.zeros(3, 2, dtype=torch.float64)
        out = beit_resize_rel_pos_table(torch.cat([p_src, extra]), (32, 32))
        err = float((out[:-3] - p_dst).abs().max())
        assert err <= 27 * 27 * EPS64 * float(p_src.abs().max()), (seed, err)


def test_segmentation_load_resizes_rel_pos_tables_by_beits_rule(tmp_path):
    """A backbone built for another window (segmentation: 512 px) from an exported student gets BEiT's bicubic
    resize in every block (not timm's linear one), and the bias its attention adds in the forward (timm's
    Attention._get_rel_pos_bias, gathered by relative_position_index) is the resized table's."""
    student = MVPStudent("smoke", target_dim=8)  # 32 px, patch 8: window 4x4
    with torch.no_grad():
        student.encoder.rel_pos_bias.relative_position_bias_table.normal_()
    path = save_exported(student, tmp_path / "student.pth")
    meta = load_exported_meta(path)
    exported = torch.load(path, weights_only=True)["blocks.0.attn.relative_position_bias_table"]
    backbone, report = create_backbone(meta["model_name"], dict(meta["kwargs"], img_size=64), path, num_classes=0)
    assert not report["missing"] and not report["unexpected"]
    ref = beit_seg_resize_rel_pos_table(exported, (8, 8))
    n = 8 * 8 + 1
    for blk in backbone.blocks:
        table = blk.attn.relative_position_bias_table.detach()
        assert table.shape == (15 * 15 + 3, 2)
        assert_close_fp32(table, ref, k=1, msg="block table")   # one rounding to float32 on each side
        assert torch.equal(table[-3:], exported[-3:])
        bias = ref[blk.attn.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        assert_close_fp32(blk.attn._get_rel_pos_bias()[0], bias, k=1, msg="bias in the forward")
    with torch.no_grad():
        feats = backbone.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, n, 64) and torch.isfinite(feats).all()


def test_losses_and_pixel_target():
    a = torch.randn(10, 8)
    # 1 - cos lies in [0, 2]; the cosine of two 8-vectors in float32 is off by about 8 eps (tests/numerics.py)
    assert_close_fp32(masked_loss(a, a, "cosine"), 0.0, k=8, scale=2.0, msg="cos(a, a)")
    assert_close_fp32(masked_loss(a, -a, "cosine"), 2.0, k=8, msg="cos(a, -a)")
    x = torch.rand(2, 3, 16, 16)
    p = patchify(x, 8)
    assert p.shape == (2, 4, 192)
    assert torch.equal(p[0, 1].view(8, 8, 3).permute(2, 0, 1), x[0, :, 0:8, 8:16])  # pixels moved, not computed
    t = PixelTarget(8)(x)
    # each patch's 192 values have mean 0: the float32 mean of 192 terms is off by about 192 eps of max|t|
    assert_close_fp32(t.mean(-1), torch.zeros(2, 4), k=192, scale=t.abs().max(), msg="patch means")


def test_clip_teacher_targets_match_open_clip_tokens():
    import open_clip
    import vlpt_lib.models.clip  # noqa: F401  (registers vlpt-smoke-clip)
    from vlpt_lib.models.mvp import ClipTeacher

    clip_model = open_clip.create_model("vlpt-smoke-clip")
    teacher = ClipTeacher(clip_model)
    x = torch.rand(2, 3, 32, 32)
    tokens = teacher(x)
    assert tokens.shape == (2, 16, clip_model.visual.output_dim)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.visual.training
    # reference path: open_clip's own output_tokens (after ln_post), projected
    v = clip_model.visual
    v.output_tokens = True
    mean = torch.tensor(teacher.mean).view(1, 3, 1, 1)
    std = torch.tensor(teacher.std).view(1, 3, 1, 1)
    with torch.no_grad():
        _, toks = v((x - mean) / std)
    # the teacher runs the same blocks through its own code, which may batch and sum in another order (it gave
    # the same bits on every kernel tried): float32 rounding along the chain, per block of width W = 64 (head
    # width 32, 16 patches + class token) qkv, out and MLP-in (W each), scores (32), attention (17) and MLP-out
    # (4 W), for 2 blocks, then the projection (W)
    assert_close_fp32(tokens, toks @ v.proj, k=2 * (7 * 64 + 32 + 17) + 64, msg="teacher tokens")
    # resampled onto another student grid
    assert teacher(x, grid=(2, 2)).shape == (2, 4, clip_model.visual.output_dim)


# ----- metrics --------------------------------------------------------------------------------------
def test_miou_by_hand():
    """Two 2x3 images, 3 classes, one ignored pixel; IoUs worked out by hand over the whole set."""
    t1 = torch.tensor([[0, 0, 1], [1, 2, 255]])
    p1 = torch.tensor([[0, 1, 1], [1, 2, 2]])
    t2 = torch.tensor([[2, 2, 2], [0, 0, 0]])
    p2 = torch.tensor([[2, 2, 0], [0, 0, 0]])
    # class 0: I = 1 + 3 = 4; pred = 1 + 4 = 5; label = 2 + 3 = 5; U = 6 -> 4/6
    # class 1: I = 2; pred = 3; label = 2; U = 3 -> 2/3
    # class 2: I = 1 + 2 = 3; pred = 1 + 2 = 3 (ignored pixel not counted); label = 1 + 3 = 4; U = 4 -> 3/4
    expected = (4 / 6 + 2 / 3 + 3 / 4) / 3 * 100
    assert mean_iou([p1, p2], [t1, t2], num_classes=3) == pytest.approx(expected)
    # dataset-wide, not the mean of per-image mIoUs
    per_image = np.mean([mean_iou([p1], [t1], 3), mean_iou([p2], [t2], 3)])
    assert per_image != pytest.approx(expected)
    i, u, _, _ = intersect_and_union(p1, t1, 3)
    assert i.tolist() == [1, 2, 1] and u.tolist() == [2, 3, 1]


def test_miou_absent_class_is_skipped():
    m = MeanIoU(4)
    m.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    out = m.compute()
    assert out["miou"] == pytest.approx(100.0) and out["per_class_iou"][2] is None


def test_reduce_zero_label():
    lab = torch.tensor([0, 1, 150, 255], dtype=torch.uint8)
    assert reduce_zero_label(lab).tolist() == [255, 0, 149, 255]
    assert reduce_zero_label(np.array([0, 2], dtype=np.uint8)).tolist() == [255, 1]


# ----- segmentation model --------------------------------------------------------------------------
def test_upernet_on_beit_shapes_and_sliding_window():
    from vlpt_lib.models.segmentation import BeitUperNet, pyramid_block_indices, seg_loss, slide_inference

    assert pyramid_block_indices(12) == [3, 5, 7, 11]
    assert pyramid_block_indices(4) == [0, 1, 2, 3]
    backbone = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                 embed_dim=32, depth=4, num_heads=2, num_classes=0)
    model = BeitUperNet(backbone, num_classes=5, decoder_channels=16, aux_channels=8)
    x = torch.randn(2, 3, 32, 32)
    feats = model.pyramid(x)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    out = model(x)
    assert out["out"].shape == (2, 5, 32, 32) and out["aux"].shape == (2, 5, 32, 32)
    loss = seg_loss(out, torch.randint(0, 5, (2, 32, 32)))
    loss.backward()
    model.eval()
    logits = slide_inference(model, torch.randn(1, 3, 40, 56), 5, crop=32, stride=16)
    assert logits.shape == (1, 5, 40, 56)


def test_layer_decay_groups_are_beits_mmseg_constructor():
    """layer_decay_param_groups = BEiT's LayerDecayOptimizerConstructor (tests/references.py) with paramwise
    num_layers = the backbone's depth: 4 blocks -> num_layers 6, lr scales 0.65 ** 5 (embeddings) .. 1 (decoder,
    heads). What the segment job's optimizer holds on BEiT-base's 12 blocks: tests/test_fidelity_mvp.py."""
    from vlpt_lib.models.segmentation import BeitUperNet, layer_decay_param_groups

    backbone = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                 embed_dim=32, depth=4, num_heads=2, num_classes=0)
    model = BeitUperNet(backbone, num_classes=5, decoder_channels=16, aux_channels=8)
    groups = layer_decay_param_groups(model, 0.05, 0.65)
    n = sum(len(g["params"]) for g in groups)
    assert n == len([p for p in model.parameters() if p.requires_grad])
    assert min(g["lr_scale"] for g in groups) == pytest.approx(0.65 ** 5)
    names = {id(p): name for name, p in model.named_parameters()}
    got = {names[id(p)]: (g["weight_decay"], g["lr_scale"]) for g in groups for p in g["params"]}
    expected = mmseg_layer_decay_groups(model.named_parameters(), 0.05, paramwise_num_layers=4,
                                        layer_decay_rate=0.65)
    assert len(got) == n and got.keys() == expected.keys()
    for name, (wd, scale) in expected.items():
        assert got[name][0] == wd, name
        assert got[name][1] == pytest.approx(scale, rel=LR_SCALE_REL), name
