"""Optimizer and learning-rate schedule factories: timm's, plus the Dassl schedule of the prompt jobs.

    opt = create_optimizer(model, opt="adamw", lr=lr, weight_decay=0.05, layer_decay=0.65, device=device)
    sched = create_scheduler(opt, "cosine", steps_per_epoch=len(loader), epochs=100, warmup_epochs=20, ...)
    sched.step_update(step)          # every iteration, before the optimizer step (timm's interface)

Schedules: "beit_cosine" = BEiT's cosine_scheduler (MVP pre-training and fine-tuning), "mmcv_poly"
(segmentation: mmcv's PolyLrUpdaterHook with its linear warm-up), "poly" (timm's), "dassl_cosine" (CoOp / CoCoOp).

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


class _PerStepLR:
    """A schedule given as lr(step); sets each group's lr (times its `lr_scale`) every iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def step_update(self, num_updates: int) -> None:
        lr = self.lr_at(num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def state_dict(self) -> dict:  # a pure function of the step: nothing to save
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class DasslCosine(_PerStepLR):
    """Dassl's "cosine" lr_scheduler with "constant" warm-up, stepped once per epoch (CoOp / CoCoOp configs).

    Dassl (dassl/optim/lr_scheduler.py) wraps CosineAnnealingLR(T_max=MAX_EPOCH) in a
    ConstantWarmupScheduler with WARMUP_RECOUNT=True (its default; no CoOp config changes it): epochs
    [0, warmup_epochs) run at `warmup_lr`, then the cosine starts again from its own epoch 0:
    lr(e) = 0.5 * lr * (1 + cos(pi * (e - warmup_epochs) / epochs)). With lr 0.002, 10 epochs, 1 warm-up
    epoch: 1e-5, 0.002, 0.00195, ..., 0.000191."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, epochs: int, steps_per_epoch: int,
                 warmup_epochs: int = 0, warmup_lr: float = 0.0):
        super().__init__(optimizer)
        self.lr, self.epochs = float(lr), int(epochs)
        self.steps_per_epoch, self.warmup_epochs, self.warmup_lr = max(1, steps_per_epoch), warmup_epochs, warmup_lr

    def lr_at_epoch(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return float(self.warmup_lr)
        return 0.5 * self.lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / self.epochs))

    def lr_at(self, step: int) -> float:
        return self.lr_at_epoch(step // self.steps_per_epoch)


class BeitCosine(_PerStepLR):
    """BEiT's `cosine_scheduler` (unilm beit/utils.py, also beit2), per iteration: a linear warm-up
    np.linspace(warmup_lr, lr, warmup_steps) (both ends included), then cosine from lr to min_lr over the
    remaining total_steps - warmup_steps iterations: min_lr + 0.5 (lr - min_lr)(1 + cos(pi i / n))."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, total_steps: int, warmup_steps: int = 0,
                 warmup_lr: float = 0.0, min_lr: float = 0.0):
        super().__init__(optimizer)
        self.lr, self.total, self.warmup = float(lr), int(total_steps), int(warmup_steps)
        self.warmup_lr, self.min_lr = float(warmup_lr), float(min_lr)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            if self.warmup == 1:
                return self.warmup_lr
            return self.warmup_lr + (self.lr - self.warmup_lr) * step / (self.warmup - 1)
        n = max(1, self.total - self.warmup)
        i = min(step - self.warmup, n - 1)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * i / n))


