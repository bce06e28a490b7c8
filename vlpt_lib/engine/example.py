"""The smallest job: least-squares regression with the full engine contract.

Read this first when writing a job. It shows the pieces every job uses: the cfg dict, the seeded
device setup, rank-sharded data, DDP, a checkpoint per epoch and resume, progress, and a result
dict. It also backs the tests that compare torchrun with a single process and a resumed run with
an uninterrupted one.
"""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from . import checkpoint, distributed
from .device import pick_device, seed_everything
from .progress import bar


def make_data(n: int, dim: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 1, generator=g)
    return TensorDataset(x, x @ w + 0.1 * torch.randn(n, 1, generator=g))


def run(cfg: dict, run_dir) -> dict:
    seed_everything(cfg.get("seed", 0))
    device = pick_device(cfg.get("device", "auto"))
    data = make_data(cfg.get("n", 64), cfg.get("dim", 8), cfg.get("seed", 0))
    # Global batch = batch_size; each rank sees its shard, DDP averages gradients.
    sampler = distributed.shard(data, shuffle=False)
    loader = DataLoader(data, batch_size=cfg.get("batch_size", 16) // distributed.world_size(), sampler=sampler)
    model = torch.nn.Linear(cfg.get("dim", 8), 1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.get("lr", 0.1))
    start_epoch = 0
    state = checkpoint.restore(run_dir, model, opt)
    if state is not None:
        start_epoch = state["epoch"] + 1
    ddp_model = distributed.wrap_ddp(model, device)
    losses = []
    for epoch in bar(range(start_epoch, cfg.get("epochs", 3)), desc="example"):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(ddp_model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
        checkpoint.save(run_dir, {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch})
        time.sleep(cfg.get("sleep_per_epoch", 0.0))  # lets the resume test kill it mid-run
    return {"weight": model.weight.detach().cpu().flatten().tolist(), "bias": model.bias.item(),
            "resumed_from_epoch": start_epoch, "world_size": distributed.world_size(), "last_losses": losses}


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
