"""ADE20K (SceneParsing, ADEChallengeData2016) for semantic segmentation.

    ADEChallengeData2016/
      images/{training,validation}/ADE_*.jpg
      annotations/{training,validation}/ADE_*.png     (0 = other/ignore, 1..150 = classes)
      objectInfo150.txt                               (optional: class names; else the 150 below)

With reduce_zero_label (the MVP/BEiT setting) label 0 becomes 255 (ignored) and the others shift
down by one, so the classes are 0..K-1. Each pair is checked when it is read (cheap, per item): a
mask whose size differs from its image, with values outside 0..K, or with more than one channel (a
coloured visualisation; the first mask's header is also checked when the dataset is built) is a
DatasetError naming the file(s), for training and evaluation alike. `transforms` is a joint callable
(image, mask) -> (image, mask); torchvision.transforms.v2 pipelines work as is (the mask arrives as
tv_tensors.Mask).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import DatasetError, require
from .coop import open_image

IGNORE_INDEX = 255
LAYOUT = """<data root>/
  ADEChallengeData2016/
    images/training/ADE_train_00000001.jpg ...
    images/validation/ADE_val_00000001.jpg ...
    annotations/training/ADE_train_00000001.png ...   (same stem, uint8 labels, 0 = other)
    annotations/validation/ADE_val_00000001.png ...
    objectInfo150.txt   (optional)"""
SPLITS = {"training": "training", "train": "training", "validation": "validation", "val": "validation"}

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
assert len(ADE20K_CLASSES) == 150


def ade_root(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if root.name != "ADEChallengeData2016" and (root / "ADEChallengeData2016").is_dir():
        return root / "ADEChallengeData2016"
    return root


def read_object_info(path: Path) -> list[str]:
    """Class names from objectInfo150.txt (tab-separated Idx, Ratio, Train, Val, Name; first synonym)."""
    names = []
    for n, line in enumerate(path.read_text().splitlines()):
        cols = line.rstrip("\n").split("\t")
        if n == 0 and cols[0].strip().lower() == "idx":
            continue
        if len(cols) < 5:
            raise DatasetError(f"malformed line {n + 1} in {path}: {line!r}", path, LAYOUT)
        names.append(cols[4].split(";")[0].strip())
    return names


class ADE20K(Dataset):
    """(image, mask) pairs; without `transforms`: float image tensor (3,H,W) in [0,1] and long mask (H,W)."""

    def __init__(self, root: str | os.PathLike, split: str = "training", transforms: Callable | None = None,
                 reduce_zero_label: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, not {split!r}")
        self.root = require(ade_root(root), "ADEChallengeData2016 folder", LAYOUT, "dir")
        self.split = SPLITS[split]
        img_dir = require(self.root / "images" / self.split, f"ADE20K {self.split} image folder", LAYOUT, "dir")
        ann_dir = require(self.root / "annotations" / self.split, f"ADE20K {self.split} annotation folder", LAYOUT, "dir")
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() == ".jpg")
        if not images:
            raise DatasetError(f"no .jpg images in {img_dir}", img_dir, LAYOUT)
        self.samples = []
        for p in images:
            ann = ann_dir / (p.stem + ".png")
            if not ann.is_file():
                raise DatasetError(f"annotation missing for {p.name}: {ann}", ann, LAYOUT)
            self.samples.append((str(p), str(ann)))
        open_image_mask(self.samples[0][1], header_only=True)  # a coloured export is refused here, not in a worker
        info = self.root / "objectInfo150.txt"
        self.classnames = read_object_info(info) if info.is_file() else list(ADE20K_CLASSES)
        self.num_classes = len(self.classnames)
        self.ignore_index = IGNORE_INDEX
        self.reduce_zero_label = reduce_zero_label
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.samples)

    def load_mask(self, i: int) -> np.ndarray:
        path = self.samples[i][1]
        mask = np.asarray(open_image_mask(path), dtype=np.uint8)
        if mask.max(initial=0) > self.num_classes:  # would crash the loss ("Target 199 is out of bounds")
            bad = np.unique(mask[mask > self.num_classes]).tolist()
            raise DatasetError(f"ADE20K annotation {path} has values {bad[:10]} outside 0..{self.num_classes} "
                               f"(0 = other, 1..{self.num_classes} = classes); fix or delete the file", path)
        if self.reduce_zero_label:
            mask = mask.astype(np.int16) - 1
            mask[mask < 0] = IGNORE_INDEX
            mask = mask.astype(np.uint8)
        return mask

    def __getitem__(self, i: int):
        image_path, mask_path = self.samples[i]
        image = open_image(image_path)
        mask = self.load_mask(i)
        if mask.shape != (image.height, image.width):  # never stretch a label map onto another image
            raise DatasetError(f"ADE20K mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                               f"{image_path} is {image.width}x{image.height}; the pair must have the same size "
                               "(re-download or delete both)", mask_path)
        mask = torch.from_numpy(mask.astype(np.int64))
        if self.transforms is not None:
            from torchvision import tv_tensors
            image, mask = self.transforms(image, tv_tensors.Mask(mask))
            if isinstance(mask, torch.Tensor):
                mask = mask.as_subclass(torch.Tensor).long()
            return image, mask
        import torchvision.transforms.functional as F
        return F.to_tensor(image), mask


def _require_label_map(im, path) -> None:
    """A multi-channel annotation is a coloured rendering, not class indices: converting it to grey would
    turn colours into arbitrary labels, so it is refused (the mode comes from the header, no decoding)."""
    bands = im.getbands()
    if len(bands) != 1:
        raise DatasetError(f"ADE20K annotation {path} is a {len(bands)}-channel {im.mode} image; expected a "
                           f"single-channel PNG of class indices 0-{len(ADE20K_CLASSES)}, as ADEChallengeData2016 "
                           "ships; a coloured visualisation is not a label map (use the file from the dataset "
                           "archive)", path)


def open_image_mask(path: str, header_only: bool = False):
    """The annotation as a single-channel PIL image; header_only: check its mode without decoding it."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            _require_label_map(im, path)
            if header_only:
                return None
            im.load()
            return im if im.mode in ("L", "P") else im.convert("L")
    except FileNotFoundError:
        raise DatasetError(f"annotation not found: {path}", path, LAYOUT) from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = str(err) or type(err).__name__
        raise DatasetError(f"cannot read annotation {path}: {reason}; re-download or delete it", path) from None
