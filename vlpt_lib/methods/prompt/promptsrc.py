"""PromptSRC (Khattak et al., ICCV 2023): prompting with self-regulating constraints. Independent deep prompts in
both towers (text: n_ctx tokens in the first `prompt_depth_text` blocks; image: n_ctx_vision tokens in the first
`prompt_depth_vision` blocks), trained with cross-entropy plus three terms that keep the prompted model close to
the frozen CLIP (mutual agreement), and averaged over epochs with Gaussian weights (GPA).

Official: muzairkhattak/PromptSRC trainers/promptsrc.py (VLPromptLearner, CustomCLIP.forward,
PromptSRC.forward_backward) on clip/model.py's IVLP blocks (ResidualAttentionBlock_IVLP, VisionTransformer with
VPT); the deep prompts run through vlpt_lib.models.deep_prompts. Per batch, with t the normalised prompted text
features (K, D), f the normalised prompted image features, f0 those of the frozen CLIP, t0 the normalised mean of
the frozen CLIP's raw text features over the 60 templates below (textual diversity), s the logit scale:

    loss = CE(s f t^T, y) + 25 * L1(t, t0) + 10 * L1(f, f0) + KL(softmax(s f0 t0^T) || softmax(s f t^T)) / (B K)

(L1: mean absolute difference; the KL summed over the batch). GPA: after epoch e (1..E) the learned values are
added with weight g(e) / sum_j g(j), g the N(gpa_mean, gpa_std) density; after the last epoch the sum replaces
them (the official code averages the whole state dict: the frozen weights' sum is themselves). Test time: the
prompted logits alone.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ...models.deep_prompts import DeepPromptCLIP, normal_prompts
from ...models.prompt import PromptLearner
from ...models.zeroshot import zeroshot_classifier
from ...utils.fields import Count, Index, NonNegative, Positive
from . import register
from .base import DasslRecipe, PromptMethod, PromptRun

CFG = "PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"
XD = "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml (subsample all: scripts/promptsrc/reproduce_xd.sh)"

# PromptSRC trainers/imagenet_templates.py IMAGENET_TEMPLATES (60 of CLIP's ImageNet prompts): the textual
# diversity of the frozen text features t0.
TEMPLATES = (
    'a photo of a {}.', 'a bad photo of a {}.', 'a photo of many {}.', 'a sculpture of a {}.',
    'a photo of the hard to see {}.', 'a low resolution photo of the {}.', 'a rendering of a {}.',
    'graffiti of a {}.', 'a bad photo of the {}.', 'a cropped photo of the {}.', 'a tattoo of a {}.',
    'the embroidered {}.', 'a photo of a hard to see {}.', 'a bright photo of a {}.', 'a photo of a clean {}.',
    'a photo of a dirty {}.', 'a dark photo of the {}.', 'a drawing of a {}.', 'a photo of my {}.',
    'the plastic {}.', 'a photo of the cool {}.', 'a close-up photo of a {}.', 'a black and white photo of the {}.',
    'a painting of the {}.', 'a painting of a {}.', 'a pixelated photo of the {}.', 'a sculpture of the {}.',
    'a bright photo of the {}.', 'a cropped photo of a {}.', 'a plastic {}.', 'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.', 'a blurry photo of the {}.', 'a photo of the {}.', 'a good photo of the {}.',
    'a rendering of the {}.', 'a {} in a video game.', 'a photo of one {}.', 'a doodle of a {}.',
    'a close-up photo of the {}.', 'the origami {}.', 'the {} in a video game.', 'a sketch of a {}.',
    'a doodle of the {}.', 'a origami {}.', 'a low resolution photo of a {}.', 'the toy {}.',
    'a rendition of the {}.', 'a photo of the clean {}.', 'a photo of a large {}.', 'a rendition of a {}.',
    'a photo of a nice {}.', 'a photo of a weird {}.', 'a blurry photo of a {}.', 'a cartoon {}.', 'art of a {}.',
    'a sketch of the {}.', 'a embroidered {}.', 'a pixelated photo of a {}.', 'itap of the {}.',
)


class Recipe(DasslRecipe):
    method: Literal["PromptSRC"] = Field("PromptSRC", description="PromptSRC trainers/promptsrc.py")
    n_ctx: Count = Field(4, description=f"{CFG} TRAINER.PROMPTSRC.N_CTX_TEXT 4 (the first 4 tokens of ctx_init)")
    ctx_init: str | None = Field("a photo of a", description=f"{CFG} TRAINER.PROMPTSRC.CTX_INIT 'a photo of a'")
    n_ctx_vision: Count = Field(4, description=f"{CFG} TRAINER.PROMPTSRC.N_CTX_VISION 4 (N(0, 0.02))")
    prompt_depth_text: Count = Field(9, description=f"{CFG} TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT 9; {XD} 3. At "
                                                    "most the tower's blocks")
    prompt_depth_vision: Count = Field(9, description=f"{CFG} TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION 9; {XD} 3. "
                                                      "At most the tower's blocks")
    text_loss_weight: NonNegative = Field(25.0, description=f"{CFG} TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT 25")
    image_loss_weight: NonNegative = Field(10.0, description=f"{CFG} TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT 10")
    gpa_mean: float = Field(15.0, description=f"{CFG} TRAINER.PROMPTSRC.GPA_MEAN 15 (epochs counted from 1); {XD} 6")
    gpa_std: Positive = Field(1.0, description=f"{CFG} TRAINER.PROMPTSRC.GPA_STD 1; {XD} 10")
    epochs: Count = Field(20, description=f"{CFG} OPTIM.MAX_EPOCH 20; {XD} 20 (xd_train.sh names an ep5 config "
                                          "that the repository does not hold; reproduce_xd.sh and xd_test.sh load "
                                          "epoch 20)")
    batch_size: Count = Field(4, description=f"{CFG} DATALOADER.TRAIN_X.BATCH_SIZE 4 (global); partial last "
                                             "batch dropped if a full one exists (Dassl build_data_loader)")
    lr: Positive = Field(0.0025, description=f"{CFG} OPTIM.NAME sgd, LR 0.0025, LR_SCHEDULER cosine (per epoch)")
    warmup_epochs: Index = Field(1, description=f"{CFG} OPTIM.WARMUP_EPOCH 1, WARMUP_TYPE constant")
    warmup_lr: NonNegative = Field(1e-5, description=f"{CFG} OPTIM.WARMUP_CONS_LR 1e-5")
    test_batch_size: Count = Field(100, description=f"{CFG} DATALOADER.TEST.BATCH_SIZE 100")
    augment: bool = Field(True, description=f"{CFG} INPUT.TRANSFORMS random_resized_crop, random_flip, normalize")
    max_templates: Count | None = Field(None, description="[cap] the first N of the 60 templates of the frozen text "
                                                          "features (the paper profile's dry run; None: all 60)")
    transfer_config: ClassVar[dict] = {"prompt_depth_text": 3, "prompt_depth_vision": 3, "gpa_mean": 6.0,
                                       "gpa_std": 10.0}


def gpa_weights(mean: float, std: float, epochs: int) -> list[float]:
    """PromptSRC.build_model: g(a) = exp(-(a - mean)^2 / (2 std^2)) / (std sqrt(2 pi)) for a = 1..epochs,
    divided by their sum (float64, as numpy there)."""
    g = [math.exp(-0.5 * ((a - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for a in range(1, epochs + 1)]
    total = sum(g)
    return [x / total for x in g]


class PromptSRCLearner(PromptLearner):
    """Text: ctx (first block) + deep_text; image: visual (first block) + deep_visual; and the running GPA sum
    of all of them, flat (persistent: a resumed run continues the same average)."""

    def __init__(self, ctx_vectors: torch.Tensor, vis_dim: int, prompt_prefix: str, *, deep_text: int,
                 n_ctx_vision: int, deep_vision: int, vision_width: int, generator: torch.Generator | None):
        super().__init__(ctx_vectors, vis_dim, conditional=False, prompt_prefix=prompt_prefix)
        self.deep_text = normal_prompts(deep_text, self.n_ctx, self.ctx_dim, generator)
        self.visual = normal_prompts(1, n_ctx_vision, vision_width, generator)[0]
        self.deep_visual = normal_prompts(deep_vision, n_ctx_vision, vision_width, generator)
        self.register_buffer("gpa_sum", torch.zeros(sum(p.numel() for p in self.parameters())))


@register
class PromptSRC(PromptMethod, DeepPromptCLIP):
    name = "PromptSRC"
    Recipe = Recipe
    color = "tab:purple"
    order = 5
    # the paper's Table 1: the highest 11-dataset average H of every method it lists (79.97; the next, 78.55)
    claims = (("cocoop_base2new", "PromptSRC has the highest H of every method", "PromptSRC H", ">",
               "best other H"),)

    def __init__(self, clip_model, tokenizer, *args, epochs: int = Recipe.model_fields["epochs"].default,
                 n_ctx_vision: int = 4, prompt_depth_text: int = 9, prompt_depth_vision: int = 9,
                 text_loss_weight: float = 25.0, image_loss_weight: float = 10.0, gpa_mean: float = 15.0,
                 gpa_std: float = 1.0, max_templates: int | None = None, **kwargs):
        self.prompt_depth_text, self.prompt_depth_vision = int(prompt_depth_text), int(prompt_depth_vision)
        self.n_ctx_vision = int(n_ctx_vision)
        super().__init__(clip_model, tokenizer, *args, **kwargs)
        self.epochs = int(epochs)
        self.text_loss_weight, self.image_loss_weight = float(text_loss_weight), float(image_loss_weight)
        self.gpa = gpa_weights(float(gpa_mean), float(gpa_std), self.epochs)
        self.templates = TEMPLATES[:max_templates] if max_templates else TEMPLATES
        self._frozen_text: dict[tuple, torch.Tensor] = {}

    @classmethod
    def model_kwargs(cls, recipe: PromptRun) -> dict:
        keys = ("epochs", "n_ctx_vision", "prompt_depth_text", "prompt_depth_vision", "text_loss_weight",
                "image_loss_weight", "gpa_mean", "gpa_std", "max_templates")
        return {**super().model_kwargs(recipe), **{k: getattr(recipe, k) for k in keys}}

    def build_learner(self, ctx_vectors: torch.Tensor, vis_dim: int, prompt_prefix: str) -> PromptSRCLearner:
        # IVLP blocks 1..depth-1 hold prompts (at most the tower's blocks)
        return PromptSRCLearner(ctx_vectors, vis_dim, prompt_prefix,
                                deep_text=min(self.prompt_depth_text, self.text_blocks) - 1,
                                n_ctx_vision=self.n_ctx_vision,
                                deep_vision=min(self.prompt_depth_vision, self.vision_blocks) - 1,
                                vision_width=self.vision_width, generator=self.deep_generator())

    def text_prompts(self):
        pl = self.prompt_learner
        return pl.ctx, list(pl.deep_text)

    def vision_prompts(self):
        pl = self.prompt_learner
        return pl.visual, list(pl.deep_visual)

    def frozen_text_features(self) -> torch.Tensor:
        """t0 (K, D): the frozen CLIP's raw text features averaged over TEMPLATES, then normalised."""
        key = tuple(self.classnames)
        if key not in self._frozen_text:
            with torch.autocast(self._device().type, enabled=False):
                self._frozen_text[key] = zeroshot_classifier(
                    self.clip, self.tokenizer, self.classnames, self.templates, device=self._device(),
                    batch_size=self.text_chunk, normalize_each=False).t()
        return self._frozen_text[key]

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        text = self.shared_text_features()
        image = self.encode_images(images)
        scale = self.logit_scale()
        logits = (scale * image @ text.t().to(image.dtype)).float()
        frozen_text = self.frozen_text_features()
        with torch.no_grad():
            frozen_image = self.frozen_image_features(images)
            frozen_logits = scale * frozen_image @ frozen_text.t()
        ce = F.cross_entropy(logits, labels)
        scl_text = F.l1_loss(text.float(), frozen_text) * self.text_loss_weight
        scl_image = F.l1_loss(image.float(), frozen_image) * self.image_loss_weight
        scl_logits = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(frozen_logits, dim=1), reduction="sum",
                              log_target=True) / logits.numel()
        return {"loss": ce + scl_logits + scl_text + scl_image, "ce": ce.detach(), "scl_text": scl_text.detach(),
                "scl_image": scl_image.detach(), "scl_logits": scl_logits.detach(),
                "train_acc": 100.0 * (logits.argmax(-1) == labels).float().mean()}

    @torch.no_grad()
    def after_epoch(self, epoch: int) -> None:
        """GPA (PromptSRC.forward_backward after an epoch's last batch): add this epoch's prompts with their
        weight; after the last epoch, the sum replaces them. A run capped short of its epochs (max_steps) keeps
        its last prompts, as the official code only swaps after MAX_EPOCH epochs."""
        if epoch >= self.epochs:
            return
        pl = self.prompt_learner
        params = list(pl.parameters())
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        pl.gpa_sum.add_(flat * self.gpa[epoch])  # in the prompts' dtype, as the official state-dict sum
        if epoch + 1 == self.epochs:
            torch.nn.utils.vector_to_parameters(pl.gpa_sum.clone(), params)
