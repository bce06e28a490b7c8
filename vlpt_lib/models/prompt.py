"""Prompt learning on a frozen open_clip CLIP: the shared model of every prompt method, with an exact fast
CoCoOp path. The methods themselves (zero-shot CLIP, CoOp, CoCoOp, ...) are in vlpt_lib.methods.prompt.

Prompt of class k:  [SOS] ctx_1 .. ctx_M  <class name> .  [EOT]
The M context vectors are learned (`PromptLearner.ctx`); with `conditional`, a Meta-Net maps the
L2-normalised image feature x to pi(x) (Linear(vis, vis//16) -> ReLU -> Linear(vis//16, ctx_dim)) and every
context vector becomes ctx_i + pi(x), so each image gets its own class prompts (CoCoOp, official
trainers/cocoop.py: image features are normalised before the Meta-Net; the bias is added to all M vectors).

Fast exact CoCoOp (`PromptCLIP.encode_prompts`): all (image, class) prompts of a batch are encoded in
one pass through the text transformer, in chunks of at most `text_chunk` prompts to bound memory.
Classes are sorted by prompt length and each chunk is cut after its longest prompt's EOT: the
text transformer is causal and the feature is read at EOT, so the cut changes nothing
(tests/test_cocoop_exact.py proves logits and gradients equal a per-image, full-length loop).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .text_encoder import TextEncoder, length_sorted_chunks
from .zeroshot import zeroshot_classifier


def clean_classname(name: str) -> str:
    return name.replace("_", " ")


def eot_positions(tokens: torch.Tensor) -> torch.Tensor:
    """EOT index of each tokenised prompt: CLIP's EOT id is the largest id in the vocabulary."""
    return tokens.argmax(dim=-1)


