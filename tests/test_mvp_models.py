"""MVP pieces: block masking invariants, student/export into timm, CLIP teacher targets, mIoU, UperNet and its
layer-decay groups."""
import math

import numpy as np
import pytest
import timm
import torch

from numerics import LR_SCALE_REL, assert_close_fp32
from references import mmseg_layer_decay_groups

from vlpt_lib.utils.metrics import MeanIoU, intersect_and_union, mean_iou, reduce_zero_label
from vlpt_lib.models.masking import BlockMaskGenerator
from vlpt_lib.models.mvp import (MVPStudent, PixelTarget, create_backbone, export_kwargs, export_timm_state_dict,
                                 masked_loss, patchify, save_exported, load_exported_meta)



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
    assert sorted(res.missing_keys) == ["head.bias", "head.weight"] and not res.unexpected_keys
    # the shared relative position bias was copied into every block
    shared = student.encoder.rel_pos_bias.relative_position_bias_table
    for blk in model.blocks:
        assert torch.equal(blk.attn.relative_position_bias_table, shared.detach())  # a copy
    # same features as the student's encoder on unmasked input (fc_norm = the pre-training norm)
    model.eval(), student.eval()
    with torch.no_grad():
        ours = student.forward_tokens(x).mean(1)
        theirs = model.forward_head(model.forward_features(
            (x - torch.tensor(student.mean).view(1, 3, 1, 1)) / torch.tensor(student.std).view(1, 3, 1, 1)),
            pre_logits=True)
    # LayerNorm of the mean vs mean of LayerNorms differ; only check the shapes and finiteness here
    assert ours.shape == theirs.shape and torch.isfinite(theirs).all()
    backbone, report = create_backbone(meta["model_name"], meta["kwargs"], path, num_classes=7)
    assert report["missing"] == ["head.weight", "head.bias"] or sorted(report["missing"]) == ["head.bias", "head.weight"]


def test_export_matches_timm_paper_layout():
    """The base student exports exactly the key set of timm's beit_base_patch16_224 (minus head)."""
    student = MVPStudent({"model_name": "beit_base_patch16_224", "kwargs": dict(img_size=32, depth=2)}, target_dim=8)
    sd = export_timm_state_dict(student)
    ref = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, depth=2).state_dict()
    ref_keys = {k for k in ref if "relative_position_index" not in k}
    assert set(sd) == ref_keys - {"head.weight", "head.bias"}
    assert all(sd[k].shape == ref[k].shape for k in sd)


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
