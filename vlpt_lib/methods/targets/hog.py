"""MaskFeat's target: histograms of oriented gradients (Wei et al., CVPR 2022).

The official rule is facebookresearch/SlowFast `slowfast/models/operators.py` class `HOGLayerC` as
`slowfast/models/masked.py` builds it for images (`HOGLayerC(nbins=9, pool=8)`, no Gaussian window) and
`MaskMViT._get_hog_label_2d` arranges it; this module computes the same rule (own code):

1. the input is the normalised image the network sees (configs/masked_ssl/in1k_VIT_B_MaskFeat_PT.yaml:
   ImageNet mean/std), each RGB channel on its own;
2. gradients by the 3x3 Sobel pair gx = [[1, 0, -1], [2, 0, -2], [1, 0, -1]] (cross-correlation, as conv2d),
   gy = its transpose, on the image padded by 1 pixel with reflection (the same depthwise conv2d call, so
   a pixel whose gradient lies on a bin edge up to rounding tips the same way on the same backend; see
   `HOGTarget.sobel_gradients`);
3. per pixel, magnitude sqrt(gx^2 + gy^2) votes into bin floor(atan2(gx, gy) / pi * 9) mod 9: 9 unsigned
   orientation bins of 20 degrees (note the official argument order atan2(gx, gy));
4. votes summed over 8x8-pixel cells (no Gaussian weighting, no interpolation between bins or cells);
5. each (channel, cell) histogram L2-normalised over its 9 bins (F.normalize: x / max(|x|, 1e-12));
6. the target of a patch: its (patch/8)^2 cells, flattened in the order (channel, bin, cell row, cell col),
   3 * 9 * (patch/8)^2 values (108 for 16-pixel patches, 27 for the mini student's 8-pixel patches);
7. loss: MSE (SlowFast losses.py MultipleMSELoss = nn.MSELoss mean) over the masked patches' values.

Because the Sobel filters sum to zero and the histograms are L2-normalised per channel, the per-channel
mean/std normalisation cancels up to rounding (the votes of a channel all scale by 1/std); it is applied
anyway, as the official pipeline does.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.mvp import normalize
from . import register

NBINS = 9
CELL = 8


class HOGTarget(nn.Module):
    """Images in [0, 1] (B, 3, H, W) -> MaskFeat HOG per patch (B, N, 3 * nbins * (patch / cell)^2)."""

    def __init__(self, patch: int, mean, std, nbins: int = NBINS, cell: int = CELL):
        super().__init__()
        if patch % cell:
            raise ValueError(f"HOG target: the patch size ({patch}) must be a multiple of the cell size ({cell})")
        self.patch, self.mean, self.std, self.nbins, self.cell = patch, tuple(mean), tuple(std), nbins, cell
        sobel_x = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("sobel", torch.stack([sobel_x, sobel_x.t()]).unsqueeze(1), persistent=False)
        self.out_dim = 3 * nbins * (patch // cell) ** 2

    def sobel_gradients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gx, gy), each (B, C, H, W): the Sobel pair as one depthwise 3x3 cross-correlation per channel
        (conv2d, groups = C) on the reflect-padded image, the same call as HOGLayerC, so that the same backend
        rounds the same way. Where the exact gradient lies on a bin edge up to rounding (gx ~ 0 beside gy != 0,
        e.g. on flat-colour images whose normalised values tie only up to float32 rounding), the bin of the vote
        (0 or 8) is decided by that rounding, in the official code as here; gx exactly 0 (equal neighbours, and
        the left and right borders under reflection) votes into bin 0."""
        c, padded = x.shape[1], F.pad(x, (1, 1, 1, 1), mode="reflect")
        kernels = self.sobel.to(x.dtype)                                     # (2, 1, 3, 3): x, y
        gx = F.conv2d(padded, kernels[0:1].repeat(c, 1, 1, 1), groups=c)
        gy = F.conv2d(padded, kernels[1:2].repeat(c, 1, 1, 1), groups=c)
        return gx, gy

    def cell_histograms(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image (B, C, H, W) -> L2-normalised cell histograms (B, C, nbins, H / cell, W / cell)."""
        b, c, h, w = x.shape
        gx, gy = self.sobel_gradients(x)
        magnitude = torch.stack([gx, gy], dim=-1).norm(dim=-1)
        bins = torch.floor(torch.atan2(gx, gy) / math.pi * self.nbins).long() % self.nbins
        votes = F.one_hot(bins, self.nbins).to(x.dtype) * magnitude.unsqueeze(-1)  # (B, C, H, W, nbins)
        hc, wc = h // self.cell, w // self.cell
        votes = votes[:, :, :hc * self.cell, :wc * self.cell]  # (B, C, H, W, nbins): whole cells only
        hist = votes.reshape(b, c, hc, self.cell, wc, self.cell, self.nbins).sum(dim=(3, 5))  # (B, C, hc, wc, nb)
        return F.normalize(hist, p=2, dim=-1).permute(0, 1, 4, 2, 3)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid=None) -> torch.Tensor:
        hist = self.cell_histograms(normalize(images.float(), self.mean, self.std))
        b, c, nb, hc, wc = hist.shape
        u = self.patch // self.cell                                          # cells per patch side
        hist = hist.reshape(b, c * nb, hc // u, u, wc // u, u)
        return hist.permute(0, 2, 4, 1, 3, 5).reshape(b, (hc // u) * (wc // u), c * nb * u * u)


QUESTION = "(MVP's question asked of a target its paper did not test)"


@register("hog", label="HOG", color="tab:green", loss="mse", rank=20, claims=(
    ("imagenet_finetune", f"MVP fine-tunes better than the same pre-training with MaskFeat's HOG target {QUESTION}",
     "MVP", ">", "HOG"),
    ("ade20k_segmentation", f"MVP segments better than the same pre-training with MaskFeat's HOG target {QUESTION}",
     "MVP", ">", "HOG")))
def build(patch, mean, std, clip_model=None, precision="auto"):
    """MaskFeat HOG: 9 unsigned orientation bins, 8x8-pixel cells, per RGB channel, L2 per cell; MSE."""
    return HOGTarget(patch, mean, std)
