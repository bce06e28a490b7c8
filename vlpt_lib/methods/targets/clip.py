"""MVP's target: the frozen CLIP image tower's patch tokens (after ln_post, projected by visual.proj).

[A] beit2's VQ-KD teacher and EVA-01 regress the same CLIP patch features; the loss is 1 - cosine on masked
positions (EVA-01 writes it as negative cosine). The module is `vlpt_lib.models.mvp.ClipTeacher`.
"""
from __future__ import annotations

from ...models.mvp import ClipTeacher
from . import register


@register("clip", label="MVP", color="tab:orange", loss="cosine", needs_clip=True, rank=0)
def build(patch, mean, std, clip_model=None, precision="auto"):
    """MVP: CLIP ViT patch tokens after ln_post x visual proj (the teacher's own normalisation)."""
    if clip_model is None:
        raise ValueError("MIM target 'clip' needs a CLIP model (the teacher)")
    return ClipTeacher(clip_model, precision=precision)
