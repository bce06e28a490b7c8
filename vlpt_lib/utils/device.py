"""Device, precision and seeding: the three things every job sets up first."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def pick_device(pref: str = "auto") -> torch.device:
    """"auto" -> this rank's CUDA device when there is one, else CPU."""
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    device = torch.device(pref)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {pref!r} was asked for but torch sees no CUDA GPU")
    return device


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. CPU runs fp32; CUDA defaults to bf16."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, precision: str = "auto"):
    dtype = amp_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler:
    """fp16 needs loss scaling; bf16 and fp32 get a disabled scaler so the loop stays the same."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device, precision) is torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def limit_cpu_threads(n: int | None) -> None:
    """Cap intra-op threads (small CPU jobs run faster without oversubscription)."""
    if n:
        torch.set_num_threads(n)
