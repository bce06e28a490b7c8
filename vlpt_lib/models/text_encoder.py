"""CLIP's text tower run on token *embeddings* instead of token ids.

Prompt learning replaces some word embeddings by learned vectors, so the text encoder must start
after `token_embedding`: add the positional embedding, run the causal transformer, apply ln_final,
read the feature at the end-of-text (EOT) position and project it with text_projection.

This works on an open_clip `CLIP` model (open_clip 3.x attribute names: token_embedding,
positional_embedding, transformer (with .batch_first), ln_final, text_projection (Parameter or
Linear), attn_mask (additive float causal mask, -inf above the diagonal)).

Exact truncation: the transformer is causal and the output is read at EOT, so tokens after the
EOT never influence that output. Running only the first `seq_len = max(EOT index) + 1` positions
therefore gives the same features as the full 77-token context (up to float rounding order), at a
fraction of the cost. `forward(..., seq_len=None)` runs the full length (the reference behaviour).

Exact prefix sharing (`forward_shared_prefix`): in a CoCoOp batch every class prompt of one image
starts with the same P = 1 + M tokens ([SOS] + that image's context). Causality again: the hidden
states of those P positions depend only on themselves, so they are computed once per image, and the
class-name tokens of all K prompts attend to that one copy (keys/values broadcast over classes).
Per image the text tower then runs P + K*S tokens instead of K*(P + S). This re-implements the
residual attention block with the block's own weights (open_clip ResidualAttentionBlock: ln_1,
attn.in_proj_*, attn.out_proj, ls_1, ln_2, mlp, ls_2); other block types fall back to `forward`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def text_chunk_for(device: torch.device) -> int:
    """Most prompts per text-tower pass when a run does not say (exact either way). A GPU wants few large
    passes; a CPU gains from small ones: prompts are sorted by length and each chunk runs only up to its
    own longest EOT, so a small chunk carries little padding (CoOp on ImageNet's 500 base classes, ViT-B/16,
    2 CPU cores: 22 s per job with one chunk of 8192, 12 s with chunks of 128, 14 s with 32)."""
    return 8192 if torch.device(device).type == "cuda" else 128


def length_sorted_chunks(eot_idx: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The prompts' indices, shortest first, in chunks of at most `size`: each chunk is cut after its own
    longest EOT (see text_chunk_for)."""
    return list(torch.argsort(eot_idx, stable=True).split(max(1, int(size))))


