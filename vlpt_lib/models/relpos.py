"""BEiT's resize of a relative position bias table to another window (e.g. 14x14 at 224 px -> 32x32 for
segmentation at 512 px), as BEiT's loaders do it (unilm beit/semantic_segmentation/mmcv_custom/checkpoint.py
load_checkpoint; beit/ and beit2/ run_class_finetuning.py do the same):

- The table holds (2 Wh - 1)(2 Ww - 1) relative offsets, row-major (relative y, then relative x), then extra
  rows (cls-to-token, token-to-cls, cls-to-cls in BEiT's layout). The extra rows are kept as they are.
- The source offsets are not placed at -W+1..W-1 but on a geometric grid: offsets 1, 1+q, 1+q+q^2, ... out from
  0, with q found by bisection in [1.01, 1.5] (stopping at a bracket of 1e-6; q is the last midpoint tried) so
  that the outermost source offset lands near the destination's outermost offset. Near offsets keep their
  spacing, far ones are stretched.
- Each head's table is interpolated by scipy's interp2d(kind='cubic') and read at the integer offsets of the
  destination. On a rectangular grid that is FITPACK's interpolating bicubic spline (regrid with s=0: knots at
  the data points except the second and the second-to-last, i.e. the not-a-knot spline along each axis), read by
  bispev, which clamps points outside the data to its edge. Offsets past the stretched source edge (q capped at
  1.5) therefore take the edge values.

scipy >= 1.14 has no interp2d, and scipy is no dependency of this project: the spline is written out here. The
tensor-product interpolant on a grid is the 1-D interpolant applied along each axis in turn, so the resize is
out = Ay @ Z @ Ax^T with Ay, Ax the 1-D not-a-knot spline's matrices from source values to destination values,
computed in float64 (as FITPACK does) and cast back to the table's dtype (as BEiT's torch.Tensor(...) does).
"""
from __future__ import annotations

import numpy as np
import torch


def beit_geometric_offsets(src: int, dst: int) -> np.ndarray:
    """The source table's offsets along one axis (src = 2 W_src - 1 of them) on BEiT's geometric grid for a
    destination side of dst = 2 W_dst - 1."""
    half = src // 2
    lo, hi = 1.01, 1.5
    q = lo
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        reach = (1.0 - q ** half) / (1.0 - q)   # 1 + q + ... + q^(half-1): the outermost offset for this q
        if reach > dst // 2:
            hi = q
        else:
            lo = q
    out, cur = [], 1.0
    for i in range(half):
        out.append(cur)
        cur += q ** (i + 1)
    out = np.asarray(out, dtype=np.float64)
    return np.concatenate([-out[::-1], [0.0], out])


