"""In-memory synthetic data for tests and benchmarks (no files): smooth images, rectangle scenes.

Every item is a pure function of (seed, index), so two processes (or a resumed run) see the same data.
Unlike the generated worlds (vlpt_lib.worlds) nothing is written to disk: the jobs select these datasets
themselves through their data spec (`data.kind = "synthetic"`), also in a launched torchrun process, so
they live here beside the readers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..utils.metrics import IGNORE_INDEX


class SyntheticImages(Dataset):
    """Random smooth images in [0, 1] with labels `i % num_classes`; normalised when mean/std are given."""

    def __init__(self, n: int, size: int, num_classes: int = 4, seed: int = 0, mean=None, std=None):
        self.n, self.size, self.num_classes, self.seed = n, size, num_classes, seed
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        low = torch.rand(1, 3, 4, 4, generator=g)
        img = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        if self.mean is not None:
            img = (img - self.mean) / self.std
        return img, i % self.num_classes


class SyntheticScenes(Dataset):
    """Random rectangles on a background, labels 0..k-1 and an ignored (255) band; `transform(img, mask)`."""

    def __init__(self, n: int, size: int, num_classes: int, transform: Callable, seed: int = 0):
        self.n, self.size, self.k, self.transform, self.seed = n, size, num_classes, transform, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, i])
        img = np.full((self.size, self.size, 3), 30, np.uint8)
        mask = np.zeros((self.size, self.size), np.uint8)
        for c in range(1, self.k):
            y, x = rng.integers(0, self.size // 2, 2)
            s = int(rng.integers(self.size // 4, self.size // 2))
            img[y:y + s, x:x + s] = (40 * c) % 255
            mask[y:y + s, x:x + s] = c
        mask[:2] = IGNORE_INDEX
        return self.transform(img, mask)
