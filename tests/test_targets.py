"""MIM targets as plug-ins (vlpt_lib.methods.targets): the registry, each built-in target against its official
rule written out here independently, and a toy target loaded from a file that pre-trains with no other change.

Official rules (fetched snapshots):
- pixel: facebookresearch/mae models_mae.py, MaskedAutoencoderViT.patchify + forward_loss (norm_pix_loss=True);
- hog: facebookresearch/SlowFast slowfast/models/operators.py HOGLayerC(nbins=9, pool=8) as masked.py builds it,
  arranged per patch by MaskMViT._get_hog_label_2d; loss slowfast/models/losses.py MultipleMSELoss (nn.MSELoss).
"""
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from numerics import EPS32, assert_close_fp32
from vlpt_lib.jobs import pretrain
from vlpt_lib.methods import plugins, targets
from vlpt_lib.models.mvp import IMAGENET_MEAN, IMAGENET_STD

MEAN64, STD64 = np.array(IMAGENET_MEAN).reshape(3, 1, 1), np.array(IMAGENET_STD).reshape(3, 1, 1)


# ----- the registry ------------------------------------------------------------------------------------
def test_builtin_targets_are_found_in_the_package():
    assert targets.names()[:3] == ("clip", "pixel", "hog")


def test_table_rows_and_colours_come_from_the_registry():
    assert targets.table_methods(["clip", "pixel", "hog"]) == ("MVP", "Normalised pixels", "HOG", "Scratch")
    assert targets.method_targets()["HOG"] == "hog" and targets.method_targets()["Scratch"] is None
    assert {k: targets.colors()[k] for k in ("MVP", "Normalised pixels", "Scratch")} == {
        "MVP": "tab:orange", "Normalised pixels": "tab:blue", "Scratch": "tab:gray"}


def test_only_clip_needs_the_teacher():
    assert {t.name: t.needs_clip for t in targets.all_targets()}["clip"] is True
    assert not targets.get("pixel").needs_clip and not targets.get("hog").needs_clip
    with pytest.raises(ValueError, match="needs a CLIP model"):
        targets.get("clip").build(8, IMAGENET_MEAN, IMAGENET_STD, None, "auto")


def test_each_target_keeps_its_loss():
    assert (targets.get("clip").loss, targets.get("pixel").loss, targets.get("hog").loss) == ("cosine", "mse", "mse")


def test_an_unknown_target_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match="unknown MIM target 'nope'; registered: clip, pixel, hog"):
        pretrain.Config(target="nope")


def test_a_second_target_under_a_taken_name_or_label_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        targets.register("hog", label="Another HOG")(lambda *a: None)
    with pytest.raises(ValueError, match="label 'HOG' is taken"):
        targets.register("hog2", label="HOG")(lambda *a: None)
    assert "hog2" not in targets.names()


def test_what_the_run_cache_reads_depends_on_the_target(tmp_path):
    weights = tmp_path / "clip.pt"
    cfg = pretrain.Config(data={"kind": "synthetic"}, clip={"pretrained": str(weights)}).model_dump()
    assert pretrain.data_paths({**cfg, "target": "clip"}) == [str(weights)]
    assert pretrain.data_paths({**cfg, "target": "hog"}) == []


