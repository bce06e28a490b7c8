"""CoOp (Zhou et al., IJCV 2022): M context vectors shared by every class and image, learned with
cross-entropy on a frozen CLIP. Official: KaiyangZhou/CoOp trainers/coop.py."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from ...utils.fields import Count
from . import register
from .base import DasslRecipe, PromptMethod

CFG = "CoOp configs/trainers/CoOp/vit_b16_ctxv1.yaml"


class Recipe(DasslRecipe):
    # vit_b16_ctxv1 is the config the base2new scripts name ("CFG=vit_b16_ctxv1  # uncomment this when
    # TRAINER=CoOp"; CoOp issues #27, #70); ImageNet has its own 50-epoch config.
    method: Literal["CoOp"] = Field("CoOp", description="CoOp trainers/coop.py")
    n_ctx: Count = Field(4, description=f"{CFG} N_CTX 4 (with ctx_init: its word count)")
    epochs: Count = Field(200, description=f"{CFG} OPTIM.MAX_EPOCH 200; ImageNet 50 "
                                           "(CoOp configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml)")
    batch_size: Count = Field(32, description=f"{CFG} DATALOADER.TRAIN_X.BATCH_SIZE 32 (global); partial last "
                                              "batch dropped if a full one exists (Dassl build_data_loader)")

    @model_validator(mode="before")
    @classmethod
    def _imagenet_epochs(cls, data):
        """CoOp's ImageNet config (vit_b16_ep50_ctxv1.yaml: "... when TRAINER=CoOp and DATASET=imagenet")."""
        if isinstance(data, dict) and data.get("dataset") == "ImageNet" and "epochs" not in data:
            return {**data, "epochs": 50}
        return data


@register
class CoOp(PromptMethod):
    name = "CoOp"
    Recipe = Recipe
    color = "tab:blue"
    order = 1

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale() * image_features @ self.shared_text_features().t().to(image_features.dtype)
