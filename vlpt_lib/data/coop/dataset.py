"""What a loaded CoOp dataset is: its items (Datum), the dataset with its splits and class names
(CoopDataset), and the torch Dataset that opens the images (ImageListDataset, open_image).

Readers build these, the few-shot and base/new rules transform them, the jobs feed them to a DataLoader;
open_image is shared by every reader of images in vlpt_lib.data (one-line DatasetError per bad file).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .. import DatasetError
from .specs import FOLDER_SPLIT_NOTE

class Datum(NamedTuple):
    impath: str
    label: int
    classname: str


@dataclass
class CoopDataset:
    name: str
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    classnames: list[str]
    template: str
    dataset_dir: Path | None = None
    subsample: str = "all"
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def split_source(self) -> str:
        """"official" (CoOp's split files / lists / folders) or "folder" (drawn from class folders)."""
        return self.meta.get("split_source", "official")

    @property
    def label(self) -> str:
        """The name the result rows carry: "<Name> (folder split)" when the split is not the official one."""
        return self.name + (FOLDER_SPLIT_NOTE if self.split_source == "folder" else "")

    def prompts(self) -> list[str]:
        return [self.template.format(c) for c in self.classnames]


def open_image(path: str | os.PathLike):
    """PIL RGB image, or a one-line DatasetError naming the file when it is missing or cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}", path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        reason = str(err) or type(err).__name__
        raise DatasetError(f"cannot read image {path}: {reason}; re-download or delete it", path) from None


class ImageListDataset(Dataset):
    """A torch Dataset over Datum lists returning (transform(image), label)."""

    def __init__(self, items: list[Datum], transform: Callable | None = None):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        d = self.items[i]
        img = open_image(d.impath)
        if self.transform is not None:
            img = self.transform(img)
        else:
            img = TF.to_tensor(img)
        return img, d.label
