"""The ADE20K job against BEiT's mmseg recipe (issue #20): mmseg's PhotoMetricDistortion and mmcv's poly schedule
with its linear warm-up, each compared with the official rule written out in tests/references.py."""
import numpy as np
import pytest
import torch

from numerics import EPS64
from references import (mmcv_poly_warmup_lrs, mmseg_photo_metric_distortion, opencv_bgr2hsv_u8,
                        opencv_hsv2bgr_u8)
from vlpt_lib.jobs import segment
from vlpt_lib.training import optim


# ----- photometric distortion ---------------------------------------------------------------------------------
def _rgb_tensor(bgr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).contiguous()


def _bgr_array(rgb: torch.Tensor) -> np.ndarray:
    return rgb.permute(1, 2, 0).numpy()[..., ::-1]


def _image(h=12, w=40, seed=0) -> np.ndarray:
    """uint8 BGR with greys, saturated and dark pixels among random ones (the rule's special cases)."""
    img = np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)
    img[0, :8] = [[0, 0, 0], [255, 255, 255], [7, 7, 7], [0, 0, 255], [0, 255, 0], [255, 0, 0], [255, 0, 255],
                  [1, 0, 0]]
    return img


def test_hsv_conversions_are_opencvs_8bit_ones():
    g = np.random.RandomState(1)
    bgr = np.concatenate([g.randint(0, 256, (4096, 3)), np.repeat(np.arange(256)[:, None], 3, 1),  # + greys
                          g.randint(250, 256, (256, 3)), g.randint(0, 3, (256, 3))]).astype(np.uint8)[None]
    hsv = segment.rgb_to_hsv_u8(_rgb_tensor(bgr)).permute(1, 2, 0).numpy()  # H, S, V: no channel swap
    assert np.array_equal(hsv, opencv_bgr2hsv_u8(bgr))
    hsv = np.stack(np.meshgrid(np.arange(180), np.arange(256), [0, 1, 37, 128, 254, 255], indexing="ij"), -1)
    hsv = hsv.reshape(1, -1, 3).astype(np.uint8)  # every hue x every saturation at six values
    got = segment.hsv_to_rgb_u8(torch.from_numpy(hsv).permute(2, 0, 1).contiguous())
    assert np.array_equal(_bgr_array(got), opencv_hsv2bgr_u8(hsv))


class _Scripted:
    """numpy.random's randint / uniform answering from a fixed list (uniform(a, b) = a + (b - a) u), checking
    that each call asks for what the rule asks for at that point."""

    def __init__(self, script):
        self.script = list(script)

    def randint(self, low, high=None):
        kind, value = self.script.pop(0)
        assert kind == ("randint", low, high), (kind, low, high)
        return value

    def uniform(self, low, high):
        kind, u = self.script.pop(0)
        assert kind == ("uniform", low, high), (kind, low, high)
        return low + (high - low) * u


COIN = ("randint", 2, None)


def _script(mode, brightness=None, contrast=None, saturation=None, hue=None):
    """The draws in mmseg's order for one call; None: that step's coin comes up 0."""
    out = [(COIN, int(brightness is not None))] + ([(("uniform", -32, 32), brightness)] if brightness is not None
                                                   else [])
    contrast_draws = [(COIN, int(contrast is not None))] + ([(("uniform", 0.5, 1.5), contrast)]
                                                           if contrast is not None else [])
    out += [(COIN, mode)] + (contrast_draws if mode == 1 else [])
    out += [(COIN, int(saturation is not None))] + ([(("uniform", 0.5, 1.5), saturation)]
                                                    if saturation is not None else [])
    out += [(COIN, int(hue is not None))] + ([(("randint", -18, 18), hue)] if hue is not None else [])
    return out + (contrast_draws if mode == 0 else [])


@pytest.mark.parametrize("draws", [
    dict(mode=0, brightness=0.9, contrast=0.77, saturation=0.3, hue=-18),   # every step, contrast last
    dict(mode=1, brightness=0.05, contrast=0.999, saturation=0.999, hue=17),  # contrast first, strongest ones
    dict(mode=1, brightness=0.5, contrast=0.0, saturation=0.0, hue=0),      # x0.5 saturation, zero hue shift
    dict(mode=0, saturation=0.6), dict(mode=1, hue=5), dict(mode=0)])
