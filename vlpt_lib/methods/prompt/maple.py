"""MaPLe (Khattak et al., CVPR 2023): multi-modal prompt learning. Language prompts in the first `prompt_depth`
blocks of the text tower; the vision prompts of the same blocks are not learned on their own but projected
from the language prompts, one linear coupling per block, so the two towers' prompts are learned together.

Official: muzairkhattak/multimodal-prompt-learning trainers/maple.py (MultiModalPromptLearner, CustomCLIP) and
clip/model.py (ResidualAttentionBlock_MaPLe, VisionTransformer_MaPLe); the deep prompts run through
vlpt_lib.models.deep_prompts. Learned (the parameter names are the official ones): ctx (n_ctx text tokens of the
first block, initialised from the first n_ctx words of ctx_init; the rest of ctx_init stays as words),
proj (text width -> vision width: the first block's vision prompts), compound_prompts_text (N(0, 0.02), one set
per deeper block) and compound_prompt_projections (their couplings, copies of one initial Linear as the
official `_get_clones`). Loss: cross-entropy. Test time: the same logits.
"""
from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ...models.deep_prompts import DeepPromptCLIP, normal_prompts
from ...models.prompt import PromptLearner
from ...utils.fields import Count, Index, NonNegative, Positive
from . import register
from .base import DasslRecipe, PromptMethod, PromptRun

REPO = "multimodal-prompt-learning"
CFG = f"{REPO} configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"
XD = "vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml (subsample all: scripts/maple/xd_train_maple.sh)"


class Recipe(DasslRecipe):
    method: Literal["MaPLe"] = Field("MaPLe", description=f"{REPO} trainers/maple.py")
    n_ctx: Count = Field(2, description=f"{CFG} TRAINER.MAPLE.N_CTX 2: the first 2 tokens of ctx_init are learned")
    ctx_init: str | None = Field("a photo of a", description=f"{CFG} TRAINER.MAPLE.CTX_INIT 'a photo of a'")
    prompt_depth: Count = Field(9, description=f"{CFG} TRAINER.MAPLE.PROMPT_DEPTH 9; {XD} 3. At most the "
                                               "towers' blocks (a deeper setting prompts every block)")
    epochs: Count = Field(5, description=f"{CFG} OPTIM.MAX_EPOCH 5; {XD} 2")
    batch_size: Count = Field(4, description=f"{CFG} DATALOADER.TRAIN_X.BATCH_SIZE 4 (global); partial last "
                                             "batch dropped if a full one exists (Dassl build_data_loader)")
    lr: Positive = Field(0.0035, description=f"{CFG} OPTIM.NAME sgd, LR 0.0035, LR_SCHEDULER cosine (per epoch); "
                                             f"{XD} 0.0026")
    warmup_epochs: Index = Field(1, description=f"{CFG} OPTIM.WARMUP_EPOCH 1, WARMUP_TYPE constant")
    warmup_lr: NonNegative = Field(1e-5, description=f"{CFG} OPTIM.WARMUP_CONS_LR 1e-5")
    test_batch_size: Count = Field(100, description=f"{CFG} DATALOADER.TEST.BATCH_SIZE 100")
    augment: bool = Field(True, description=f"{CFG} INPUT.TRANSFORMS random_resized_crop, random_flip, normalize")
    transfer_config: ClassVar[dict] = {"prompt_depth": 3, "epochs": 2, "lr": 0.0026}


class MaPLeLearner(PromptLearner):
    """ctx + the coupling of the first block (proj) + per deeper block: text prompts and their coupling."""

    def __init__(self, ctx_vectors: torch.Tensor, vis_dim: int, prompt_prefix: str, *, deep: int,
                 vision_width: int, generator: torch.Generator | None):
        super().__init__(ctx_vectors, vis_dim, conditional=False, prompt_prefix=prompt_prefix)
        self.proj = nn.Linear(self.ctx_dim, vision_width)
        self.compound_prompts_text = normal_prompts(deep, self.n_ctx, self.ctx_dim, generator)
        coupling = nn.Linear(self.ctx_dim, vision_width)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(coupling) for _ in range(deep)])


@register
class MaPLe(PromptMethod, DeepPromptCLIP):
    name = "MaPLe"
    Recipe = Recipe
    color = "tab:red"
    order = 4
    # the paper's base-to-new finding against CoCoOp (its Table 1, 11-dataset average H 78.55 against 75.83)
    claims = (("cocoop_base2new", "MaPLe has a higher H than CoCoOp", "MaPLe H", ">", "CoCoOp H"),)

    def __init__(self, clip_model, tokenizer, *args, prompt_depth: int = Recipe.model_fields["prompt_depth"].default,
                 **kwargs):
        self.prompt_depth = int(prompt_depth)
        super().__init__(clip_model, tokenizer, *args, **kwargs)

    @classmethod
    def model_kwargs(cls, recipe: PromptRun) -> dict:
        return {**super().model_kwargs(recipe), "prompt_depth": recipe.prompt_depth}

    def build_learner(self, ctx_vectors: torch.Tensor, vis_dim: int, prompt_prefix: str) -> MaPLeLearner:
        # PROMPT_DEPTH counts the first block; the official code builds depth - 1 deeper sets and uses those
        # its blocks reach (ResidualAttentionBlock_MaPLe's counter)
        deep = min(self.prompt_depth, self.text_blocks, self.vision_blocks) - 1
        return MaPLeLearner(ctx_vectors, vis_dim, prompt_prefix, deep=deep, vision_width=self.vision_width,
                            generator=self.deep_generator())

    def text_prompts(self):
        pl = self.prompt_learner
        return pl.ctx, list(pl.compound_prompts_text)

    def vision_prompts(self):
        pl = self.prompt_learner
        return pl.proj(pl.ctx), [layer(p) for layer, p in zip(pl.compound_prompt_projections,
                                                               pl.compound_prompts_text)]
