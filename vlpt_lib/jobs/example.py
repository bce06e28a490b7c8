"""The smallest job: least-squares regression, with the whole job contract.

Read this first when writing a job. A job module holds only what is its own: its `Config` (every
default in one place), its model, data and loss, and a `run(cfg, run_dir) -> dict`. The training loop,
DDP, checkpoints and resume come from `vlpt_lib.training`. It also backs the tests that compare
torchrun with a single process and a resumed run with an uninterrupted one.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import TensorDataset

from ..training import checkpoint, loop, optim
from ..utils import distributed
from ..utils.device import pick_device, seed_everything


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    device: str = "auto"
    n: int = 64
    dim: int = 8
    batch_size: int = 16          # global batch, split over DDP ranks
    epochs: int = 3
    lr: float = 0.1
    tag: str = ""                 # a label: changes the run's key, nothing else


def make_data(n: int, dim: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w = torch.randn(dim, 1, generator=g)
    return TensorDataset(x, x @ w + 0.1 * torch.randn(n, 1, generator=g))


def run(cfg: dict, run_dir) -> dict:
    cfg = Config.model_validate(cfg)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    data = make_data(cfg.n, cfg.dim, cfg.seed)
    model = torch.nn.Linear(cfg.dim, 1).to(device)
    opt = optim.create_optimizer(model, opt="momentum", lr=cfg.lr, momentum=0.0, filter_bias_and_bn=False)
    sched = optim.create_scheduler(opt, "constant", steps_per_epoch=1)
    previous = checkpoint.load(run_dir)  # only to report where this process started

    def step_fn(m, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y)

    history = loop.train(model, data, step_fn, opt, sched, run_dir, device=device, epochs=cfg.epochs,
                         batch_size=cfg.batch_size, seed=cfg.seed, desc="example")
    return {"weight": model.weight.detach().cpu().flatten().tolist(), "bias": model.bias.item(),
            "world_size": distributed.world_size(), "history": history,
            "resumed_from_epoch": previous["epoch"] + 1 if previous else 0}


if __name__ == "__main__":
    from .launch import job_main

    job_main(run)
