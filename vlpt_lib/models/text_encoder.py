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
"""
from __future__ import annotations

import torch
from torch import nn


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
