"""The paper world: a synthetic data root shaped exactly like the real one the paper profile reads,
for the dry run (`reproduce --profile paper --dry-run`). Same folders, file formats and class counts as
the real datasets, a few tiny images per class, so every loader and job runs at the paper's shape.

    ensure_paper_world(root)          # generates once; a second call is a no-op (stamp), force=True redoes it

What it holds (the layouts of `coop.DATASETS`, `imagefolder.ImageNetFolder` and `ade20k.ADE20K`):

    imagenet/images/{train,val}/<wnid>/*.JPEG + classnames.txt    1000 classes (2 train, 1 val each)
    imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/    1000 classes
    imagenet-sketch/images/<wnid>/                                  1000 classes
    imagenet-adversarial/imagenet-a/<wnid>/, imagenet-rendition/imagenet-r/<wnid>/   200 classes each
    caltech-101 (100 + BACKGROUND_Google, Faces_easy), oxford_pets (37), stanford_cars (196),
    oxford_flowers (102), food-101 (101), sun397 (397), dtd (47), eurosat (10), ucf101 (101):
        images + split_zhou_<Name>.json (2 train, 2 val, 2 test per class)
    fgvc_aircraft/images/ + images_variant_{train,val,test}.txt + variants.txt   100 variants
    ADEChallengeData2016/{images,annotations}/{training,validation}/ + objectInfo150.txt
        8 + 4 scenes at ADE20K's own sizes (512x683, 683x512, ...), masks 0..150 (0 = other)

Class names: ImageNet's 1000 are the real ones (open_clip's names, timm's wnid list), and so are the
ImageNet-A and -R 200-class subsets (timm ships both wnid lists; should a timm version not, a seeded
200 of the 1000 stands in, which is NOT the real list), ADE20K's 150 and EuroSAT's 10. The other
datasets get stand-in names of realistic length: the 1-4 plain-word names among CLIP's ImageNet class
names (a vetted list; WordNet's own lemmas include slurs), drawn per dataset with a fixed seed, unique
within a dataset.
The images are coloured noise: numbers measured on this world mean nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import pkgutil
import re
import time
import zlib
from itertools import count
from pathlib import Path
from typing import Callable

import numpy as np
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from PIL import Image
from timm.data import ImageNetInfo

from ..utils.progress import bar, get_logger
from ..data.ade20k import ADE20K_CLASSES
from ..data.coop import BASE_TO_NEW, DATASETS, VARIANTS
from ..data.world_layout import stamp_matches
from .mini_world import build_atomically, ensure_generated
from .render import LAND_USE

PAPER_WORLD_VERSION = 1
STAMP = "paper_world_stamp.json"

# The real class counts (CoOp's DATASETS.md / the CoOp and CoCoOp papers' dataset statistics; ImageNet-A/-R:
# their 200-class subsets; ADE20K: 150 + "other"). The generator writes exactly these.
CLASS_COUNTS = {"ImageNet": 1000, "Caltech101": 100, "OxfordPets": 37, "StanfordCars": 196, "OxfordFlowers": 102,
                "Food101": 101, "FGVCAircraft": 100, "SUN397": 397, "DescribableTextures": 47, "EuroSAT": 10,
                "UCF101": 101, "ImageNetV2": 1000, "ImageNetSketch": 1000, "ImageNetA": 200, "ImageNetR": 200}
ADE_NUM_CLASSES = 150

# What is written per class (and everything else that changes the bytes: it goes into the stamp's hash).
SHAPE = {
    "seed": 0,
    "imagenet": {"train": 2, "val": 1},               # >= 2 train: a few-shot draw has something to draw
    "variant_per_class": 1,                          # ImageNet-V2 / -Sketch / -A / -R
    "coop": {"train": 2, "val": 2, "test": 2},       # split_zhou datasets and FGVC-Aircraft
    "caltech_ignored_per_folder": 2,                 # BACKGROUND_Google, Faces_easy (the loader drops them)
    "image_sizes": [[32, 32], [40, 30], [30, 40], [48, 36], [36, 48]],    # (w, h); the loaders resize
    "ade": {"training": 8, "validation": 4},
    # (w, h) of real ADE20K images: mostly a 512 short side at 4:3 / 3:4 / 1:1, some wider or smaller
    "ade_sizes": [[683, 512], [512, 683], [512, 512], [768, 512], [512, 768], [640, 480]],
    "ade_grid": 8,                                   # an ADE mask is a grid x grid patchwork of labels
    "jpeg_quality": 90,
}
PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9 -]*")  # names that are also safe folder names


def shape_hash() -> str:
    text = json.dumps({"version": PAPER_WORLD_VERSION, **SHAPE}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- class lists
def imagenet_classes() -> list[tuple[str, str]]:
    """(wnid, class name) in label order: timm's ImageNet-1k wnids (sorted = label order) with open_clip's names."""
    wnids = ImageNetInfo("imagenet-1k").label_names()
    assert len(wnids) == len(IMAGENET_CLASSNAMES) == 1000 and wnids == sorted(wnids)
    return list(zip(wnids, IMAGENET_CLASSNAMES))


def imagenet_subset(which: str) -> list[str]:
    """The wnids of ImageNet-A (which="a") or -R ("r"): timm's copies of the real lists, else a seeded 200."""
    try:
        data = pkgutil.get_data("timm.data", f"_info/imagenet_{which}_synsets.txt")
    except OSError:
        data = None
    if data:
        return sorted(data.decode().split())
    wnids = [w for w, _ in imagenet_classes()]
    rng = np.random.default_rng([SHAPE["seed"], zlib.crc32(f"imagenet-{which}".encode())])
    return sorted(rng.choice(wnids, size=200, replace=False).tolist())


