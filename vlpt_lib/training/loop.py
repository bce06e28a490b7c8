"""The one training loop every job uses.

    history = train(model, train_set, step_fn, optimizer, scheduler, run_dir, device=device,
                    epochs=10, batch_size=256, seed=0)

`step_fn(model, batch) -> loss` (or a dict with "loss" and other scalars to log) is all a job writes:
its forward pass and loss. The loop owns the rest: the data order, AMP, gradient clipping, the
per-iteration schedule, logging averaged over all ranks, `metrics.jsonl`, checkpoints and resume.

Reproducible resume: the data order and every random draw of an epoch come from (seed, epoch, rank)
alone (the sampler's permutation, the loader's worker seeds and the global RNGs are re-seeded at the
start of each epoch), and a checkpoint (model, optimizer, loss scaler, scheduler, step, history) is
written at the end of each epoch. A run killed at any point restarts from its last finished epoch
and then matches the uninterrupted run exactly.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..utils import distributed
from ..utils.device import autocast, grad_scaler, seed_everything
from ..utils.progress import bar, get_logger
from . import checkpoint


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (int(seed) * 1_000_003 + epoch * 1_009 + rank) % 2**31


class EpochSampler(Sampler):
    """This rank's indices of one epoch: a permutation seeded by (seed, epoch), cut to a multiple of
    the world size (drop_last) or padded by wrapping around, then strided by rank."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, drop_last: bool = True):
        self.n, self.seed, self.shuffle, self.drop_last = n, int(seed), shuffle, drop_last
        self.world, self.rank, self.epoch = distributed.world_size(), distributed.rank(), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch)))
            order = order.tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            order = order[:self.n - self.n % self.world]
        elif self.n % self.world:
            order += order[:self.world - self.n % self.world]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        per = self.n // self.world if self.drop_last else math.ceil(self.n / self.world)
        return per


def per_rank_batch(global_batch: int) -> int:
    world = distributed.world_size()
    if global_batch % world:
        raise ValueError(f"the global batch {global_batch} does not split evenly over {world} processes; "
                         f"choose a batch_size divisible by {world}")
    return global_batch // world


