"""One evaluation for every job: top-1 (classification) and mIoU (segmentation).

Under DDP each rank scores `dataset[rank::world]` and the counts are summed, so every sample is
counted exactly once (a DistributedSampler would pad the last ranks with repeats).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ..utils import distributed
from ..utils.device import autocast
from ..utils.metrics import MeanIoU
from ..utils.progress import bar


def exact_shard(dataset: Dataset) -> Dataset:
    """This rank's share of `dataset`: items rank, rank + world, ... (no padding, no repeats)."""
    world = distributed.world_size()
    if world == 1:
        return dataset
    return Subset(dataset, list(range(distributed.rank(), len(dataset), world)))


@torch.no_grad()
def evaluate_classifier(model: Callable, dataset: Dataset, *, device: torch.device, batch_size: int = 100,
                        precision: str = "auto", num_workers: int = 0, num_classes: int | None = None,
                        desc: str = "eval") -> dict:
    """Top-1 (%), mean cross-entropy and per-class accuracy of `model(images) -> logits` over `dataset`.

    Returns {"top1", "loss", "n", "correct", "per_class_acc"} summed over all ranks."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    loader = DataLoader(exact_shard(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # correct, summed loss, count
    per_class = None
    for images, labels in bar(loader, desc=desc, leave=False):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        hit = logits.argmax(-1) == labels
        totals += torch.stack([hit.sum().double(), F.cross_entropy(logits, labels, reduction="sum").double(),
                               torch.tensor(labels.numel(), dtype=torch.float64, device=device)])
        k = num_classes or logits.shape[-1]
        if per_class is None:
            per_class = torch.zeros(2, k, dtype=torch.float64, device=device)
        per_class[0] += torch.bincount(labels[hit], minlength=k)[:k].double()
        per_class[1] += torch.bincount(labels, minlength=k)[:k].double()
    if per_class is None:  # this rank got no samples; the others' shapes must still match
        per_class = torch.zeros(2, num_classes or 0, dtype=torch.float64, device=device)
    distributed.all_reduce_sum(totals)
    if per_class.shape[1]:
        distributed.all_reduce_sum(per_class)
    if hasattr(model, "train"):
        model.train(was_training)
    n = int(totals[2])
    acc = (100 * per_class[0] / per_class[1]).where(per_class[1] > 0, torch.full_like(per_class[0], float("nan")))
    return {"top1": float(100 * totals[0] / max(n, 1)), "loss": float(totals[1] / max(n, 1)), "n": n,
            "correct": int(totals[0]), "per_class_acc": [float(a) for a in acc.cpu()]}


@torch.no_grad()
def evaluate_segmentation(predict: Callable, dataset: Dataset, num_classes: int, *, device: torch.device,
                          precision: str = "auto", num_workers: int = 0, keep_examples: int = 0,
                          desc: str = "eval") -> tuple[dict, list[dict]]:
    """mIoU from dataset-wide intersections and unions; `predict(image (1,3,h,w)) -> logits (1,K,h',w')`.

    Logits are resized to the label's size (the label keeps its original resolution), as mmseg does.
    Returns (scores from MeanIoU.compute(), the first `keep_examples` of rank 0's images/labels/predictions)."""
    metric = MeanIoU(num_classes)
    loader = DataLoader(exact_shard(dataset), batch_size=1, shuffle=False, num_workers=num_workers)
    examples = []
    for image, label in bar(loader, desc=desc, leave=False):
        image = image.to(device)
        with autocast(device, precision):
            logits = predict(image)
        logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
        pred = logits.argmax(1).cpu()
        metric.update(pred, label)
        if len(examples) < keep_examples:
            examples.append({"image": image[0].cpu(), "label": label[0].to(torch.int16), "pred": pred[0].to(torch.int16)})
    state = metric.state().to(device)
    distributed.all_reduce_sum(state)
    metric.load_state(state.cpu())
    return metric.compute(), examples
