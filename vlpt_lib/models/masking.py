"""BEiT's block-wise masking: rectangles of patches until a fixed number of patches is masked.

The rule (BEiT, Bao et al. 2022, Algorithm 1; the same in beit/ and beit2/ of microsoft/unilm):
repeat { draw a target area s in [min_num_patches, remaining], an aspect ratio r with log r uniform
in [log a, log 1/a], a block of h = round(sqrt(s r)) by w = round(sqrt(s / r)) patches at a random
place; accept it if the number of NEW patches it covers is in (0, remaining] } until the target count
is reached or ten tries in a row add nothing. BEiT v2's generator then tops up (or trims) at random
positions so every mask holds exactly `num_masking_patches`; we do the same, so the loss of every
image averages over the same number of positions.

Each call takes a numpy Generator, so a mask is a pure function of its seed: the pre-training data
pipeline seeds it from (seed, epoch, sample index) and the masks do not depend on worker layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class BlockMaskGenerator:
    grid: tuple[int, int]                # (height, width) in patches, e.g. (14, 14)
    num_masking_patches: int             # e.g. 75 of 196 (about 40 %)
    min_num_patches: int = 16            # smallest block target area (BEiT: 16)
    max_num_patches: int | None = None   # largest block target area (BEiT: None = the remaining count)
    min_aspect: float = 0.3              # aspect ratio in [0.3, 1/0.3]
    max_aspect: float | None = None
    max_tries: int = 10                  # tries per block before giving up on blocks

    def __post_init__(self):
        if isinstance(self.grid, int):
            self.grid = (self.grid, self.grid)
        self.grid = tuple(int(g) for g in self.grid)
        h, w = self.grid
        if not 0 <= self.num_masking_patches <= h * w:
            raise ValueError(f"cannot mask {self.num_masking_patches} of {h * w} patches")
        max_aspect = self.max_aspect or 1.0 / self.min_aspect
        self.log_aspect = (math.log(self.min_aspect), math.log(max_aspect))
        self.last_blocks: list[tuple[int, int, int, int]] = []

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @classmethod
    def from_ratio(cls, grid, mask_ratio: float = 75 / 196, min_block_fraction: float = 16 / 196, **kw):
        """Scale BEiT's numbers (75 of 196, blocks >= 16) to another grid (mini models)."""
        grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        n = grid[0] * grid[1]
        return cls(grid, int(round(mask_ratio * n)), max(1, int(round(min_block_fraction * n))), **kw)

    def _add_block(self, mask: np.ndarray, max_new: int, rng: np.random.Generator) -> int:
        """Try to place one block that adds between 1 and max_new patches; return how many it added."""
        height, width = self.grid
        for _ in range(self.max_tries):
            # like random.uniform(a, b): also fine when the remaining count is below the minimum
            area = self.min_num_patches + (max_new - self.min_num_patches) * rng.random()
            aspect = math.exp(self.log_aspect[0] + (self.log_aspect[1] - self.log_aspect[0]) * rng.random())
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < height and 0 < w < width):
                continue
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            window = mask[top:top + h, left:left + w]
            new = h * w - int(window.sum())
            if 0 < new <= max_new:
                window[...] = True
                self.last_blocks.append((top, left, h, w))
                return new
        return 0

    def __call__(self, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """A (height, width) boolean mask with exactly num_masking_patches True entries."""
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        mask = np.zeros(self.grid, dtype=bool)
        self.last_blocks = []  # (top, left, h, w) of the blocks placed by this call (figures, tests)
        count = 0
        cap = self.max_num_patches or self.num_masking_patches
        while count < self.num_masking_patches:
            added = self._add_block(mask, min(self.num_masking_patches - count, cap), rng)
            if added == 0:
                break
            count += added
        if count < self.num_masking_patches:  # top up at random (as beit2 does): exact count
            free = np.flatnonzero(~mask)
            mask.flat[rng.choice(free, self.num_masking_patches - count, replace=False)] = True
        return mask

    def batch(self, n: int, seed: int = 0) -> np.ndarray:
        """n masks (n, height, width) from one seed (figures, tests, benchmarks)."""
        rng = np.random.default_rng(seed)
        return np.stack([self(rng) for _ in range(n)])
