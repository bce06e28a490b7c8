"""Zero-shot classifier weights from class names with any open_clip CLIP (the mini one or ViT-B/16).

    clf = zeroshot_classifier(model, tokenizer, ds.classnames, ds.template)   # (embed_dim, n_classes)
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from .text_encoder import TextEncoder, length_sorted_chunks


def _templates(template) -> list:
    if isinstance(template, str) or callable(template):
        return [template]
    return list(template)


def _fill(template, classname: str) -> str:
    return template(classname) if callable(template) else template.format(classname)


@torch.no_grad()
def zeroshot_classifier(model, tokenizer, classnames: Sequence[str], template: str | Callable | Iterable = "a photo of a {}.",
                        device: torch.device | str | None = None, batch_size: int = 256,
                        normalize_each: bool = True) -> torch.Tensor:
    """Normalised text embeddings of the class prompts, shape (embed_dim, n_classes).

    `template` is one "...{}..." string, a callable(classname) -> str, or a list of either
    (an ensemble: the normalised embeddings of all templates are averaged, then renormalised;
    normalize_each=False averages the raw embeddings instead, as some prompt learners' frozen features do).
    Class names have "_" replaced by " ".
    """
    if device is None:
        device = next(model.parameters()).device
    names = [c.replace("_", " ") for c in classnames]
    templates = _templates(template)
    was_training = model.training
    model.eval()
    encode = _truncated_encoder(model)
    weights = []
    for t in templates:
        tokens = tokenizer([_fill(t, c) for c in names]).to(device)
        # shortest prompts first, each chunk cut after its own last EOT; then back to the class order
        chunks = length_sorted_chunks(tokens.argmax(dim=-1), batch_size)
        feats = torch.cat([encode(tokens[idx]).float() for idx in chunks])
        feats = F.normalize(feats, dim=-1) if normalize_each else feats
        weights.append(feats[torch.argsort(torch.cat(chunks))])
    model.train(was_training)
    w = F.normalize(torch.stack(weights).mean(0), dim=-1)
    return w.t().contiguous()


def _truncated_encoder(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """model.encode_text, run only up to the chunk's last end-of-text token: the text tower is causal and
    reads its output at EOT, so the padding after it never matters (exact up to float rounding; 4-5x fewer
    tokens for "a photo of a {}." prompts). Falls back to encode_text for text towers of another shape."""
    try:
        encoder = TextEncoder(model)
    except TypeError:
        return model.encode_text

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        eot = tokens.argmax(dim=-1)  # EOT has the largest id in CLIP's vocabulary (open_clip's text pooling)
        return encoder(model.token_embedding(tokens), eot, int(eot.max()) + 1)

    return encode


class ZeroShotHead(torch.nn.Module):
    """images -> logits: CLIP image features (normalised) against fixed class weights."""

    def __init__(self, clip_model, classifier: torch.Tensor):
        super().__init__()
        self.clip = clip_model
        self.register_buffer("classifier", classifier.float(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(self.clip.encode_image(images).float(), dim=-1)
        return feats @ self.classifier
