"""The allowed values of config fields, one type per kind of value, so a bad value is refused when a config is
validated (before anything runs) with the key, the value and what is allowed.

    epochs: Count = Field(300, description="...")     # 0 or -1 epochs would train nothing and still evaluate
"""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

Count = Annotated[int, Field(ge=1)]                 # epochs, iterations, batch sizes, shots, tokens, images
Index = Annotated[int, Field(ge=0)]                 # seeds, DataLoader workers, warm-up lengths in steps
Positive = Annotated[float, Field(gt=0)]            # learning rates, eps, loss scales
NonNegative = Annotated[float, Field(ge=0)]         # weight decay, warm-up lr, loss weights, warm-up epochs
Probability = Annotated[float, Field(ge=0, le=1)]   # probabilities, ratios, momentum-like factors
Precision = Literal["auto", "fp32", "bf16", "fp16"]  # utils.device.amp_dtype


def _device(name: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ValueError("expected auto, cpu, mps, cuda or cuda:<index>")
    return name


Device = Annotated[str, AfterValidator(_device)]     # utils.device.pick_device


def refusal(error: dict) -> str:
    """What a pydantic error says is allowed, to end a sentence: its message without pydantic's "Value error, "
    prefix, the first letter in lower case ("input should be greater than or equal to 1")."""
    why = error["msg"].removeprefix("Value error, ")
    return why[:1].lower() + why[1:]
