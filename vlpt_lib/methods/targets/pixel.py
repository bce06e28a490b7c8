"""The unimodal baseline: per-patch normalised pixels, exactly MAE's norm_pix_loss target.

facebookresearch/mae models_mae.py `MaskedAutoencoderViT.forward_loss` with norm_pix_loss=True: the
ImageNet-normalised input image (main_pretrain.py transforms.Normalize) patchified as 'nchpwq->nhwpqc'
(p*p*3 values per patch, channel fastest), each patch shifted by its mean and divided by sqrt(var + 1e-6)
with torch's unbiased var; MSE averaged over the patch's values, then over the masked patches.
The module is `vlpt_lib.models.mvp.PixelTarget` (student mean/std = ImageNet's, as MAE's loader).
"""
from __future__ import annotations

from ...models.mvp import PixelTarget
from . import register


@register("pixel", label="Normalised pixels", color="tab:blue", loss="mse", rank=10)
def build(patch, mean, std, clip_model=None, precision="auto"):
    """Per-patch normalised pixels of the student's normalised input (MAE norm_pix), MSE."""
    return PixelTarget(patch, mean, std)