# ----- pixel = MAE norm_pix --------------------------------------------------------------------------------
def mae_norm_pix_reference(images: np.ndarray, p: int) -> np.ndarray:
    """models_mae.py: imgs normalised by the loader (ImageNet mean/std), patchify 'nchpwq->nhwpqc', then per
    patch (x - mean) / (var + 1e-6) ** .5 with torch's unbiased var; written as loops in float64."""
    x = (images.astype(np.float64) - MEAN64) / STD64
    n, _, h, w = x.shape
    out = np.zeros((n, (h // p) * (w // p), p * p * 3))
    for b in range(n):
        for i in range(h // p):
            for j in range(w // p):
                vals = [x[b, c, i * p + r, j * p + q] for r in range(p) for q in range(p) for c in range(3)]
                mean = sum(vals) / len(vals)
                var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
                out[b, i * (w // p) + j] = [(v - mean) / math.sqrt(var + 1e-6) for v in vals]
    return out


def test_pixel_target_is_mae_norm_pix():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    ours = targets.get("pixel").build(8, IMAGENET_MEAN, IMAGENET_STD)(x)
    # The patch mean and variance are float32 sums of D = 192 terms (about D eps each, tests/numerics.py), and
    # the patch std (~1.2 in normalised units) is about max|value|: the normalised values are off by ~2 D eps.
    assert_close_fp32(ours, mae_norm_pix_reference(x.numpy(), 8), k=2 * 192, msg="pixel vs MAE norm_pix")


def test_pixel_loss_is_mae_forward_loss():
    torch.manual_seed(1)
    pred, tgt = torch.randn(2, 4, 192), torch.randn(2, 4, 192)
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    # forward_loss: per-patch mean over the D values, then sum over masked patches / their count
    per_patch = [[sum((float(a) - float(b)) ** 2 for a, b in zip(pred[n, l], tgt[n, l])) / 192 for l in range(4)]
                 for n in range(2)]
    expected = sum(per_patch[n][l] for n in range(2) for l in range(4) if mask[n, l]) / int(mask.sum())
    # a float32 mean over M * D = 768 squared differences: about 768 eps of the result
    assert_close_fp32(targets.get("pixel").masked_loss(pred[mask], tgt[mask]), expected, k=768, msg="MAE loss")


# ----- hog = MaskFeat HOG ----------------------------------------------------------------------------------
SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def maskfeat_hog_reference(images: np.ndarray, patch: int, nbins: int = 9, cell: int = 8):
    """HOGLayerC.forward + _get_hog_label_2d, as loops in float64: per RGB channel of the normalised image,
    reflect pad 1, Sobel gx (SOBEL_X) / gy (its transpose) as cross-correlation, magnitude votes into bin
    floor(atan2(gx, gy) / pi * nbins) mod nbins, summed over cell x cell pixels, each (channel, cell) histogram
    divided by max(L2 norm, 1e-12); a patch's vector in the order (channel, bin, cell row, cell col).
    Also returns, per pixel, how far its phase lies from a bin edge (in bins) and its magnitude."""
    x = (images.astype(np.float64) - MEAN64) / STD64
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    gx, gy = np.zeros_like(x), np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            window = xp[:, :, dy:dy + h, dx:dx + w]
            gx += SOBEL_X[dy, dx] * window
            gy += SOBEL_X.T[dy, dx] * window
    magnitude = np.sqrt(gx ** 2 + gy ** 2)
    phase = np.arctan2(gx, gy) / math.pi * nbins
    bins = np.floor(phase).astype(int) % nbins
    # how far the phase lies from a bin edge, in bins; exactly 0 gx (equal neighbours: the left and right
    # borders under reflection) lies on the edge atan2(0, gy) in {0, pi} exactly: bin 0, in float32 too
    edge = np.where(gx == 0, 0.5, np.minimum(phase - np.floor(phase), np.ceil(phase) - phase))
    hc, wc = h // cell, w // cell
    hist = np.zeros((n, c, nbins, hc, wc))
    for b in range(n):
        for ch in range(c):
            for y in range(hc * cell):
                for xx in range(wc * cell):
                    hist[b, ch, bins[b, ch, y, xx], y // cell, xx // cell] += magnitude[b, ch, y, xx]
    hist = hist / np.maximum(np.sqrt((hist ** 2).sum(axis=2, keepdims=True)), 1e-12)
    u = patch // cell
    out = np.zeros((n, (hc // u) * (wc // u), c * nbins * u * u))
    for b in range(n):
        for i in range(hc // u):
            for j in range(wc // u):
                out[b, i * (wc // u) + j] = [hist[b, ch, k, i * u + r, j * u + q]
                                             for ch in range(c) for k in range(nbins)
                                             for r in range(u) for q in range(u)]
    return out, edge, magnitude


@pytest.mark.parametrize("patch", [8, 16])  # one 8x8 cell per patch (the mini student), 2x2 cells (ViT-B/16)
def test_hog_target_is_maskfeat_hog(patch):
    torch.manual_seed(1)  # seed 0 has one pixel 7e-6 bins from an edge (the precondition below)
    x = torch.rand(2, 3, 32, 32)
    expected, edge, magnitude = maskfeat_hog_reference(x.numpy(), patch)
    # Precondition: float32 gradients are off by up to ~16 eps32 * max|image| (8 unit taps, rounding of the
    # normalisation), which turns the phase by at most that / |g| radians. No pixel of this image that votes
    # more than rounding noise lies that close to a bin edge, so every vote lands in the same bin in float32 and
    # float64 (a pixel on an edge up to rounding has no well-defined bin, officially either).
    noise = 64 * EPS32 * float(np.abs((x.numpy() - MEAN64) / STD64).max())
    assert ((edge * magnitude > noise * 9 / math.pi) | (magnitude < noise)).all(), "pick another seed"
    ours = targets.get("hog").build(patch, IMAGENET_MEAN, IMAGENET_STD)(x)
    assert ours.shape == (2, (32 // patch) ** 2, 3 * 9 * (patch // 8) ** 2)
    # Each normalised bin is a float32 sum of 64 magnitudes of a cell (~64 eps of the cell's total, which the L2
    # norm bounds), each magnitude ~16 eps (Sobel taps, square root), the norm over 9 bins ~9 eps: 96 covers it.
    assert_close_fp32(ours, expected, k=96, msg=f"hog vs MaskFeat HOGLayerC, patch {patch}")


def test_hog_loss_is_maskfeat_mse():
    torch.manual_seed(2)
    pred, tgt = torch.randn(5, 27), torch.randn(5, 27)
    expected = sum((float(a) - float(b)) ** 2 for a, b in zip(pred.flatten(), tgt.flatten())) / pred.numel()
    # nn.MSELoss(reduction="mean") over 135 values: about 135 eps of the result
    assert_close_fp32(targets.get("hog").masked_loss(pred, tgt), expected, k=135, msg="MaskFeat MSE")


def test_hog_needs_whole_cells_per_patch():
    with pytest.raises(ValueError, match="multiple of the cell size"):
        targets.get("hog").build(12, IMAGENET_MEAN, IMAGENET_STD)


# ----- a user's target: one file, found through $VLPT_PLUGINS ----------------------------------------------
TOY = '''
"""A toy MIM target: each patch's mean colour."""
import torch
import torch.nn as nn

from vlpt_lib.methods.targets import register


class MeanColour(nn.Module):
    def __init__(self, patch):
        super().__init__()
        self.patch, self.out_dim = patch, 3

    @torch.no_grad()
    def forward(self, images, grid=None):
        b, c, h, w = images.shape
        p = self.patch
        return images.reshape(b, c, h // p, p, w // p, p).mean(dim=(3, 5)).flatten(2).transpose(1, 2)


@register("toy_colour", label="Toy colour", color="tab:pink", loss="mse")
def build(patch, mean, std, clip_model=None, precision="auto"):
    return MeanColour(patch)
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    path = tmp_path / "toy_target.py"
    path.write_text(textwrap.dedent(TOY))
    monkeypatch.setenv(plugins.ENV_VAR, str(path))
    yield path
    targets.unregister("toy_colour")


def test_a_plugin_file_pretrains_without_touching_any_other_file(toy_plugin, tmp_path):
    from vlpt_lib.jobs.launch import data_paths, run_job
    from vlpt_lib.workbook import mvp

    cfg = dict(seed=0, threads=1, target="toy_colour", student=dict(arch="smoke"), data=dict(kind="synthetic", n=8),
               mask=dict(ratio=0.4, min_block_fraction=0.15),
               optim=dict(epochs=1, batch_size=4, lr=1e-3, lr_ref_batch=None, warmup_epochs=0))
    result = run_job("pretrain", pretrain.Config.model_validate(cfg).model_dump(), tmp_path / "runs")
    assert result["target"] == "toy_colour" and result["loss_kind"] == "mse" and result["steps"] == 2
    assert math.isfinite(result["final_loss"]) and os.path.exists(result["export"])
    assert str(toy_plugin.resolve()) in data_paths("pretrain", pretrain.Config(**cfg).model_dump())  # edits re-run it
    assert mvp.table_methods(["clip", "toy_colour"]) == ("MVP", "Toy colour", "Scratch")
    assert mvp.colors()["Toy colour"] == "tab:pink" and mvp.targets_of(["Toy colour", "Scratch"]) == ["toy_colour"]


def test_a_plugin_is_found_in_a_child_process(toy_plugin):
    # torchrun ranks and papermill kernels inherit $VLPT_PLUGINS
    out = subprocess.run([sys.executable, "-c", "from vlpt_lib.methods import targets; print(targets.names())"],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    assert "toy_colour" in out.stdout


def test_the_exports_are_found_from_notebook_10s_run_folders(results_root):
    """Notebooks 11/12 find each target's student in the folder of notebook 10's run of it (no index file):
    only the targets asked for, each where run_dir_for puts that run."""
    from vlpt_lib.jobs import launch, pretrain
    from vlpt_lib.workbook import mvp, paths

    exports = mvp.pretrained_exports("smoke", ["clip", "hog"])
    assert sorted(exports) == ["clip", "hog"]
    cfgs = mvp._params_pretrain_cfgs("smoke", ["hog"])[1]
    assert exports["hog"]["export"] == str(launch.run_dir_for("pretrain", cfgs["hog"], paths.runs_dir("smoke"))
                                           / pretrain.EXPORT_NAME)


def test_the_exports_follow_the_parameters_notebook_10_last_ran_with(results_root):
    """A dry run (or any runner override) gives notebook 10 parameters its params file lacks: notebooks 11/12 find
    the students of that run, from notebook 10's record in the same results folder."""
    import json

    from vlpt_lib.jobs import launch, pretrain
    from vlpt_lib.workbook import mvp, paths

    before = mvp.pretrained_exports("smoke", ["hog"])["hog"]["export"]
    record = paths.executed_dir("smoke") / "10_mvp_pretrain.run.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"status": "ok", "params": {"data_root": "/synthetic/world", "targets": ["hog"]}}))
    cfg = mvp.pretrain_cfgs("smoke", mvp.params.effective("10_mvp_pretrain", "smoke")["pretrain"], ["hog"],
                            data_root="/synthetic/world", threads=mvp.params.effective("10_mvp_pretrain", "smoke").get("threads"))["hog"]
    after = mvp.pretrained_exports("smoke", ["hog"])["hog"]["export"]
    assert after != before and cfg["data"]["root"] == "/synthetic/world"
    assert after == str(launch.run_dir_for("pretrain", cfg, paths.runs_dir("smoke")) / pretrain.EXPORT_NAME)
