"""Deep prompts in both of CLIP's towers: learned tokens that enter the text and the image transformer with
their input and are replaced by new learned tokens before each of the next layers (VPT-deep applied to both
towers, as the multi-modal prompt learners do; official: muzairkhattak/multimodal-prompt-learning clip/model.py,
its prompt-swapping residual attention blocks and vision transformers).

Text, prompt of class k: [SOS] p_1..p_n <words after the context> [EOT]. Before block i (1 <= i <= len(deep))
the hidden states at positions 1..n are replaced by deep[i-1] (the same tokens for every class).
Image: the n prompt tokens are appended after the patch tokens, after the positional embedding and before
ln_pre; before block i the last n hidden states are replaced by deep[i-1]. The features are read where CLIP
reads them (EOT; the class token), so prompts only act through attention.

Here the towers are open_clip's own modules, run block by block; nothing of CLIP is copied. A text pass is
cut after the longest EOT of its prompts: attention is causal and the replaced positions lie before every
EOT, so the cut changes no feature (as in text_encoder). A method built on `DeepPromptCLIP` says where its
prompts come from (`text_prompts`, `vision_prompts`); the class computes features, logits and the cached
text features of a test set.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .prompt import PromptCLIP
from .text_encoder import TextEncoder, length_sorted_chunks


def deep_text_features(text: TextEncoder, prompts: torch.Tensor, eot_idx: torch.Tensor,
                       deep: Sequence[torch.Tensor], seq_len: int | None = None) -> torch.Tensor:
    """Unnormalised text features (N, D) of prompt embeddings (N, L, width) whose positions 1..n hold the
    first layer's prompts; deep[i-1] (n, width) replaces them before block i. seq_len: run the first
    seq_len positions only (> every eot_idx)."""
    length = prompts.shape[1] if seq_len is None else int(seq_len)
    if length > text.context_length:
        raise ValueError(f"prompt of {length} tokens exceeds CLIP's context length {text.context_length}")
    blocks = list(text.transformer.resblocks)
    if len(deep) >= len(blocks):
        raise ValueError(f"{len(deep)} deep text prompts for a text tower of {len(blocks)} blocks (at most "
                         f"{len(blocks) - 1})")
    x = prompts[:, :length] + text.positional_embedding[:length].to(prompts.dtype)
    mask = text.attn_mask[:length, :length]
    if not text.batch_first:
        raise TypeError("deep prompts need an open_clip text transformer with batch_first=True")
    for i, blk in enumerate(blocks):
        if 1 <= i <= len(deep):
            p = deep[i - 1].to(x.dtype)
            x = torch.cat([x[:, :1], p.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + p.shape[0]:]], dim=1)
        x = blk(x, attn_mask=mask)
    x = text.ln_final(x[torch.arange(x.shape[0], device=x.device), eot_idx.to(x.device)])
    if isinstance(text.text_projection, nn.Linear):
        return text.text_projection(x)
    return x @ text.text_projection


def check_vision_tower(visual: nn.Module) -> None:
    """Deep vision prompts need the OpenAI layout: class-token pooling, no attention pooling, no extra tokens."""
    ok = (hasattr(visual, "transformer") and hasattr(visual, "conv1") and getattr(visual, "attn_pool", None) is None
          and getattr(visual, "pool_type", "tok") == "tok" and not getattr(visual, "output_tokens", False))
    if not ok:
        raise TypeError(f"deep vision prompts need an open_clip VisionTransformer with class-token pooling "
                        f"(the OpenAI ViT layout); got {type(visual).__name__}")


def deep_image_features(visual: nn.Module, images: torch.Tensor, first: torch.Tensor,
                        deep: Sequence[torch.Tensor]) -> torch.Tensor:
    """Unnormalised image features (B, D): first (n, width) appended to the tokens before ln_pre; deep[i-1]
    (n, width) replaces the last n hidden states before block i (open_clip VisionTransformer, 'tok' pool)."""
    blocks = list(visual.transformer.resblocks)
    if len(deep) >= len(blocks):
        raise ValueError(f"{len(deep)} deep vision prompts for a vision tower of {len(blocks)} blocks (at most "
                         f"{len(blocks) - 1})")
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    x = torch.cat([x, first.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    for i, blk in enumerate(blocks):
        if 1 <= i <= len(deep):
            p = deep[i - 1].to(x.dtype)
            x = torch.cat([x[:, :x.shape[1] - p.shape[0]], p.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = blk(x)
    pooled = visual.ln_post(x[:, 0])
    return pooled @ visual.proj if visual.proj is not None else pooled


def tower_widths(clip_model: nn.Module) -> tuple[int, int, int, int]:
    """(text width, text blocks, vision width, vision blocks) of an open_clip CLIP."""
    visual = clip_model.visual
    return (int(clip_model.positional_embedding.shape[1]), len(clip_model.transformer.resblocks),
            int(visual.conv1.out_channels), len(visual.transformer.resblocks))


def normal_prompts(count: int, n: int, width: int, generator: torch.Generator | None) -> nn.ParameterList:
    """`count` sets of n learned tokens, each drawn N(0, 0.02) as the official code's nn.init.normal_(std=0.02)."""
    return nn.ParameterList([nn.Parameter(torch.randn(n, width, generator=generator) * 0.02) for _ in range(count)])