class TextEncoder(nn.Module):
    """Frozen CLIP text tower on embeddings. Holds references to the CLIP modules (no copies)."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        for name in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            if not hasattr(clip_model, name):
                raise TypeError(f"CLIP model {type(clip_model).__name__} has no attribute {name!r}; "
                                "TextEncoder expects an open_clip CLIP with a standard text tower")
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.positional_embedding = clip_model.positional_embedding
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask.detach().clone(), persistent=False)
        self.batch_first = getattr(clip_model.transformer, "batch_first", True)
        self.context_length = int(clip_model.positional_embedding.shape[0])
        self.width = int(clip_model.positional_embedding.shape[1])
        self.supports_shared_prefix = all(_is_plain_block(b) for b in self.transformer.resblocks) and \
            not getattr(self.transformer, "grad_checkpointing", False)

    @property
    def dtype(self) -> torch.dtype:
        return self.positional_embedding.dtype

    def forward(self, prompts: torch.Tensor, eot_idx: torch.Tensor, seq_len: int | None = None) -> torch.Tensor:
        """prompts (N, L, width) embeddings with L >= seq_len; eot_idx (N,) EOT positions.

        seq_len: run only the first seq_len positions (must exceed every eot_idx); None = all of L.
        Returns (N, embed_dim) unnormalised text features.
        """
        length = prompts.shape[1] if seq_len is None else int(seq_len)
        if length > self.context_length:
            raise ValueError(f"prompt of {length} tokens exceeds CLIP's context length {self.context_length}")
        x = prompts[:, :length]
        x = x + self.positional_embedding[:length].to(x.dtype)
        mask = self.attn_mask[:length, :length]
        if not self.batch_first:
            x = x.transpose(0, 1)
        x = self.transformer(x, attn_mask=mask)
        if not self.batch_first:
            x = x.transpose(0, 1)
        x = x[torch.arange(x.shape[0], device=x.device), eot_idx.to(x.device)]
        x = self.ln_final(x)  # ln_final is per-token, so applying it after the gather is the same
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def forward_shared_prefix(self, prefix: torch.Tensor, suffix: torch.Tensor, eot_idx: torch.Tensor) -> torch.Tensor:
        """Text features (G, k, embed_dim) of the G*k prompts cat(prefix[g], suffix[c]).

        prefix (G, P, width): the shared first P token embeddings of group g (SOS + context);
        suffix (k, S, width): the class tokens after them, cut after the longest EOT;
        eot_idx (k,): EOT positions in the whole prompt (all >= P).
        """
        g, p, w = prefix.shape
        k, s = suffix.shape[0], suffix.shape[1]
        pos = self.positional_embedding
        xp = prefix + pos[:p].to(prefix.dtype)
        xs = (suffix + pos[p:p + s].to(suffix.dtype)).unsqueeze(0).expand(g, k, s, w)
        allowed = torch.ones(s, p + s, dtype=torch.bool, device=prefix.device).tril(diagonal=p)
        for blk in self.transformer.resblocks:
            xp, xs = _shared_prefix_block(blk, xp, xs, allowed)
        rows = xs[:, torch.arange(k, device=xs.device), (eot_idx.to(xs.device) - p)]  # (G, k, width)
        rows = self.ln_final(rows)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(rows)
        return rows @ self.text_projection


def _is_plain_block(block: nn.Module) -> bool:
    attn = getattr(block, "attn", None)
    return (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.batch_first
            and attn.in_proj_bias is not None and not hasattr(block, "ln_1_kv")
            and all(hasattr(block, n) for n in ("ln_1", "ln_2", "mlp", "ls_1", "ls_2")))


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(..., L, W) -> (..., heads, L, W // heads)"""
    return t.unflatten(-1, (n_heads, t.shape[-1] // n_heads)).transpose(-2, -3)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """(..., heads, L, d) -> (..., L, heads * d)"""
    return t.transpose(-2, -3).flatten(-2)


def _shared_prefix_block(blk: nn.Module, xp: torch.Tensor, xs: torch.Tensor, allowed: torch.Tensor):
    """One pre-LN residual attention block on (prefix (G,P,W), suffix (G,k,S,W)) hidden states."""
    attn = blk.attn
    h = attn.num_heads
    g, k, s, w = xs.shape
    p = xp.shape[1]
    qp, kp, vp = (_heads(t, h) for t in F.linear(blk.ln_1(xp), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    qs, ks, vs = (_heads(t, h) for t in F.linear(blk.ln_1(xs), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    out_p = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)  # (G, h, P, d)
    keys = torch.cat([kp.unsqueeze(1).expand(g, k, *kp.shape[1:]), ks], dim=-2)  # (G, k, h, P+S, d)
    vals = torch.cat([vp.unsqueeze(1).expand(g, k, *vp.shape[1:]), vs], dim=-2)
    d = qs.shape[-1]
    out_s = F.scaled_dot_product_attention(qs.reshape(g * k, h, s, d), keys.reshape(g * k, h, p + s, d),
                                           vals.reshape(g * k, h, p + s, d), attn_mask=allowed)
    out_s = out_s.view(g, k, h, s, d)
    xp = xp + blk.ls_1(attn.out_proj(_merge(out_p)))
    xs = xs + blk.ls_1(attn.out_proj(_merge(out_s)))
    xp = xp + blk.ls_2(blk.mlp(blk.ln_2(xp)))
    xs = xs + blk.ls_2(blk.mlp(blk.ln_2(xs)))
    return xp, xs
