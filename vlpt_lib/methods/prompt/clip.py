"""Zero-shot CLIP (Radford et al., 2021): each class scored by its hand-written prompt, nothing learned.
Official: CoOp trainers/zsclip.py (the per-dataset CUSTOM_TEMPLATES; vlpt_lib.data.coop holds them)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from . import register
from .base import PromptMethod, PromptRun


class Recipe(PromptRun):
    method: Literal["CLIP"] = Field("CLIP", description="CoOp trainers/zsclip.py (ZeroshotCLIP)")


@register
class ZeroShotCLIP(PromptMethod):
    name = "CLIP"
    Recipe = Recipe
    color = "tab:gray"
    trains = False
    order = 0

    def trainable_parameters(self) -> list:
        return []

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale() * image_features @ self.zeroshot_weights().t().to(image_features.dtype)