def not_a_knot_matrix(nodes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(len(points), len(nodes)) float64 matrix A with A @ z = the not-a-knot cubic spline through (nodes, z) read
    at points (clamped to [nodes[0], nodes[-1]]). Needs at least 4 strictly increasing nodes.

    The spline is cubic Hermite on each interval with slopes s solving: C2 continuity at each interior node, and
    continuity of the third derivative at nodes[1] and nodes[-2] (so the first two and the last two intervals are
    one cubic each: not a knot)."""
    x = np.asarray(nodes, dtype=np.float64)
    n = len(x)
    if n < 4 or not np.all(np.diff(x) > 0):
        raise ValueError(f"need >= 4 increasing nodes, got {n}")
    h = np.diff(x)
    # slopes = S @ z: S = inv(L) @ R, with L s = R z the n conditions below. On [x_i, x_i+1], with
    # d_i = (z_i+1 - z_i) / h_i: second derivative at the left end (6 d_i - 4 s_i - 2 s_i+1) / h_i, at the right
    # end (4 s_i+1 + 2 s_i - 6 d_i) / h_i, third derivative 6 (s_i + s_i+1 - 2 d_i) / h_i^2.
    eye = np.eye(n)
    d = (eye[1:] - eye[:-1]) / h[:, None]             # d_i as rows acting on z
    L, R = np.zeros((n, n)), np.zeros((n, n))
    for i in range(1, n - 1):                          # second derivative continuous at x_i
        a, b = h[i - 1], h[i]
        L[i, i - 1], L[i, i], L[i, i + 1] = 1 / a, 2 / a + 2 / b, 1 / b
        R[i] = 3 * d[i - 1] / a + 3 * d[i] / b
    for row, (i, j) in ((0, (0, 1)), (n - 1, (n - 3, n - 2))):  # third derivative continuous at x_1, x_n-2
        a2, b2 = h[i] ** 2, h[j] ** 2
        L[row, i] += 1 / a2
        L[row, i + 1] += 1 / a2 - 1 / b2
        L[row, j + 1] -= 1 / b2
        R[row] = 2 * d[i] / a2 - 2 * d[j] / b2
    S = np.linalg.solve(L, R)

    t = np.clip(np.asarray(points, dtype=np.float64), x[0], x[-1])
    k = np.clip(np.searchsorted(x, t, side="right") - 1, 0, n - 2)
    u = (t - x[k]) / h[k]
    rows = np.arange(len(t))
    A = np.zeros((len(t), n))
    A[rows, k] += (1 + 2 * u) * (1 - u) ** 2
    A[rows, k + 1] += u ** 2 * (3 - 2 * u)
    A += ((u * (1 - u) ** 2 * h[k])[:, None] * S[k] + (u ** 2 * (u - 1) * h[k])[:, None] * S[k + 1])
    return A


def beit_resize_rel_pos_table(table: torch.Tensor, dst_window: tuple[int, int],
                              num_extra_tokens: int = 3) -> torch.Tensor:
    """A (num_pos, heads) relative position bias table of a square source window, resized to dst_window
    (Wh, Ww) by BEiT's rule (module docstring); the last num_extra_tokens rows are kept as they are. BEiT's
    loader takes square windows only; a rectangular destination here resizes each axis by the same rule."""
    dst = (2 * dst_window[0] - 1, 2 * dst_window[1] - 1)
    grid_rows = table.shape[0] - num_extra_tokens
    src = int(round(grid_rows ** 0.5))
    if src * src != grid_rows:
        raise ValueError(f"relative position table of {table.shape[0]} rows with {num_extra_tokens} extra: "
                         f"{grid_rows} is not the square of a window's 2W-1")
    if (src, src) == dst:
        return table
    heads = table.shape[1]
    z = table[:grid_rows].detach().cpu().double().numpy().T.reshape(heads, src, src)   # (head, rel y, rel x)
    ay = not_a_knot_matrix(beit_geometric_offsets(src, dst[0]), np.arange(-(dst[0] // 2), dst[0] // 2 + 1))
    ax = not_a_knot_matrix(beit_geometric_offsets(src, dst[1]), np.arange(-(dst[1] // 2), dst[1] // 2 + 1))
    out = np.einsum("yi,hij,xj->hyx", ay, z, ax).reshape(heads, -1).T
    out = torch.from_numpy(np.ascontiguousarray(out)).to(dtype=table.dtype, device=table.device)
    return torch.cat([out, table[grid_rows:]], dim=0)


def resize_rel_pos_tables(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with every `*relative_position_bias_table` whose shape differs from the model's resized by BEiT's
    rule to the window of the module that owns it in model (timm's Beit: blocks.i.attn or rel_pos_bias)."""
    own = model.state_dict()
    out = dict(state_dict)
    for key, table in state_dict.items():
        if not key.endswith("relative_position_bias_table") or key not in own or own[key].shape == table.shape:
            continue
        owner = model.get_submodule(key.rsplit(".", 1)[0])
        window = tuple(owner.window_size)
        extra = own[key].shape[0] - (2 * window[0] - 1) * (2 * window[1] - 1)
        out[key] = beit_resize_rel_pos_table(table, window, extra)
    return out