class PromptLearner(nn.Module):
    """The trainable part: M context vectors (+ the Meta-Net for CoCoOp) and per-class token buffers.

    The class buffers (SOS embedding, the embeddings after the context, EOT positions) are
    non-persistent: a checkpoint holds only ctx (+ meta_net), and `set_class_tokens` swaps the
    class set (base -> new classes, ImageNet -> another dataset) without touching what was learned.
    """

    def __init__(self, ctx_vectors: torch.Tensor, vis_dim: int, conditional: bool, prompt_prefix: str):
        super().__init__()
        self.ctx = nn.Parameter(ctx_vectors.detach().clone().float())
        self.n_ctx, self.ctx_dim = self.ctx.shape
        self.conditional = conditional
        self.prompt_prefix = prompt_prefix
        if conditional:
            hidden = vis_dim // 16
            self.meta_net = nn.Sequential(OrderedDict([
                ("linear1", nn.Linear(vis_dim, hidden)),
                ("relu", nn.ReLU(inplace=True)),
                ("linear2", nn.Linear(hidden, self.ctx_dim)),
            ]))
        else:
            self.meta_net = None
        self.register_buffer("token_prefix", torch.empty(0, 1, self.ctx_dim), persistent=False)
        self.register_buffer("token_suffix", torch.empty(0, 0, self.ctx_dim), persistent=False)
        self.register_buffer("eot_idx", torch.empty(0, dtype=torch.long), persistent=False)

    def set_class_tokens(self, prefix: torch.Tensor, suffix: torch.Tensor, eot_idx: torch.Tensor) -> None:
        dev = self.ctx.device
        self.token_prefix = prefix.to(dev)
        self.token_suffix = suffix.to(dev)
        self.eot_idx = eot_idx.to(dev)

    @property
    def n_cls(self) -> int:
        return int(self.token_prefix.shape[0])

    def context(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """(1, M, C) for CoOp, (B, M, C) for CoCoOp: ctx + pi(x) for each normalised image feature x."""
        ctx = self.ctx.unsqueeze(0)
        if self.meta_net is None:
            return ctx
        bias = self.meta_net(image_features)
        return ctx + bias.unsqueeze(1)

    def build_prompts(self, ctx: torch.Tensor, class_idx: torch.Tensor, seq_len: int | None = None) -> torch.Tensor:
        """Prompt embeddings (G, k, seq_len, C) for G contexts (G = 1 or B) and the classes class_idx."""
        seq_len = seq_len or (1 + self.n_ctx + self.token_suffix.shape[1])
        g, k = ctx.shape[0], class_idx.numel()
        prefix = self.token_prefix[class_idx].unsqueeze(0).expand(g, k, -1, -1)
        suffix = self.token_suffix[class_idx, : seq_len - 1 - self.n_ctx].unsqueeze(0).expand(g, k, -1, -1)
        ctx = ctx.unsqueeze(1).expand(g, k, -1, -1)
        return torch.cat([prefix.to(ctx.dtype), ctx, suffix.to(ctx.dtype)], dim=2)


class PromptCLIP(nn.Module):
    """Frozen CLIP + a prompt learner: what every prompt method shares. forward(images) -> logits (B, n_cls).

    A method (vlpt_lib.methods.prompt) subclasses it and says how its logits come from the image features
    (`logits_from_features`) and, when it adds a term, its training loss (`training_loss`). What a method may
    ask of the frozen CLIP: `encode_images`, `logit_scale`, `zeroshot_weights` (the hand-crafted prompts' text
    features), `encode_prompts` (text features of learned contexts) and `shared_text_features`.

    text_chunk: the most prompts encoded at once. truncate: cut the text sequence after the longest EOT
    (exact; False = full length). share_prefix: compute the [SOS]+context positions once per image (exact;
    see text_encoder). conditional: build the Meta-Net (CoCoOp).
    """

    conditional: bool = False

    def __init__(self, clip_model: nn.Module, tokenizer: Callable, n_ctx: int = 4,
                 ctx_init: str | None = "a photo of a", text_chunk: int = 2048, truncate: bool = True,
                 share_prefix: bool = True, seed_ctx: int | None = None):
        super().__init__()
        self.clip = clip_model
        for p in self.clip.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.text_encoder = TextEncoder(clip_model)
        self.text_chunk = int(text_chunk)
        self.truncate = truncate
        self.share_prefix = share_prefix
        self.template = "a photo of a {}."
        vis_dim = int(clip_model.visual.output_dim)
        ctx_vectors, prefix_text = self.initial_context(clip_model, tokenizer, n_ctx, ctx_init, seed_ctx)
        self.prompt_learner = self.build_learner(ctx_vectors, vis_dim, prefix_text)
        self.prompt_learner.to(self._device())
        self.classnames: list[str] = []
        self._zs_cache: dict[tuple, torch.Tensor] = {}  # CLIP is frozen: the same class list gives the same weights
        self._text_cache: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------- setup
    def _device(self) -> torch.device:
        return self.clip.logit_scale.device

    def initial_context(self, clip_model, tokenizer, n_ctx: int, ctx_init: str | None,
                        seed_ctx: int | None) -> tuple[torch.Tensor, str]:
        """(ctx_vectors (M, C), the prompt's words before the class name). CoOp's rule: with ctx_init, its
        words' embeddings, all learned (M = its token count); without, M vectors drawn N(0, 0.02)."""
        if ctx_init:
            ctx_init = ctx_init.replace("_", " ").strip()
            tokens = tokenizer([ctx_init])
            n_ctx = int(eot_positions(tokens)[0]) - 1  # tokens between SOS and EOT
            with torch.no_grad():
                ctx_vectors = clip_model.token_embedding(tokens.to(self._device()))[0, 1:1 + n_ctx].float().cpu()
            return ctx_vectors, ctx_init
        gen = torch.Generator().manual_seed(seed_ctx) if seed_ctx is not None else None
        ctx_dim = self.text_encoder.width
        return torch.randn(n_ctx, ctx_dim, generator=gen) * 0.02, " ".join(["X"] * n_ctx)  # N(0, 0.02) as CoOp

    def build_learner(self, ctx_vectors: torch.Tensor, vis_dim: int, prompt_prefix: str) -> PromptLearner:
        """Everything the method learns, in one module: it is what the optimizer steps, the checkpoint holds
        and `load_from` restores. A method with parts of its own returns a PromptLearner subclass holding them."""
        return PromptLearner(ctx_vectors, vis_dim, conditional=self.conditional, prompt_prefix=prompt_prefix)

    def trainable_parameters(self) -> list[nn.Parameter]:
        learned = {id(p) for p in self.prompt_learner.parameters()}
        stray = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in learned]
        if stray:
            raise ValueError(f"{type(self).__name__}: trainable parameters outside prompt_learner ({stray[:3]}): "
                             "they would be neither stepped nor saved; build them in build_learner()")
        return [p for p in self.prompt_learner.parameters() if p.requires_grad]

    def set_classnames(self, classnames: Sequence[str], template: str | None = None) -> None:
        """Build the class prompts of this class set (and forget text features of the previous one)."""
        self.classnames = [clean_classname(c) for c in classnames]
        if template:
            self.template = template
        self._text_cache = None
        pl = self.prompt_learner
        prompts = [f"{pl.prompt_prefix} {name}." for name in self.classnames]
        tokens = self.tokenizer(prompts)
        eot = eot_positions(tokens)
        with torch.no_grad():
            emb = self.clip.token_embedding(tokens.to(self._device())).float()
        pl.set_class_tokens(emb[:, :1], emb[:, 1 + pl.n_ctx:], eot)

    def zeroshot_weights(self) -> torch.Tensor:
        """(K, D) normalised text features of the hand-crafted prompts (the template) of the current classes."""
        if not self.classnames:
            raise RuntimeError("call set_classnames(...) before zeroshot_weights()")
        key = (tuple(self.classnames), self.template)  # e.g. ImageNet, -V2 and -Sketch share 1,000 classes
        if key not in self._zs_cache:  # fp32 even when asked inside an evaluation's or a step's autocast
            with torch.autocast(self._device().type, enabled=False):
                self._zs_cache[key] = zeroshot_classifier(self.clip, self.tokenizer, self.classnames, self.template,
                                                          device=self._device(), batch_size=self.text_chunk).t()
        return self._zs_cache[key]

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # CLIP stays frozen (no dropout / BN updates)
        self._text_cache = None
        return self

    def after_epoch(self, epoch: int) -> None:
        """Called by the training loop after each finished epoch (0-based), before its checkpoint: nothing here;
        a method that averages its prompts over epochs does it in its override."""

    # ------------------------------------------------------------------------------------- forward
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.clip.encode_image(images)
        return F.normalize(feats.float(), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().float()

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """Logits (B, n_cls); with labels, the training loss dict instead (through forward, so DDP syncs it)."""
        if not self.classnames:
            raise RuntimeError("call set_classnames(...) before forward")
        if labels is not None:
            return self.training_loss(images, labels)
        return self.logits_from_features(self.encode_images(images))

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """image_features: (B, D) L2-normalised. Returns (B, n_cls) logits: the method's own rule."""
        raise NotImplementedError(f"{type(self).__name__} must define logits_from_features")

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss of one batch (cross-entropy on the logits; a method with another term overrides it)."""
        logits = self.logits_from_features(self.encode_images(images)).float()
        return {"loss": F.cross_entropy(logits, labels),
                "train_acc": 100.0 * (logits.argmax(-1) == labels).float().mean()}

    def shared_text_features(self) -> torch.Tensor:
        """(K, D) normalised text features of the shared learned context (CoOp); in eval, one pass per test set."""
        text = self._text_cache
        if text is None:
            text = self.encode_prompts(self.prompt_learner.context())[0]
            if not torch.is_grad_enabled():
                self._text_cache = text
        return text

    def encode_prompts(self, ctx: torch.Tensor) -> torch.Tensor:
        """Normalised text features (G, K, D) of every (context g, class k) prompt, chunked and cut."""
        pl = self.prompt_learner
        g = ctx.shape[0]
        eot = pl.eot_idx
        full_len = 1 + pl.n_ctx + pl.token_suffix.shape[1]
        g_chunk = max(1, min(g, self.text_chunk))
        chunks = length_sorted_chunks(eot, self.text_chunk // g_chunk)  # short prompts together: cut shorter
        order = torch.cat(chunks)
        out_g = []
        for g0 in range(0, g, g_chunk):
            ctx_g = ctx[g0:g0 + g_chunk]
            gg = ctx_g.shape[0]
            parts = []
            for idx in chunks:
                seq_len = int(eot[idx].max()) + 1 if self.truncate else full_len
                if self.share_prefix and self.text_encoder.supports_shared_prefix:
                    prefix = torch.cat([pl.token_prefix[:1].expand(gg, -1, -1).to(ctx_g.dtype), ctx_g], dim=1)
                    suffix = pl.token_suffix[idx, : seq_len - 1 - pl.n_ctx].to(ctx_g.dtype)
                    feats = self.text_encoder.forward_shared_prefix(prefix, suffix, eot[idx])  # (gg, k, D)
                    parts.append(F.normalize(feats.float(), dim=-1))
                    continue
                prompts = pl.build_prompts(ctx_g, idx, seq_len)  # (gg, k, L, C)
                k = idx.numel()
                feats = self.text_encoder(prompts.reshape(gg * k, seq_len, -1), eot[idx].repeat(gg), seq_len)
                parts.append(F.normalize(feats.float(), dim=-1).view(gg, k, -1))
            text = torch.cat(parts, dim=1)
            out_g.append(text)
        return torch.cat(out_g, dim=0)[:, torch.argsort(order)]  # back to the class order
