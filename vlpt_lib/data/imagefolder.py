"""ImageNet in its folder layout, for MVP pre-training and fine-tuning.

    <root>/images/train/<wnid>/*.JPEG
    <root>/images/val/<wnid>/*.JPEG
    <root>/classnames.txt            "<wnid> <class name>" per line

Labels are the sorted wnids of classnames.txt (the usual ImageNet order); a split missing one of
those class folders, or holding one that is not in the file, is an error (labels would shift).
`root` is the imagenet folder; a data root that holds imagenet/ works too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset, Subset

from . import DatasetError, require
from .coop import DATASETS, class_folder_order, open_image, read_classnames, scan_folders

SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "val"}


def imagenet_root(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if not (root / "images").is_dir() and (root / "imagenet" / "images").is_dir():
        return root / "imagenet"
    return root


class ImageNetFolder(Dataset):
    """(transform(image), label) over images/<split>/<wnid>/*; `.classnames`, `.targets`, `.samples`."""

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        layout = DATASETS["ImageNet"].layout()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, not {split!r}")
        self.root = imagenet_root(root)
        require(self.root, "ImageNet folder", layout, "dir")
        names_file = self.root / "classnames.txt"
        names = read_classnames(names_file, layout)
        image_dir = require(self.root / "images" / SPLITS[split], f"ImageNet {split} folder", layout, "dir")
        folders = scan_folders(image_dir, self.root / f"scan_{SPLITS[split]}.json")
        if not folders:
            raise DatasetError(f"no class folders under {image_dir}", image_dir, layout)
        self.wnids = class_folder_order(image_dir, [w for w, _ in folders], names, names_file,
                                        f"ImageNet {SPLITS[split]}", layout)
        self.classnames = [names[w] for w in self.wnids]
        label_of = {w: i for i, w in enumerate(self.wnids)}
        self.samples = [(str(image_dir / w / f), label_of[w]) for w, files in folders for f in files]
        if not self.samples:
            raise DatasetError(f"no images under {image_dir}", image_dir, layout)
        self.targets = [label for _, label in self.samples]
        self.split = SPLITS[split]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = open_image(path)
        if self.transform is not None:
            img = self.transform(img)
        else:
            img = TF.to_tensor(img)
        return img, label


def limit(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset of `n` items (kept in index order), or the whole dataset when n is None/0/too big."""
    if not n or n >= len(dataset):
        return dataset
    idx = np.random.default_rng(seed).permutation(len(dataset))[:n]
    return Subset(dataset, sorted(idx.tolist()))
