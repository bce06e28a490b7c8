"""DDP in the way torchrun sets it up (env://); every helper is a no-op in a single process."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from .device import pick_device


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group when torchrun (or SLURM via submitit) launched several processes."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
    return DistInfo(rank(), world_size(), local_rank, dev)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def wrap_ddp(model: torch.nn.Module, device: torch.device, **kw) -> torch.nn.Module:
    if not is_dist():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **kw)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def shard(dataset, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DistributedSampler | None:
    """A per-rank sampler under DDP, None otherwise (the DataLoader then shuffles itself)."""
    if not is_dist():
        return None
    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