def test_photometric_distortion_equals_mmsegs_for_the_same_draws(draws):
    img = _image()
    expected = mmseg_photo_metric_distortion(img.copy(), _Scripted(_script(**draws)))
    rng = _Scripted(_script(**draws))
    got = segment.PhotoMetricDistortion()(_rgb_tensor(img), rng)
    assert not rng.script  # every draw used, none asked for beyond the rule's
    assert got.dtype == torch.uint8 and np.array_equal(_bgr_array(got), expected)


def test_photometric_distortion_equals_mmsegs_under_numpy_random():
    """The same numpy stream on both sides: mmseg's order of draws, every branch over the seeds."""
    img = _image(8, 32, seed=3)
    for seed in range(24):
        a, b = np.random.RandomState(seed), np.random.RandomState(seed)
        expected = mmseg_photo_metric_distortion(img.copy(), a)
        got = segment.PhotoMetricDistortion()(_rgb_tensor(img), b)
        assert np.array_equal(_bgr_array(got), expected), seed
        assert a.randint(2 ** 30) == b.randint(2 ** 30)  # as many draws taken


def test_photometric_draws_come_from_torch_and_span_mmsegs_ranges():
    torch.manual_seed(0)
    draws = segment._TorchDraws
    hues = {draws.randint(-18, 18) for _ in range(2000)}
    assert hues == set(range(-18, 18))  # numpy's randint excludes the high end: -36..34 degrees
    assert {draws.randint(2) for _ in range(64)} == {0, 1}
    u = [draws.uniform(-32, 32) for _ in range(2000)]
    assert -32 <= min(u) < -31 and 31 < max(u) < 32
    img = _rgb_tensor(_image())
    torch.manual_seed(5)
    first = segment.PhotoMetricDistortion()(img)
    torch.manual_seed(5)
    assert torch.equal(segment.PhotoMetricDistortion()(img), first)  # the job's seeded generator decides
    assert isinstance(segment.SegTrain(32).photo, segment.PhotoMetricDistortion)
    assert segment.SegTrain(32, photometric=False).photo is None


# ----- mmcv's poly schedule with linear warm-up ---------------------------------------------------------------
def _groups(scales):
    return [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": s} for s in scales]


def test_segment_schedule_is_mmcvs_poly_with_linear_warmup():
    o = segment.Config().optim
    assert (o.schedule, o.warmup_iters, o.warmup_ratio, o.power, o.min_lr, o.iters) == (
        "mmcv_poly", 1500, 1e-6, 1.0, 0.0, 160_000)
    lr, scales = 7e-4, [1.0, 0.65, 0.65 ** 13]  # decoder, block 11, embeddings (LayerDecayOptimizerConstructor)
    opt = torch.optim.AdamW(_groups(scales), lr=lr)
    sched = optim.create_scheduler(opt, o.schedule, steps_per_epoch=1000, total_steps=o.iters,
                                   warmup_steps=o.warmup_iters, warmup_ratio=o.warmup_ratio, min_lr=o.min_lr,
                                   power=o.power, lr=lr)
    for i in (0, 1, 749, 1499, 1500, 80_000, 159_999):
        sched.step_update(i)
        expected = mmcv_poly_warmup_lrs([s * lr for s in scales], i, 160_000, power=1.0, min_lr=0.0,
                                        warmup_iters=1500, warmup_ratio=1e-6)
        for group, want in zip(opt.param_groups, expected):
            assert group["lr"] == pytest.approx(want, rel=4 * EPS64, abs=0), i  # the same float64 formula
    sched.step_update(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(7e-10, rel=1e-12)  # warmup_ratio x lr at iteration 0
    sched.step_update(1499)  # the warm-up multiplies the decayed poly value, not the base lr
    assert opt.param_groups[0]["lr"] == pytest.approx(lr * (1 - 1499 / 160_000) * (1 - (1 / 1500) * (1 - 1e-6)))


def test_mmcv_poly_every_step_with_min_lr_and_power():
    lr, scales, total, warm = 1e-3, [1.0, 0.5], 23, 6
    kw = dict(power=0.9, min_lr=1e-5, warmup_iters=warm, warmup_ratio=0.1)
    opt = torch.optim.SGD(_groups(scales), lr=lr)
    sched = optim.create_scheduler(opt, "mmcv_poly", steps_per_epoch=5, total_steps=total, warmup_steps=warm,
                                   warmup_ratio=0.1, min_lr=1e-5, power=0.9, lr=lr)
    for i in range(total):
        sched.step_update(i)
        expected = mmcv_poly_warmup_lrs([s * lr for s in scales], i, total, **kw)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(expected, rel=4 * EPS64, abs=0), i
