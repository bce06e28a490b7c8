"""KgCoOp (Yao et al., CVPR 2023): CoOp plus a knowledge-guided term that keeps each learned class text
feature close to the hand-crafted prompt's: loss = CE + w * (1 - mean_k cos(t_k, t_k^clip)), t the
normalised learned features, t^clip the normalised zero-shot features of the dataset's template.
(For unit vectors ||t - t^clip||^2 = 2 (1 - cos): the paper's lambda * mean L2^2 is this with w = 2 lambda.)
Official: htyao89/KgCoOp trainers/kgcoop.py (CustomCLIP.forward), configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml,
scripts/base2new_train.sh. Test time: CoOp's logits, no extra term."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ...utils.fields import Count, Index, NonNegative, Positive
from . import register
from .base import DasslRecipe, PromptRun
from .coop import CoOp

CFG = "KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml"
SCRIPT = "KgCoOp scripts/base2new_train.sh"


class Recipe(DasslRecipe):
    method: Literal["KgCoOp"] = Field("KgCoOp", description="KgCoOp trainers/kgcoop.py")
    n_ctx: Count = Field(4, description=f"{SCRIPT} NCTX=4 (with ctx_init: its word count)")
    ctx_init: str | None = Field("a photo of a", description=f"{CFG} CTX_INIT 'a photo of a'")
    epochs: Count = Field(100, description=f"{CFG} OPTIM.MAX_EPOCH 100")
    batch_size: Count = Field(128, description=f"{CFG} DATALOADER.TRAIN_X.BATCH_SIZE 128 (global); partial last "
                                               "batch dropped if a full one exists (Dassl build_data_loader)")
    lr: Positive = Field(0.002, description=f"{CFG} OPTIM.NAME sgd, LR 0.002, LR_SCHEDULER cosine (per epoch)")
    warmup_epochs: Index = Field(1, description=f"{CFG} OPTIM.WARMUP_EPOCH 1, WARMUP_TYPE constant")
    warmup_lr: NonNegative = Field(1e-5, description=f"{CFG} OPTIM.WARMUP_CONS_LR 1e-5")
    test_batch_size: Count = Field(100, description=f"{CFG} DATALOADER.TEST.BATCH_SIZE 100")
    augment: bool = Field(True, description=f"{CFG} INPUT.TRANSFORMS random_resized_crop, random_flip, normalize")
    kg_weight: NonNegative = Field(8.0, description=f"{SCRIPT} TRAINER.COOP.W 8.0 (the w of trainers/kgcoop.py)")


@register
class KgCoOp(CoOp):  # CoOp's context and logits; its own recipe and training loss
    name = "KgCoOp"
    Recipe = Recipe
    color = "tab:green"
    order = 3
    # trainers/kgcoop.py CUSTOM_TEMPLATES: CoOp's zero-shot templates except this one ("{} texture." in CoOp's)
    templates = {"DescribableTextures": "a photo of a {}, a type of texture."}
    # the paper's base-to-new findings (its 11-dataset average, htyao89/KgCoOp readme: 80.73 / 73.60 / 77.00,
    # against CoOp's 82.69 / 63.22 / 71.66 in CoCoOp's Table 1)
    claims = (("cocoop_base2new", "KgCoOp is better than CoOp on the new classes", "KgCoOp new", ">", "CoOp new"),
              ("cocoop_base2new", "KgCoOp has a higher H than CoOp", "KgCoOp H", ">", "CoOp H"))

    def __init__(self, *args, kg_weight: float = Recipe.model_fields["kg_weight"].default, **kwargs):
        super().__init__(*args, **kwargs)
        self.kg_weight = float(kg_weight)

    @classmethod
    def model_kwargs(cls, recipe: PromptRun) -> dict:
        return {**super().model_kwargs(recipe), "kg_weight": recipe.kg_weight}

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        text = self.shared_text_features()  # (K, D) normalised, with grad
        logits = (self.logit_scale() * self.encode_images(images) @ text.t()).float()
        clip_text = self.zeroshot_weights().to(text.dtype)  # the template's features (CLIP frozen: no grad)
        kg = 1.0 - F.cosine_similarity(text, clip_text, dim=1, eps=1e-7).mean()
        ce = F.cross_entropy(logits, labels)
        return {"loss": ce + self.kg_weight * kg, "ce": ce.detach(), "kg": kg.detach(),
                "train_acc": 100.0 * (logits.argmax(-1) == labels).float().mean()}
