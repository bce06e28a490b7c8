"""Zero-shot classification with any open_clip CLIP (the mini one or ViT-B/16).

    clf = zeroshot_classifier(model, tokenizer, ds.classnames, ds.template)   # (embed_dim, n_classes)
    res = evaluate(model, clf, loader, device)                                 # {"acc": %, "n": ..., ...}
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F


def _templates(template) -> list:
    if isinstance(template, str) or callable(template):
        return [template]
    return list(template)


def _fill(template, classname: str) -> str:
    return template(classname) if callable(template) else template.format(classname)


@torch.no_grad()
def zeroshot_classifier(model, tokenizer, classnames: Sequence[str], template: str | Callable | Iterable = "a photo of a {}.",
                        device: torch.device | str | None = None, batch_size: int = 256) -> torch.Tensor:
    """Normalised text embeddings of the class prompts, shape (embed_dim, n_classes).

    `template` is one "...{}..." string, a callable(classname) -> str, or a list of either
    (an ensemble: the normalised embeddings of all templates are averaged, then renormalised).
    Class names have "_" replaced by " ".
    """
    if device is None:
        device = next(model.parameters()).device
    names = [c.replace("_", " ") for c in classnames]
    templates = _templates(template)
    was_training = model.training
    model.eval()
    weights = []
    for t in templates:
        prompts = [_fill(t, c) for c in names]
        chunks = []
        for i in range(0, len(prompts), batch_size):
            tokens = tokenizer(prompts[i:i + batch_size]).to(device)
            chunks.append(F.normalize(model.encode_text(tokens).float(), dim=-1))
        weights.append(torch.cat(chunks))
    model.train(was_training)
    w = F.normalize(torch.stack(weights).mean(0), dim=-1)
    return w.t().contiguous()


@torch.no_grad()
def evaluate(model, classifier: torch.Tensor, loader, device: torch.device | str | None = None,
             precision: str = "auto", progress: bool = False) -> dict:
    """Top-1 accuracy (percent) of `model`'s image features against `classifier` over `loader`.

    Returns {"acc", "n", "correct", "per_class_acc"} (per_class_acc: percent per label, NaN where absent).
    """
    from .device import autocast

    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    classifier = classifier.to(device).float()
    n_classes = classifier.shape[1]
    hits = torch.zeros(n_classes, dtype=torch.long)
    counts = torch.zeros(n_classes, dtype=torch.long)
    it = loader
    if progress:
        from .progress import bar
        it = bar(loader, desc="zero-shot eval", leave=False)
    for images, labels in it:
        images = images.to(device, non_blocking=True)
        with autocast(device, precision):
            feats = model.encode_image(images)
        feats = F.normalize(feats.float(), dim=-1)
        pred = (feats @ classifier).argmax(dim=-1).cpu()
        labels = torch.as_tensor(labels)
        counts += torch.bincount(labels, minlength=n_classes)
        hits += torch.bincount(labels[pred == labels], minlength=n_classes)
    model.train(was_training)
    n = int(counts.sum())
    per_class = torch.where(counts > 0, 100.0 * hits / counts.clamp(min=1), torch.full_like(counts, float("nan"), dtype=torch.float))
    return {"acc": 100.0 * int(hits.sum()) / max(n, 1), "n": n, "correct": int(hits.sum()),
            "per_class_acc": [float(x) for x in per_class]}
