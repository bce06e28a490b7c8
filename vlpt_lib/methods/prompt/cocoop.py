"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus pi(x) from a Meta-Net on each image's feature, so
every image gets its own class prompts. Official: KaiyangZhou/CoOp trainers/cocoop.py. The per-image
prompts of a batch go through the text encoder in one exact pass (models.prompt.PromptCLIP.encode_prompts)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...utils.fields import Count
from . import register
from .base import DasslRecipe, PromptMethod

CFG = "CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"


class Recipe(DasslRecipe):
    method: Literal["CoCoOp"] = Field("CoCoOp", description="CoOp trainers/cocoop.py")
    n_ctx: Count = Field(4, description=f"{CFG} N_CTX 4 (with ctx_init: its word count)")
    epochs: Count = Field(10, description=f"{CFG} OPTIM.MAX_EPOCH 10")
    batch_size: Count = Field(1, description=f"{CFG} DATALOADER.TRAIN_X.BATCH_SIZE 1 (global); partial last "
                                             "batch dropped if a full one exists (Dassl build_data_loader)")


@register
class CoCoOp(PromptMethod):
    name = "CoCoOp"
    Recipe = Recipe
    color = "tab:orange"
    conditional = True
    order = 2

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        ctx = self.prompt_learner.context(image_features)  # (B, M, C): ctx + pi(x)
        text = self.encode_prompts(ctx)  # (B, K, D) normalised
        return self.logit_scale() * torch.einsum("bd,bkd->bk", image_features, text.to(image_features.dtype))