def make_loader(dataset: Dataset, *, batch_size: int, seed: int, drop_last: bool, num_workers: int = 0,
                device: torch.device | None = None, collate_fn=None) -> DataLoader:
    """The training loader: EpochSampler order, global `batch_size` split over ranks."""
    sampler = EpochSampler(len(dataset), seed, shuffle=True, drop_last=drop_last)
    return DataLoader(dataset, batch_size=per_rank_batch(batch_size), sampler=sampler, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=device is not None and device.type == "cuda",
                      generator=torch.Generator().manual_seed(int(seed)), collate_fn=collate_fn)


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def train(model: torch.nn.Module, train_set: Dataset, step_fn: Callable, optimizer: torch.optim.Optimizer,
          scheduler, run_dir: str | Path, *, device: torch.device, epochs: int, batch_size: int, seed: int,
          max_steps: int | None = None, drop_last: bool = True, clip_grad: float | None = None,
          precision: str = "auto", num_workers: int = 0, state_module: torch.nn.Module | None = None,
          ddp_kwargs: dict | None = None, compile: bool = False, after_step: Callable | None = None,
          after_epoch: Callable[[int], None] | None = None,
          evaluate: Callable | None = None, eval_every: int = 1, desc: str = "train", collate_fn=None,
          loader: DataLoader | None = None) -> list[dict]:
    """Train for `epochs` (stopping early at `max_steps` optimizer steps); returns the per-epoch history.

    state_module: what the checkpoint saves and restores (default `model`; the prompt jobs save only
    their prompt learner, not the frozen CLIP). evaluate(model) -> dict of metrics, run after every
    `eval_every`-th epoch and the last one. after_step(): e.g. clamping CLIP's logit scale. after_epoch(epoch):
    after an epoch's last batch, before its checkpoint (e.g. an average of the weights over epochs); an epoch
    cut short by max_steps does not call it."""
    run_dir = Path(run_dir)
    log = get_logger()
    state_module = state_module or model
    loader = loader or make_loader(train_set, batch_size=batch_size, seed=seed, drop_last=drop_last,
                                   num_workers=num_workers, device=device, collate_fn=collate_fn)
    if len(loader) == 0:
        raise ValueError(f"{desc}: {len(train_set)} training samples are fewer than one batch of {batch_size}")
    scaler = grad_scaler(device, precision)
    params = [p for p in model.parameters() if p.requires_grad]

    start_epoch, step, history = 0, 0, []
    state = checkpoint.restore(run_dir, state_module, optimizer, scaler, scheduler)
    if state is not None:
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        log.info("%s: resumed after epoch %d (step %d)", desc, state["epoch"] + 1, step)
    train_model = distributed.wrap_ddp(model, device, **(ddp_kwargs or {}))
    if compile:
        train_model = torch.compile(train_model)
    total_steps = min(epochs * len(loader), max_steps or epochs * len(loader))
    t0 = time.time() - (history[-1]["elapsed_s"] if history else 0.0)

    for epoch in range(start_epoch, epochs):
        if step >= total_steps:
            break
        # Everything random in this epoch follows from (seed, epoch, rank): resume = uninterrupted run.
        seed_everything(epoch_seed(seed, epoch, distributed.rank()))
        loader.sampler.set_epoch(epoch)
        if loader.generator is not None:
            loader.generator.manual_seed(epoch_seed(seed, epoch))
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        batches = 0
        # counted by hand: a bar iterated over the loader would count a batch only when the next is asked for, so
        # a planned stop after the last step would close it one short, which Lab draws red (as if interrupted)
        progress = bar(total=len(loader), desc=f"{desc} {epoch + 1}/{epochs}", leave=False)
        for batch in loader:
            scheduler.step_update(step)
            with autocast(device, precision):
                out = step_fn(train_model, _to_device(batch, device))
            out = out if isinstance(out, dict) else {"loss": out}
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step} (lower the lr, or run in "
                                         "fp32: precision=fp32)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, float(clip_grad))
            scaler.step(optimizer)
            scaler.update()
            if after_step is not None:
                after_step()
            for k, v in out.items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
                sums[k] = sums.get(k, torch.zeros((), device=device)) + v.to(device)
            batches += 1
            step += 1
            progress.update(1)
            if step >= total_steps:  # a planned stop (max_steps) mid-epoch: the bar ends here, full
                progress.total = progress.n
                break
        progress.close()
        if after_epoch is not None and batches == len(loader):
            after_epoch(epoch)
        # Averages over every rank's batches (not only rank 0's).
        keys = sorted(sums)
        stats = torch.stack([sums[k] for k in keys] + [torch.tensor(float(batches), device=device)])
        distributed.all_reduce_sum(stats)
        rec = {"epoch": epoch + 1, "step": step, **{k: float(stats[i] / stats[-1]) for i, k in enumerate(keys)},
               "lr": max(g["lr"] for g in optimizer.param_groups), "elapsed_s": round(time.time() - t0, 2)}
        last = epoch + 1 == epochs or step >= total_steps
        if evaluate is not None and ((epoch + 1) % max(1, eval_every) == 0 or last):
            rec.update(evaluate(model))
        history.append(rec)
        log.info("%s", epoch_line(desc, epochs, rec))
        write_metrics(run_dir, rec)
        state = {"model": state_module.state_dict(), "epoch": epoch, "step": step, "history": history, "seed": seed}
        if not last:  # only an unfinished run resumes; a finished one keeps no optimizer state (AdamW's: twice the model)
            state.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), scheduler=scheduler.state_dict())
        checkpoint.save(run_dir, state, keep_previous=not last)
    return history


def epoch_line(desc: str, epochs: int, rec: dict) -> str:
    """One readable line per epoch, numbers in a form that shows their magnitude (the lr in powers of ten: a Dassl
    warm-up's 1e-5 rounded to 4 decimals read 0.0): "CoOp OxfordPets · epoch 2/10 · loss 1.934 · acc 25 ·
    lr 2.0e-03 · 0.6 s"."""
    parts = [f"{desc} · epoch {rec['epoch']}/{epochs}"]
    parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()
              if k not in ("epoch", "step", "lr", "elapsed_s") and not isinstance(v, (list, dict))]
    return " · ".join(parts + [f"lr {rec['lr']:.1e}", f"{rec['elapsed_s']:.1f} s"])


def write_metrics(run_dir: Path, rec: dict) -> None:
    """Append one line to run_dir/metrics.jsonl (rank 0): `tail -f` follows a days-long run."""
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec, default=float) + "\n")