class DeepPromptCLIP(PromptCLIP):
    """A frozen CLIP whose text and image features both depend on learned deep prompts.

    A method says where its prompts come from: `text_prompts()` -> (ctx (n, width), [deep (n, width)] for
    blocks 1..) and `vision_prompts()` -> (first (m, vision width), [deep (m, vision width)]). Image features
    are the prompted tower's (with gradient: the vision prompts learn through it); the class prompts of a test
    set are encoded once (cached until training or the class set changes), in length-sorted chunks.

    Context: the official rule of these learners (`if ctx_init and n_ctx <= 4`): the first n_ctx tokens of
    ctx_init are learned and the rest of ctx_init stays as words of every prompt; otherwise n_ctx random
    tokens "X X ..". (CoOp's rule, in PromptCLIP, learns every word of ctx_init.)
    """

    def __init__(self, clip_model, tokenizer, *args, **kwargs):
        check_vision_tower(clip_model.visual)
        _, self.text_blocks, self.vision_width, self.vision_blocks = tower_widths(clip_model)
        self.seed_deep = kwargs.get("seed_ctx")  # the deeper prompts' N(0, 0.02) draw follows the run's seed
        super().__init__(clip_model, tokenizer, *args, **kwargs)

    def deep_generator(self) -> torch.Generator | None:
        """A fresh generator for the deeper prompts' init (build_learner), seeded by the run."""
        return torch.Generator().manual_seed(self.seed_deep) if self.seed_deep is not None else None

    def initial_context(self, clip_model, tokenizer, n_ctx: int, ctx_init: str | None, seed_ctx: int | None):
        if ctx_init and n_ctx <= 4:
            ctx_init = ctx_init.replace("_", " ").strip()
            tokens = tokenizer([ctx_init])
            with torch.no_grad():
                emb = clip_model.token_embedding(tokens.to(self._device()))[0].float().cpu()
            return emb[1:1 + n_ctx], ctx_init
        return super().initial_context(clip_model, tokenizer, n_ctx, None, seed_ctx)

    def text_prompts(self) -> tuple[torch.Tensor, Sequence[torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} must define text_prompts")

    def vision_prompts(self) -> tuple[torch.Tensor, Sequence[torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} must define vision_prompts")

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        first, deep = self.vision_prompts()
        return F.normalize(deep_image_features(self.clip.visual, images, first, deep).float(), dim=-1)

    def frozen_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised features of the frozen, unprompted CLIP (no gradient)."""
        return PromptCLIP.encode_images(self, images)

    def shared_text_features(self) -> torch.Tensor:
        """(K, D) normalised text features of every class's deep prompt; in eval, one pass per test set."""
        if self._text_cache is not None:
            return self._text_cache
        pl = self.prompt_learner
        ctx, deep = self.text_prompts()
        eot = pl.eot_idx
        full_len = 1 + pl.n_ctx + pl.token_suffix.shape[1]
        chunks = length_sorted_chunks(eot, self.text_chunk)
        parts = []
        for idx in chunks:
            seq_len = int(eot[idx].max()) + 1 if self.truncate else full_len
            prompts = pl.build_prompts(ctx.unsqueeze(0), idx, seq_len)[0]  # (k, seq_len, width)
            parts.append(F.normalize(deep_text_features(self.text_encoder, prompts, eot[idx], deep, seq_len).float(),
                                     dim=-1))
        text = torch.cat(parts)[torch.argsort(torch.cat(chunks))]
        if not torch.is_grad_enabled():
            self._text_cache = text
        return text

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.logit_scale() * image_features @ self.shared_text_features().t().to(image_features.dtype)


__all__ = ["DeepPromptCLIP", "check_vision_tower", "deep_image_features", "deep_text_features", "normal_prompts",
           "tower_widths"]