class MmcvPoly(_PerStepLR):
    """mmcv 1.3.0's PolyLrUpdaterHook(power, min_lr, by_epoch=False, warmup="linear", warmup_iters, warmup_ratio)
    (mmcv/runner/hooks/lr_updater.py), per group and per iteration: mmseg's segmentation schedules.

    The hook sets the lr before iteration i (runner.iter, from 0) from each group's initial lr b (here the
    schedule's lr times the group's `lr_scale`, as BEiT's LayerDecayOptimizerConstructor gives a group
    scale x lr): regular = (b - min_lr)(1 - i/total)^power + min_lr; during the warm-up (i < warmup_steps)
    regular x (1 - k), k = (1 - i/warmup_steps)(1 - warmup_ratio). So the warm-up multiplies the decaying poly
    value (not a line to the base lr) and starts at warmup_ratio x b; min_lr is not scaled per group."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, total_steps: int, power: float = 1.0,
                 min_lr: float = 0.0, warmup_steps: int = 0, warmup_ratio: float = 0.1):
        super().__init__(optimizer)
        self.lr, self.total, self.power, self.min_lr = float(lr), int(total_steps), float(power), float(min_lr)
        self.warmup, self.warmup_ratio = int(warmup_steps), float(warmup_ratio)

    def lr_at(self, step: int, scale: float = 1.0) -> float:
        base = self.lr * scale
        lr = (base - self.min_lr) * (1 - step / self.total) ** self.power + self.min_lr
        if step < self.warmup:
            lr = lr * (1 - (1 - step / self.warmup) * (1 - self.warmup_ratio))
        return lr

    def step_update(self, num_updates: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(num_updates, group.get("lr_scale", 1.0))


class ConstantLR(_PerStepLR):
    """The optimizer's lr, unchanged (the example job, tests)."""

    def step_update(self, num_updates: int) -> None:
        pass


def create_scheduler(optimizer: torch.optim.Optimizer, name: str = "cosine", *, steps_per_epoch: int,
                     epochs: float | None = None, total_steps: int | None = None, warmup_epochs: float = 0,
                     warmup_steps: int | None = None, warmup_lr: float = 0.0, min_lr: float = 0.0,
                     power: float = 1.0, warmup_prefix: bool = False, lr: float | None = None,
                     warmup_ratio: float = 0.1):
    """Per-iteration schedule: "cosine" / "poly" (timm; warm-up linear from warmup_lr), "beit_cosine"
    (BEiT's cosine_scheduler: pre-training and fine-tuning), "mmcv_poly" (mmcv's poly with its linear warm-up
    from warmup_ratio x the poly lr: segmentation), "dassl_cosine" (the prompt jobs) or "constant".

    Length: `total_steps`, else `epochs * steps_per_epoch`. Warm-up: `warmup_steps`, else
    `warmup_epochs * steps_per_epoch`. warmup_prefix=False: the decay spans the whole run including
    the warm-up (timm's default); True: the decay starts after the warm-up and spans the rest."""
    if name == "constant":
        return ConstantLR(optimizer)
    base_lr = lr if lr is not None else optimizer.param_groups[0]["lr"]
    if name == "dassl_cosine":
        return DasslCosine(optimizer, lr=base_lr, epochs=int(epochs), steps_per_epoch=steps_per_epoch,
                           warmup_epochs=int(warmup_epochs), warmup_lr=warmup_lr)
    total = int(total_steps) if total_steps is not None else max(1, int(epochs * steps_per_epoch))
    warm = int(warmup_steps) if warmup_steps is not None else int(warmup_epochs * steps_per_epoch)
    if name == "beit_cosine":
        return BeitCosine(optimizer, lr=base_lr, total_steps=total, warmup_steps=warm, warmup_lr=warmup_lr,
                          min_lr=min_lr)
    if name == "mmcv_poly":
        return MmcvPoly(optimizer, lr=base_lr, total_steps=total, power=power, min_lr=min_lr, warmup_steps=warm,
                        warmup_ratio=warmup_ratio)
    warm = min(warm, total - 1)
    t_initial = total - warm if warmup_prefix else total
    common = dict(t_initial=max(1, t_initial), warmup_t=warm, warmup_lr_init=float(warmup_lr), lr_min=float(min_lr),
                  t_in_epochs=False, warmup_prefix=warmup_prefix)
    if name == "poly":
        return PolyLRScheduler(optimizer, power=float(power), **common)
    if name == "cosine":
        return CosineLRScheduler(optimizer, **common)
    raise ValueError(f"unknown lr schedule {name!r}; expected cosine, poly, beit_cosine, mmcv_poly, dassl_cosine or "
                     "constant")