def _word_pool() -> list[str]:
    """CLIP's ImageNet class names that are 1-4 plain words (983 of the 1000)."""
    return [n for n in IMAGENET_CLASSNAMES if PLAIN_NAME.fullmatch(n) and len(n.split()) <= 4]


def stand_in_names(dataset: str, n: int) -> list[str]:
    """n names for `dataset`, drawn from the word pool with a seed of its own; unique ignoring case (so their
    folder names are unique on any file system)."""
    pool = _word_pool()
    rng = np.random.default_rng([SHAPE["seed"], zlib.crc32(dataset.encode())])
    names, seen = [], set()
    for i in rng.permutation(len(pool)):
        if pool[i].lower() not in seen:
            seen.add(pool[i].lower())
            names.append(pool[i])
            if len(names) == n:
                return names
    raise ValueError(f"the word pool holds fewer than {n} distinct names for {dataset}")


# ----------------------------------------------------------------------------- writing
def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng([SHAPE["seed"], zlib.crc32(key.encode())])


def _image_dir(root: Path, name: str) -> Path:
    spec = DATASETS[name]
    return root / spec.dataset_dir / spec.image_dir


def _noise_image(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    """A tiny image of one of the SHAPE sizes: the class colour plus noise."""
    w, h = SHAPE["image_sizes"][rng.integers(len(SHAPE["image_sizes"]))]
    return np.clip(colour + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _save_jpg(path: Path, pixels: np.ndarray, pbar) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=SHAPE["jpeg_quality"])
    pbar.update()


def _write_imagenet(root: Path, pbar) -> None:
    """ImageNet train/val folders and the four variants, each with its own copy of classnames.txt."""
    classes = imagenet_classes()
    per_variant = SHAPE["variant_per_class"]
    rendered = {"ImageNetA": set(imagenet_subset("a")), "ImageNetR": set(imagenet_subset("r"))}
    rng = _rng("ImageNet")
    images = _image_dir(root, "ImageNet")
    val_index = count(1)
    for label, (wnid, _) in enumerate(classes):
        colour = rng.integers(0, 256, 3)
        for i in range(SHAPE["imagenet"]["train"]):
            _save_jpg(images / "train" / wnid / f"{wnid}_{i + 1}.JPEG", _noise_image(rng, colour), pbar)
        for _ in range(SHAPE["imagenet"]["val"]):
            stem = f"ILSVRC2012_val_{next(val_index):08d}"
            _save_jpg(images / "val" / wnid / f"{stem}.JPEG", _noise_image(rng, colour), pbar)
        for i in range(per_variant):
            stem = hashlib.sha1(f"{wnid}/{i}".encode()).hexdigest()
            _save_jpg(_image_dir(root, "ImageNetV2") / str(label) / f"{stem}.jpeg", _noise_image(rng, colour), pbar)
            _save_jpg(_image_dir(root, "ImageNetSketch") / wnid / f"sketch_{i}.JPEG", _noise_image(rng, colour), pbar)
            for name, wnids in rendered.items():
                if wnid in wnids:
                    path = _image_dir(root, name) / wnid / f"{name[-1].lower()}_{i}.jpg"
                    _save_jpg(path, _noise_image(rng, colour), pbar)
    names = "".join(f"{wnid} {name}\n" for wnid, name in classes)
    for name in ("ImageNet",) + VARIANTS:
        (root / DATASETS[name].dataset_dir / "classnames.txt").write_text(names)


def _write_split_json(root: Path, name: str, classnames: list[str], rel_path: Callable[[int, str, int], str],
                      pbar) -> None:
    """SHAPE["coop"] images per class and split, listed in split_zhou_<name>.json as [path under the image
    folder, label, class name]; rel_path(label, split, k) names the class's k-th image (k from 1)."""
    rng = _rng(name)
    split = {part: [] for part in SHAPE["coop"]}
    for label, cname in enumerate(classnames):
        colour = rng.integers(0, 256, 3)
        k = 0
        for part, n in SHAPE["coop"].items():
            for _ in range(n):
                k += 1
                rel = rel_path(label, part, k)
                _save_jpg(_image_dir(root, name) / rel, _noise_image(rng, colour), pbar)
                split[part].append([rel, label, cname])
    spec = DATASETS[name]
    (root / spec.dataset_dir / spec.split_file).write_text(json.dumps(split))


def _folder(name: str) -> str:
    return name.replace(" ", "_")


def _write_coop(root: Path, pbar) -> None:
    """The ten datasets read through split files, each in its real naming scheme."""
    caltech = [_folder(n) for n in stand_in_names("Caltech101", CLASS_COUNTS["Caltech101"])]
    _write_split_json(root, "Caltech101", caltech, lambda lab, part, k: f"{caltech[lab]}/image_{k:04d}.jpg", pbar)
    rng = _rng("Caltech101 ignored")
    for folder in DATASETS["Caltech101"].ignored:
        for k in range(SHAPE["caltech_ignored_per_folder"]):
            _save_jpg(_image_dir(root, "Caltech101") / folder / f"image_{k + 1:04d}.jpg",
                      _noise_image(rng, rng.integers(0, 256, 3)), pbar)

    pets = [_folder(n) for n in stand_in_names("OxfordPets", CLASS_COUNTS["OxfordPets"])]
    _write_split_json(root, "OxfordPets", [p.lower() for p in pets], lambda lab, part, k: f"{pets[lab]}_{k}.jpg", pbar)

    cars = stand_in_names("StanfordCars", CLASS_COUNTS["StanfordCars"])
    car_ids = {"cars_train": count(1), "cars_test": count(1)}

    def car_path(lab, part, k):
        folder = "cars_test" if part == "test" else "cars_train"
        return f"{folder}/{next(car_ids[folder]):05d}.jpg"
    _write_split_json(root, "StanfordCars", cars, car_path, pbar)

    flowers = [n.lower() for n in stand_in_names("OxfordFlowers", CLASS_COUNTS["OxfordFlowers"])]
    flower_ids = count(1)
    _write_split_json(root, "OxfordFlowers", flowers, lambda lab, part, k: f"image_{next(flower_ids):05d}.jpg", pbar)

    food = [_folder(n.lower()) for n in stand_in_names("Food101", CLASS_COUNTS["Food101"])]
    food_ids = count(1000001)
    _write_split_json(root, "Food101", food, lambda lab, part, k: f"{food[lab]}/{next(food_ids)}.jpg", pbar)

    sun = [n.lower() for n in stand_in_names("SUN397", CLASS_COUNTS["SUN397"])]
    def sun_path(lab, part, k):
        return f"{sun[lab][0]}/{_folder(sun[lab])}/sun_{zlib.crc32(f'{lab}/{k}'.encode()):08x}.jpg"
    _write_split_json(root, "SUN397", sun, sun_path, pbar)

    dtd = [_folder(n.lower()) for n in stand_in_names("DescribableTextures", CLASS_COUNTS["DescribableTextures"])]
    _write_split_json(root, "DescribableTextures", dtd, lambda lab, part, k: f"{dtd[lab]}/{dtd[lab]}_{k:04d}.jpg", pbar)

    sat = sorted(LAND_USE)  # EuroSAT's real folders; CoOp's class names are LAND_USE's values
    _write_split_json(root, "EuroSAT", [LAND_USE[f] for f in sat],
                      lambda lab, part, k: f"{sat[lab]}/{sat[lab]}_{k}.jpg", pbar)

    ucf = ["_".join(w.capitalize() for w in n.split()) for n in stand_in_names("UCF101", CLASS_COUNTS["UCF101"])]
    _write_split_json(root, "UCF101", ucf,
                      lambda lab, part, k: f"{ucf[lab]}/v_{ucf[lab].replace('_', '')}_g{k:02d}_c01.jpg", pbar)


def _write_fgvc(root: Path, pbar) -> None:
    """FGVC-Aircraft: images/<id>.jpg, images_variant_<split>.txt ("<id> <variant>") and variants.txt."""
    variants = stand_in_names("FGVCAircraft", CLASS_COUNTS["FGVCAircraft"])
    rng = _rng("FGVCAircraft")
    lines = {part: [] for part in SHAPE["coop"]}
    image_ids = count(1000001)
    for variant in variants:
        colour = rng.integers(0, 256, 3)
        for part, n in SHAPE["coop"].items():
            for _ in range(n):
                image_id = f"{next(image_ids):07d}"
                _save_jpg(_image_dir(root, "FGVCAircraft") / f"{image_id}.jpg", _noise_image(rng, colour), pbar)
                lines[part].append(f"{image_id} {variant}")
    base = root / DATASETS["FGVCAircraft"].dataset_dir
    for part, rows in lines.items():
        (base / f"images_variant_{part}.txt").write_text("\n".join(rows) + "\n")
    (base / "variants.txt").write_text("\n".join(variants) + "\n")


def _write_ade(root: Path, pbar) -> None:
    """Scenes at ADE20K's sizes: a grid of label patches (every label 0..150 in each split), the image
    the patches' colours, the mask the labels (uint8 PNG, same size)."""
    base = root / "ADEChallengeData2016"
    rng = _rng("ADE20K")
    palette = rng.integers(0, 256, (ADE_NUM_CLASSES + 1, 3)).astype(np.uint8)
    g = SHAPE["ade_grid"]
    pixels = np.zeros(ADE_NUM_CLASSES + 1, np.int64)
    images_with = {split: np.zeros(ADE_NUM_CLASSES + 1, np.int64) for split in SHAPE["ade"]}
    for split, n in SHAPE["ade"].items():
        prefix = "ADE_train" if split == "training" else "ADE_val"
        rounds = -(-n * g * g // (ADE_NUM_CLASSES + 1))
        labels = np.concatenate([rng.permutation(ADE_NUM_CLASSES + 1) for _ in range(rounds)])
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = SHAPE["ade_sizes"][i % len(SHAPE["ade_sizes"])]
            cells = labels[i * g * g:(i + 1) * g * g].reshape(g, g)
            mask = cells[np.arange(h)[:, None] * g // h, np.arange(w)[None, :] * g // w].astype(np.uint8)
            stem = f"{prefix}_{i + 1:08d}"
            _save_jpg(base / "images" / split / f"{stem}.jpg", palette[mask], pbar)
            Image.fromarray(mask, mode="L").save(base / "annotations" / split / f"{stem}.png")
            pixels += np.bincount(mask.ravel(), minlength=ADE_NUM_CLASSES + 1)
            images_with[split] += np.bincount(np.unique(mask), minlength=ADE_NUM_CLASSES + 1)
    ratio = pixels / pixels.sum()
    rows = ["Idx\tRatio\tTrain\tVal\tName"]
    rows += [f"{k}\t{ratio[k]:.4f}\t{images_with['training'][k]}\t{images_with['validation'][k]}\t{name}"
             for k, name in enumerate(ADE20K_CLASSES, 1)]
    (base / "objectInfo150.txt").write_text("\n".join(rows) + "\n")


def image_count() -> int:
    """How many images the world holds (the progress bar's total)."""
    per_variant = SHAPE["variant_per_class"]
    imagenet = CLASS_COUNTS["ImageNet"] * (sum(SHAPE["imagenet"].values()) + 2 * per_variant)  # + V2, Sketch
    imagenet += (CLASS_COUNTS["ImageNetA"] + CLASS_COUNTS["ImageNetR"]) * per_variant
    coop = sum(CLASS_COUNTS[n] for n in BASE_TO_NEW if n != "ImageNet") * sum(SHAPE["coop"].values())
    ignored = len(DATASETS["Caltech101"].ignored) * SHAPE["caltech_ignored_per_folder"]
    return imagenet + coop + ignored + sum(SHAPE["ade"].values())


# ----------------------------------------------------------------------------- entry points
def generate_paper_world(root: str | os.PathLike) -> Path:
    """Write the whole paper world into `root` (replacing what is there), then its stamp; logs its size and time."""
    start = time.time()

    def write(tmp: Path) -> None:
        with bar(total=image_count(), desc="paper world", unit="img") as pbar:
            _write_imagenet(tmp, pbar)
            _write_coop(tmp, pbar)
            _write_fgvc(tmp, pbar)
            _write_ade(tmp, pbar)
        (tmp / STAMP).write_text(json.dumps({"hash": shape_hash(), "version": PAPER_WORLD_VERSION, "shape": SHAPE,
                                             "classes": CLASS_COUNTS}, indent=2))

    root = build_atomically(root, write)
    files = [p for p in root.rglob("*") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in files) / 2**20
    get_logger().info("paper world: %d files, %.1f MB, written in %.1f s (%s)", len(files), megabytes,
                      time.time() - start, root)
    return root


def is_current(root: str | os.PathLike) -> bool:
    return stamp_matches(root, shape_hash(), STAMP)


def ensure_paper_world(root: str | os.PathLike, force: bool = False) -> Path:
    """Generate the paper world in `root` unless the same one is already there (its stamp holds the shape's
    hash: a re-run is a no-op, a changed SHAPE or version regenerates; force=True always does)."""
    return ensure_generated(root, is_current, generate_paper_world, f"the paper world ({shape_hash()})",
                            force)
