"""Tolerances from float32 arithmetic, not from what one CPU happened to give.

Two float32 computations of the same value that differ only in summation order (another BLAS or oneDNN
kernel, another thread count, a batched path against a per-item one, DDP's all-reduce) differ by rounding
alone. A dot product of length n is off by at most about n·eps32 of the sum of its |terms| (Higham's
gamma_n), and such errors add up along the longest chain of dependent operations. So each comparison here
allows k·eps32·max|reference|, with k written out beside the test from the depth of its computation.

The scale is the largest |reference| of the whole tensor, not each element: an element near zero whose
neighbours are large carries their absolute rounding error, which an elementwise rtol would reject on a CPU
that sums in another order (issue #17: a CoOp gradient off by 6.7e-6 on values up to 2.6).

VLPT_NUMERICS_LOG=<file> appends each comparison's error in units of eps32·max|reference| (the "ulps of the
scale" a kernel needed), for the report of which kernels were tried and the worst error each gave.
"""
from __future__ import annotations

import json
import os

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2**-23
EPS64 = torch.finfo(torch.float64).eps  # 2**-52: a learning-rate schedule is float64 Python arithmetic
# A layer-decay lr scale rate**(L - i) for at most 16 layers: a power or a running product of <= 16 float64
# factors, each rounding once.
LR_SCALE_REL = 16 * EPS64


def _tensor(x) -> torch.Tensor:
    return x.detach().double() if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float64)


def assert_close_fp32(actual, expected, *, k: float, scale: float | None = None, msg: str = "") -> None:
    """max|actual - expected| <= k · eps32 · scale (shapes equal; NaN nowhere). scale: max|expected| unless
    given; give it where the exact answer is 0 (then the scale is that of the values it was computed from)."""
    actual, expected = _tensor(actual), _tensor(expected)
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    error = float((actual - expected).abs().max()) if expected.numel() else 0.0
    scale = float(scale)
    log = os.environ.get("VLPT_NUMERICS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "what": msg,
                                "error": error, "scale": scale, "k": k,
                                "ulps_of_scale": error / (EPS32 * scale) if scale else 0.0}) + "\n")
    assert not torch.isnan(actual).any(), f"{msg}: NaN"
    assert error <= k * EPS32 * scale, (f"{msg}: max|difference| {error:.3g} > {k} eps32 x max|reference| "
                                        f"{scale:.3g} = {k * EPS32 * scale:.3g}")
