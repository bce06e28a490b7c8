"""Evaluation metrics of the workbook's tables: top-1 accuracy and ADE20K mIoU.

mIoU follows the mmsegmentation definition that BEiT/MVP report: per class, sum the intersection
and the union of prediction and ground truth over the WHOLE dataset (not per image), IoU = I / U;
classes with an empty union (absent in both) are NaN and left out of the mean; pixels labelled
`ignore_index` (255, which is where ADE20K's label 0 "other" goes under reduce_zero_label) are not
counted.
"""
from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = 255


def reduce_zero_label(label: torch.Tensor | np.ndarray):
    """ADE20K's 'reduce zero label': 0 -> 255 (ignored), k -> k - 1 for k in 1..150, 255 stays 255."""
    if isinstance(label, np.ndarray):
        out = label.astype(np.int64) - 1
        out[(label == 0) | (label == 255)] = IGNORE_INDEX
        return out.astype(label.dtype) if label.dtype == np.uint8 else out
    out = label.long() - 1
    out[(label == 0) | (label == 255)] = IGNORE_INDEX
    return out.to(label.dtype) if label.dtype == torch.uint8 else out


def intersect_and_union(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                        ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, ...]:
    """Per-class pixel counts (intersection, union, predicted, labelled) for one batch, int64."""
    pred, target = torch.as_tensor(pred).flatten().long(), torch.as_tensor(target).flatten().long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    inter = torch.bincount(pred[pred == target], minlength=num_classes)[:num_classes]
    area_pred = torch.bincount(pred[(pred >= 0) & (pred < num_classes)], minlength=num_classes)[:num_classes]
    area_label = torch.bincount(target, minlength=num_classes)[:num_classes]
    return inter, area_pred + area_label - inter, area_pred, area_label


class MeanIoU:
    """Accumulates dataset-wide intersections and unions; `compute()` -> dict with miou (percent)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def reset(self):
        z = lambda: torch.zeros(self.num_classes, dtype=torch.int64)  # noqa: E731
        self.inter, self.union, self.area_pred, self.area_label = z(), z(), z(), z()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        i, u, p, l = intersect_and_union(pred.cpu(), target.cpu(), self.num_classes, self.ignore_index)
        self.inter += i
        self.union += u
        self.area_pred += p
        self.area_label += l

    def state(self) -> torch.Tensor:
        """The four count vectors stacked (4, C): all-reduce it under DDP, then `load_state`."""
        return torch.stack([self.inter, self.union, self.area_pred, self.area_label])

    def load_state(self, state: torch.Tensor) -> None:
        self.inter, self.union, self.area_pred, self.area_label = (s.clone() for s in state.long().cpu())

    def compute(self) -> dict:
        iou = self.inter.double() / self.union.double()            # NaN where union == 0
        acc = self.inter.double() / self.area_label.double()
        total = self.area_label.sum().item()
        return {
            "miou": float(np.nanmean(iou.numpy()) * 100) if torch.isfinite(iou).any() else float("nan"),
            "macc": float(np.nanmean(acc.numpy()) * 100) if torch.isfinite(acc).any() else float("nan"),
            "aacc": float(self.inter.sum().item() / total * 100) if total else float("nan"),
            "per_class_iou": [None if not np.isfinite(v) else float(v * 100) for v in iou.tolist()],
        }


def mean_iou(preds, targets, num_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """mIoU (percent) over a list of (pred, target) label maps, dataset-wide I and U."""
    metric = MeanIoU(num_classes, ignore_index)
    for p, t in zip(preds, targets):
        metric.update(torch.as_tensor(p), torch.as_tensor(t))
    return metric.compute()["miou"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int = 1) -> int:
    """How many rows have the target among the k highest logits."""
    top = logits.topk(k, dim=-1).indices
    return int((top == target.view(-1, 1)).any(dim=-1).sum().item())
