"""Optimizer and learning-rate schedule factories: timm's, plus the Dassl schedule of the prompt jobs.

    opt = create_optimizer(model, opt="adamw", lr=lr, weight_decay=0.05, layer_decay=0.65, device=device)
    sched = create_scheduler(opt, "cosine", steps_per_epoch=len(loader), epochs=100, warmup_epochs=20, ...)
    sched.step_update(step)          # every iteration, before the optimizer step (timm's interface)

Weight-decay rule (timm's `create_optimizer_v2`): no decay on 1-D parameters (biases, norms, layer
scales), on names ending in ".bias" and on `model.no_weight_decay()`; `layer_decay` groups the layers
through `model.group_matcher` (BEiT's layer-wise lr decay). Explicit parameter groups pass through.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, PolyLRScheduler


def scaled_lr(lr: float, batch_size: int, lr_ref_batch: int | None = None) -> float:
    """The lr actually used: `lr` is quoted at `lr_ref_batch` and scales linearly with the global batch."""
    return float(lr) * batch_size / (lr_ref_batch or batch_size)


def create_optimizer(model_or_groups: torch.nn.Module | Iterable, *, opt: str = "adamw", lr: float,
                     weight_decay: float = 0.0, layer_decay: float | None = None, betas=None, eps: float | None = None,
                     momentum: float = 0.9, filter_bias_and_bn: bool = True, fused: bool = True,
                     device: torch.device | None = None) -> torch.optim.Optimizer:
    """timm's create_optimizer_v2 (opt: "adamw", "momentum" = SGD without Nesterov, ...); fused AdamW on CUDA."""
    kw = {}
    if betas is not None:
        kw["betas"] = tuple(betas)
    if eps is not None:
        kw["eps"] = float(eps)
    if opt == "adamw" and fused and device is not None and device.type == "cuda":
        kw["fused"] = True
    return create_optimizer_v2(model_or_groups, opt=opt, lr=lr, weight_decay=weight_decay, momentum=momentum,
                               layer_decay=layer_decay, filter_bias_and_bn=filter_bias_and_bn, **kw)


class DasslCosine:
    """Dassl's "cosine" lr_scheduler with "constant" warm-up, per epoch (CoOp / CoCoOp configs).

    Epochs [0, warmup_epochs) run at `warmup_lr`; then lr(e) = 0.5 * lr * (1 + cos(pi * e / epochs)),
    the cosine counted from epoch 0 over all `epochs` (today's rule; see the README for Dassl's
    WARMUP_RECOUNT). Same interface as timm's schedulers: step_update(step) each iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, epochs: int, steps_per_epoch: int,
                 warmup_epochs: int = 0, warmup_lr: float = 0.0):
        self.optimizer, self.lr, self.epochs = optimizer, float(lr), int(epochs)
        self.steps_per_epoch, self.warmup_epochs, self.warmup_lr = max(1, steps_per_epoch), warmup_epochs, warmup_lr

    def lr_at_epoch(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return float(self.warmup_lr)
        return 0.5 * self.lr * (1 + math.cos(math.pi * epoch / self.epochs))

    def step_update(self, num_updates: int) -> None:
        lr = self.lr_at_epoch(num_updates // self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ConstantLR:
    """The optimizer's lr, unchanged (the example job, tests)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def step_update(self, num_updates: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def create_scheduler(optimizer: torch.optim.Optimizer, name: str = "cosine", *, steps_per_epoch: int,
                     epochs: float | None = None, total_steps: int | None = None, warmup_epochs: float = 0,
                     warmup_steps: int | None = None, warmup_lr: float = 0.0, min_lr: float = 0.0,
                     power: float = 1.0, warmup_prefix: bool = False, lr: float | None = None):
    """Per-iteration schedule: "cosine" / "poly" (timm; warm-up linear from warmup_lr), "dassl_cosine"
    or "constant".

    Length: `total_steps`, else `epochs * steps_per_epoch`. Warm-up: `warmup_steps`, else
    `warmup_epochs * steps_per_epoch`. warmup_prefix=False: the decay spans the whole run including
    the warm-up (timm's default); True: the decay starts after the warm-up and spans the rest."""
    if name == "constant":
        return ConstantLR(optimizer)
    if name == "dassl_cosine":
        return DasslCosine(optimizer, lr=lr if lr is not None else optimizer.param_groups[0]["lr"],
                           epochs=int(epochs), steps_per_epoch=steps_per_epoch, warmup_epochs=int(warmup_epochs),
                           warmup_lr=warmup_lr)
    total = int(total_steps) if total_steps is not None else max(1, int(epochs * steps_per_epoch))
    warm = int(warmup_steps) if warmup_steps is not None else int(warmup_epochs * steps_per_epoch)
    warm = min(warm, total - 1)
    t_initial = total - warm if warmup_prefix else total
    common = dict(t_initial=max(1, t_initial), warmup_t=warm, warmup_lr_init=float(warmup_lr), lr_min=float(min_lr),
                  t_in_epochs=False, warmup_prefix=warmup_prefix)
    if name == "poly":
        return PolyLRScheduler(optimizer, power=float(power), **common)
    if name == "cosine":
        return CosineLRScheduler(optimizer, **common)
    raise ValueError(f"unknown lr schedule {name!r}; expected cosine, poly or dassl_cosine")
