"""The mini world: a seeded, procedurally painted stand-in for the papers' datasets, written to disk
in the REAL formats so the same loaders read it and the real data.

What it holds (under the root it is given; the workbook uses results/<profile>/world):

    imagenet/images/{train,val}/<wnid>/*.JPEG + classnames.txt   "<colour> <shape>" objects in photos
    imagenetv2/imagenetv2-matched-frequency-format-val/<i>/       the same classes, resampled
    imagenet-sketch/images/<wnid>/                                 pen outlines on paper
    imagenet-adversarial/imagenet-a/<wnid>/  (class subset)        small objects in heavy clutter
    imagenet-rendition/imagenet-r/<wnid>/    (class subset)        flat cartoons, sheared, posterised
    caltech-101/101_ObjectCategories/<thing>/ + split_zhou_Caltech101.json   animals, aircraft, shapes (+ BACKGROUND_Google, Faces_easy)
    oxford_pets/images/ + split_zhou_OxfordPets.json               13 "<coat> <cat|dog|rabbit>" (odd count)
    dtd/images/<texture>/ + split_zhou_DescribableTextures.json    11 texture names (odd count)
    eurosat/2750/<Folder>/ + split_zhou_EuroSAT.json                10 top-down land-use tiles
    fgvc_aircraft/images/ + images_variant_{train,val,test}.txt + variants.txt   9 "<colour> <jet|glider|biplane>"
    ADEChallengeData2016/{images,annotations}/{training,validation}/ + objectInfo150.txt  scenes + shape masks
    captions/train.csv (+ images/)  open_clip CSV, tab-separated "filepath<TAB>title" (paths relative to captions/)

Every class name is made of words the captions use, so a CLIP trained on the captions can name
classes it never saw as a class (base-to-new is meaningful). The captions never use the CoOp templates
(caption_example), EuroSAT tiles have a Sentinel-2 look (render.sentinel_look) and every class list is sorted
by name (CLASS ORDER): the mechanisms behind the papers' findings, described in issue #12 and the README.
These numbers are NOT the papers'.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..data.world_layout import STAMP, stamp_matches  # the on-disk names its readers share
from ..utils.progress import bar, get_logger
from . import render as R

WORLD_VERSION = 4


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    size: int = 64                 # image side in pixels
    imagenet_classes: int = 20
    imagenet_train: int = 40       # per class
    imagenet_val: int = 20         # per class (ImageNet's val is the test split)
    variant_per_class: int = 10    # V2 / Sketch / A / R images per class
    subset_classes: int = 10       # classes present in ImageNet-A and -R
    coop_train: int = 24           # per class, CoOp-style datasets
    coop_val: int = 6
    coop_test: int = 20
    ade_train: int = 300
    ade_val: int = 60
    captions: int = 12000
    caption_size: str | None = None  # object size range in caption images (render.place; None = the datasets')
    caption_plain_p: float = 0.7     # share of plain (unpatterned) objects in caption images
    shape_caption_p: float = 0.3     # share of object captions that name only the shape
    jpeg_quality: int = 92


CONFIGS = {
    "smoke": WorldConfig(size=32, imagenet_classes=8, imagenet_train=8, imagenet_val=4, variant_per_class=3,
                         subset_classes=4, coop_train=6, coop_val=2, coop_test=3, ade_train=12, ade_val=6,
                         captions=320),
    "mini": WorldConfig(),
}


def world_config(profile: str) -> WorldConfig:
    if profile not in CONFIGS:
        raise ValueError(f"the mini world exists for profiles {tuple(CONFIGS)}, not {profile!r} "
                         "(the paper profile reads the real datasets)")
    return CONFIGS[profile]


def config_hash(cfg: WorldConfig) -> str:
    text = json.dumps({"version": WORLD_VERSION, **asdict(cfg)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- class lists
def _shuffled(items, seed):
    items = list(items)
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def imagenet_classes(n: int) -> list[tuple[str, str, str]]:
    """(wnid, colour, shape) for n classes drawn at random, then sorted by name (see CLASS ORDER below); wnids
    grow with the index, so sorted wnid order = label order."""
    combos = sorted(_shuffled([(c, s) for c in R.OBJECT_COLOURS for s in R.SHAPES], 1234)[:n])
    return [(f"n{1000000 + 7919 * (i + 1):08d}", c, s) for i, (c, s) in enumerate(combos)]


def subset_of(n: int, k: int) -> list[int]:
    """The labels present in ImageNet-A/-R (sorted)."""
    return sorted(np.random.default_rng(4321).choice(n, size=min(k, n), replace=False).tolist())


# CLASS ORDER: every class list is sorted by name, as the real datasets' labels follow their sorted folder or
# class names. CoOp's base-to-new split takes the first half of the labels as base, so here, as there, base and
# new classes differ systematically: "<colour> <thing>" names put the first colours in base and the last in new
# (the real FGVC-Aircraft's sorted variants do the same with manufacturers). A context learned on the base
# classes never sees the new classes' colours: the overfitting CoCoOp's paper measures on new classes.
PET_CLASSES = sorted(_shuffled([(c, a) for a in R.ANIMALS for c in R.COAT_COLOURS], 77)[:13])
AIRCRAFT_CLASSES = sorted((c, k) for k in R.AIRCRAFT for c in R.AIRCRAFT_COLOURS)
# Caltech101 is a mix of object categories (animals, vehicles, things): here animals, aircraft and four shapes,
# each in a random coat or colour (the colour never names the class).
CALTECH_CLASSES = sorted(R.ANIMALS + R.AIRCRAFT + ("circle", "square", "star", "triangle"))
DTD_CLASSES = sorted(R.TEXTURES)
EUROSAT_FOLDERS = sorted(R.LAND_USE)


def all_class_names(cfg: WorldConfig) -> dict[str, list[str]]:
    """Every dataset's class names (used by tests to check the captions cover their words)."""
    return {
        "ImageNet": [f"{c} {s}" for _, c, s in imagenet_classes(cfg.imagenet_classes)],
        "Caltech101": CALTECH_CLASSES,
        "OxfordPets": [f"{c} {a}" for c, a in PET_CLASSES],
        "DescribableTextures": DTD_CLASSES,
        "EuroSAT": [R.LAND_USE[f] for f in EUROSAT_FOLDERS],
        "FGVCAircraft": [f"{c} {k}" for c, k in AIRCRAFT_CLASSES],
        "ADE20K": list(R.ADE_CLASSES),
    }


# ----------------------------------------------------------------------------- writing
def _rng(cfg: WorldConfig, *key) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, zlib.crc32("/".join(map(str, key)).encode())])


def _save_jpg(path: Path, img: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(R.to_uint8(img)).save(buf, format="JPEG", quality=quality)
    path.write_bytes(buf.getvalue())


def _bar(total: int, desc: str):
    return bar(total=total, desc=desc, leave=False)


def _split_counts(cfg):
    return (("train", cfg.coop_train), ("val", cfg.coop_val), ("test", cfg.coop_test))


def _write_imagenet(root: Path, cfg: WorldConfig) -> None:
    classes = imagenet_classes(cfg.imagenet_classes)
    S, q = cfg.size, cfg.jpeg_quality
    names = "".join(f"{w} {c} {s}\n" for w, c, s in classes)
    sub = set(subset_of(len(classes), cfg.subset_classes))
    per = cfg.imagenet_train + cfg.imagenet_val + 2 * cfg.variant_per_class
    total = len(classes) * per + len(sub) * 2 * cfg.variant_per_class
    with _bar(total, "world: imagenet + variants") as pbar:
        (root / "imagenet").mkdir(parents=True, exist_ok=True)
        (root / "imagenet" / "classnames.txt").write_text(names)
        for label, (wnid, colour, shape) in enumerate(classes):
            for split, n in (("train", cfg.imagenet_train), ("val", cfg.imagenet_val)):
                rng = _rng(cfg, "imagenet", split, wnid)
                for i in range(n):
                    img, _ = R.object_image(S, shape, colour, rng, "photo")
                    stem = f"{wnid}_{i + 1}" if split == "train" else f"ILSVRC2012_val_{label * 1000 + i + 1:08d}"
                    _save_jpg(root / "imagenet" / "images" / split / wnid / f"{stem}.JPEG", img, q)
                    pbar.update()
            # V2: resampled with another seed and a slightly shifted size distribution
            rng = _rng(cfg, "imagenetv2", wnid)
            for i in range(cfg.variant_per_class):
                img, _ = R.object_image(S, shape, colour, rng, "photo", size=str(rng.choice(["small", "large"])))
                _save_jpg(root / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(label)
                          / f"{zlib.crc32(f'{wnid}{i}'.encode()):08x}.jpeg", img, q)
                pbar.update()
            rng = _rng(cfg, "imagenet-sketch", wnid)
            for i in range(cfg.variant_per_class):
                img, _ = R.object_image(S, shape, colour, rng, "sketch")
                _save_jpg(root / "imagenet-sketch" / "images" / wnid / f"sketch_{i + 1}.JPEG", img, q)
                pbar.update()
            if label in sub:
                for style, folder in (("hard", "imagenet-adversarial/imagenet-a"),
                                      ("rendition", "imagenet-rendition/imagenet-r")):
                    rng = _rng(cfg, folder, wnid)
                    for i in range(cfg.variant_per_class):
                        img, _ = R.object_image(S, shape, colour, rng, style)
                        _save_jpg(root / folder / wnid / f"{style}_{i + 1}.jpg", img, q)
                        pbar.update()
    for d in ("imagenetv2", "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"):
        (root / d / "classnames.txt").write_text(names)
    for folder in ("imagenet-adversarial/imagenet-a", "imagenet-rendition/imagenet-r"):
        (root / folder / "README.txt").write_text("mini world: a subset of the ImageNet classes, one folder per wnid\n")


def _write_split_dataset(root: Path, cfg: WorldConfig, dataset_dir: str, image_dir: str, split_name: str,
                         classes: list[str], folder_of, file_of, paint) -> None:
    """A dataset read through a split_zhou JSON: one image per (class, split, index)."""
    split = {"train": [], "val": [], "test": []}
    n_per = cfg.coop_train + cfg.coop_val + cfg.coop_test
    with _bar(len(classes) * n_per, f"world: {dataset_dir}") as pbar:
        for label, cname in enumerate(classes):
            rng = _rng(cfg, dataset_dir, cname)
            idx = 0
            for part, n in _split_counts(cfg):
                for _ in range(n):
                    idx += 1
                    rel = f"{folder_of(label)}/{file_of(label, idx)}" if folder_of(label) else file_of(label, idx)
                    _save_jpg(root / dataset_dir / image_dir / rel, paint(label, rng), cfg.jpeg_quality)
                    split[part].append([rel, label, cname])
                    pbar.update()
    (root / dataset_dir / split_name).write_text(json.dumps(split))


def _caltech_image(S: int, name: str, rng: np.random.Generator) -> np.ndarray:
    if name in R.ANIMALS:
        return R.pet_image(S, name, str(rng.choice(R.COAT_COLOURS)), rng)
    if name in R.AIRCRAFT:
        return R.aircraft_image(S, name, str(rng.choice(R.AIRCRAFT_COLOURS)), rng)
    return R.object_image(S, name, str(rng.choice(R.OBJECT_COLOURS)), rng, "photo")[0]


def _write_coop(root: Path, cfg: WorldConfig) -> None:
    S = cfg.size
    _write_split_dataset(
        root, cfg, "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", CALTECH_CLASSES,
        lambda lab: CALTECH_CLASSES[lab], lambda lab, i: f"image_{i:04d}.jpg",
        lambda lab, rng: _caltech_image(S, CALTECH_CLASSES[lab], rng))
    # the two Caltech folders every loader must drop
    rng = _rng(cfg, "caltech-101", "extra")
    for i in range(3):
        _save_jpg(root / "caltech-101" / "101_ObjectCategories" / "BACKGROUND_Google" / f"image_{i + 1:04d}.jpg",
                  R.photo_background(S, rng, 1.0), cfg.jpeg_quality)
        _save_jpg(root / "caltech-101" / "101_ObjectCategories" / "Faces_easy" / f"image_{i + 1:04d}.jpg",
                  R.face_image(S, rng), cfg.jpeg_quality)

    pets = [f"{c} {a}" for c, a in PET_CLASSES]
    _write_split_dataset(
        root, cfg, "oxford_pets", "images", "split_zhou_OxfordPets.json", pets,
        lambda lab: "", lambda lab, i: f"{pets[lab].replace(' ', '_')}_{i}.jpg",
        lambda lab, rng: R.pet_image(S, PET_CLASSES[lab][1], PET_CLASSES[lab][0], rng))
    (root / "oxford_pets" / "annotations").mkdir(parents=True, exist_ok=True)

    _write_split_dataset(
        root, cfg, "dtd", "images", "split_zhou_DescribableTextures.json", DTD_CLASSES,
        lambda lab: DTD_CLASSES[lab], lambda lab, i: f"{DTD_CLASSES[lab]}_{i:04d}.jpg",
        lambda lab, rng: R.texture_image(S, DTD_CLASSES[lab], rng)[0])

    sat = [R.LAND_USE[f] for f in EUROSAT_FOLDERS]
    _write_split_dataset(
        root, cfg, "eurosat", "2750", "split_zhou_EuroSAT.json", sat,
        lambda lab: EUROSAT_FOLDERS[lab], lambda lab, i: f"{EUROSAT_FOLDERS[lab]}_{i}.jpg",
        lambda lab, rng: R.land_use_image(S, EUROSAT_FOLDERS[lab], rng))

    # FGVC-Aircraft: no JSON, text files "<image id> <variant name>" and variants.txt
    planes = [f"{c} {k}" for c, k in AIRCRAFT_CLASSES]
    lines = {"train": [], "val": [], "test": []}
    base = root / "fgvc_aircraft"
    n_per = cfg.coop_train + cfg.coop_val + cfg.coop_test
    with _bar(len(planes) * n_per, "world: fgvc_aircraft") as pbar:
        for label, name in enumerate(planes):
            rng = _rng(cfg, "fgvc_aircraft", name)
            idx = 0
            for part, n in _split_counts(cfg):
                for _ in range(n):
                    image_id = f"{1000000 + label * 1000 + idx:07d}"
                    idx += 1
                    colour, kind = AIRCRAFT_CLASSES[label]
                    _save_jpg(base / "images" / f"{image_id}.jpg", R.aircraft_image(S, kind, colour, rng), cfg.jpeg_quality)
                    lines[part].append(f"{image_id} {name}")
                    pbar.update()
    for part, rows in lines.items():
        (base / f"images_variant_{part}.txt").write_text("\n".join(rows) + "\n")
    (base / "variants.txt").write_text("\n".join(planes) + "\n")


def _write_ade(root: Path, cfg: WorldConfig) -> None:
    base = root / "ADEChallengeData2016"
    counts = np.zeros(len(R.ADE_CLASSES) + 1, np.int64)
    with _bar(cfg.ade_train + cfg.ade_val, "world: ADEChallengeData2016") as pbar:
        for split, prefix, n in (("training", "ADE_train", cfg.ade_train), ("validation", "ADE_val", cfg.ade_val)):
            rng = _rng(cfg, "ade", split)
            (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img, mask, _ = R.stuff_scene(cfg.size, rng)
                stem = f"{prefix}_{i + 1:08d}"
                _save_jpg(base / "images" / split / f"{stem}.jpg", img, cfg.jpeg_quality)
                Image.fromarray(mask, mode="L").save(base / "annotations" / split / f"{stem}.png")
                counts += np.bincount(mask.ravel(), minlength=len(counts))
                pbar.update()
    ratio = counts / max(1, counts.sum())
    rows = ["Idx\tRatio\tTrain\tVal\tName"]
    rows += [f"{k}\t{ratio[k]:.4f}\t{cfg.ade_train}\t{cfg.ade_val}\t{name}" for k, name in enumerate(R.ADE_CLASSES, 1)]
    (base / "objectInfo150.txt").write_text("\n".join(rows) + "\n")


# ----------------------------------------------------------------------------- captions
POSITIONS = {(0, 0): "top left", (1, 0): "top", (2, 0): "top right", (0, 1): "left", (1, 1): "center",
             (2, 1): "right", (0, 2): "bottom left", (1, 2): "bottom", (2, 2): "bottom right"}


def _position(info) -> str:
    col = 0 if info["cx"] < 0.38 else 2 if info["cx"] > 0.62 else 1
    row = 0 if info["cy"] < 0.38 else 2 if info["cy"] > 0.62 else 1
    return POSITIONS[(col, row)]


def _size_word(info) -> str:
    return "small" if info["r"] < 0.22 else "large" if info["r"] > 0.29 else "medium"


def caption_example(S: int, rng: np.random.Generator, cfg: WorldConfig | None = None) -> tuple[np.ndarray, str]:
    """One image-text pair; the text names the attributes the image was painted with.

    The captions describe images the way alt-texts and tags do ("small red star, top left.", "my orange cat.",
    "river seen from above."), never with the CoOp zero-shot templates ("a photo of a {}.", "{} texture.",
    "a centered satellite photo of {}.", ", a type of pet/aircraft."): the CLIP learns every class word, but
    the hand-written templates are a poor fit for how it learned to read text, as the web's captions are for
    OpenAI's CLIP. That misfit is what prompt learning can fix (CoOp's gain on the base classes)."""
    cfg = cfg or WorldConfig()
    kind = rng.choice(["object", "styled", "pair", "texture", "land", "pet", "aircraft"],
                      p=[0.40, 0.14, 0.08, 0.12, 0.10, 0.08, 0.08])
    pick = lambda xs: str(rng.choice(xs))  # noqa: E731
    if kind in ("object", "styled"):
        shape, colour = pick(R.SHAPES), pick(R.OBJECT_COLOURS)
        style = "photo" if kind == "object" else pick(["sketch", "rendition", "hard"])
        img, info = R.object_image(S, shape, colour, rng, style, size=cfg.caption_size if style == "photo" else None,
                                   plain_p=cfg.caption_plain_p)
        fill = "" if info["fill"] == "plain" else info["fill"] + " "
        size, where = _size_word(info), _position(info)
        if style == "photo" and rng.random() < cfg.shape_caption_p:
            text = pick([f"{shape}.", f"{size} {shape}, {where}.", f"{fill}{shape}.", f"there is a {shape} here."])
        elif style == "photo":
            text = pick([
                f"{colour} {shape}.", f"{size} {colour} {fill}{shape}, {where}.", f"one {colour} {shape}, {where}.",
                f"{colour} {fill}{shape} on a gray ground.", f"{shape} in {colour}, {size}.",
                f"there is a {colour} {shape} at the {where}.",
            ])
        elif style == "sketch":
            text = pick([f"{colour} {shape} drawn with a pen.", f"pen sketch: {colour} {shape}.",
                         f"outline drawing, {colour} {shape}."])
        elif style == "rendition":
            text = pick([f"cartoon {colour} {shape}.", f"cartoon drawing: {colour} {shape}.",
                         f"{colour} {shape}, cartoon style."])
        else:
            text = pick([f"{colour} {shape} hidden in clutter.", f"small {colour} {shape} among gray junk."])
    elif kind == "pair":
        img, _, objects = R.scene_image(S, rng, (2, 2))
        (a, b) = objects
        text = f"{a['colour']} {a['shape']} and {b['colour']} {b['shape']}."
    elif kind == "texture":
        texture = pick(R.TEXTURES)
        img, (c1, c2) = R.texture_image(S, texture, rng)
        text = pick([f"{texture} pattern in {c1} and {c2}.", f"{c1} and {c2}, {texture}.", f"cloth, {texture}.",
                     f"{texture} surface."])
    elif kind == "land":
        folder = pick(sorted(R.LAND_USE))
        img = R.land_use_image(S, folder, rng)
        name = R.LAND_USE[folder].lower()
        text = pick([f"{name} seen from above.", f"aerial view: {name}.", f"{name}, from a plane."])
    elif kind == "pet":
        animal, coat = pick(R.ANIMALS), pick(R.COAT_COLOURS)
        img = R.pet_image(S, animal, coat, rng)
        text = pick([f"{coat} {animal}.", f"my {coat} {animal}.", f"the face of a {coat} {animal}.",
                     f"{animal} with {coat} fur."])
    else:
        plane, colour = pick(R.AIRCRAFT), pick(R.AIRCRAFT_COLOURS)
        img = R.aircraft_image(S, plane, colour, rng)
        text = pick([f"{colour} {plane} in the sky.", f"{plane} painted {colour}.", f"{colour} {plane}, flying."])
    return img, text


def _write_captions(root: Path, cfg: WorldConfig) -> None:
    base = root / "captions"
    rng = _rng(cfg, "captions")
    rows = []
    with _bar(cfg.captions, "world: captions") as pbar:
        for i in range(cfg.captions):
            img, text = caption_example(cfg.size, rng, cfg)
            rel = f"images/{i // 1000:03d}/{i:06d}.jpg"
            _save_jpg(base / rel, img, cfg.jpeg_quality)
            rows.append((rel, text))
            pbar.update()
    with open(base / "train.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["filepath", "title"])
        w.writerows(rows)


# ----------------------------------------------------------------------------- entry points
def build_atomically(root: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run write(folder) on a fresh sibling folder, then swap it in for `root`: a crash or an interrupt
    leaves `root` as it was (shared by every generated world)."""
    root = Path(root)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    for stale in root.parent.glob(f".{root.name}.partial-*"):  # left by a generation that was killed
        if stale == tmp or not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def ensure_generated(root: str | os.PathLike, is_current: Callable[[Path], bool], generate: Callable[[Path], Path],
                     what: str, force: bool = False) -> Path:
    """generate(root) unless is_current(root) (its stamp matches); concurrent callers (two notebooks, a
    test) wait on a lock beside `root` instead of writing over each other."""
    root = Path(root)
    if not force and is_current(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not is_current(root):
            get_logger().info("generating %s in %s", what, root)
            generate(root)
    return root


def generate_world(root: str | os.PathLike, cfg: WorldConfig) -> Path:
    """Write the whole world into `root` (replacing what is there), then its stamp."""
    def write(tmp: Path) -> None:
        _write_imagenet(tmp, cfg)
        _write_coop(tmp, cfg)
        _write_ade(tmp, cfg)
        _write_captions(tmp, cfg)
        (tmp / STAMP).write_text(json.dumps({"hash": config_hash(cfg), "version": WORLD_VERSION,
                                             "config": asdict(cfg)}, indent=2))

    return build_atomically(root, write)


def is_current(root: Path, cfg: WorldConfig) -> bool:
    return stamp_matches(root, config_hash(cfg))


def ensure_world(root: str | os.PathLike, cfg: WorldConfig, force: bool = False) -> Path:
    """Generate the world described by `cfg` in `root` unless an identical one is already there.

    The stamp file holds the config hash: a re-run is a no-op, a changed config regenerates.
    Concurrent callers (two notebooks, a test) wait on a lock instead of writing over each other.
    """
    return ensure_generated(root, lambda r: is_current(r, cfg), lambda r: generate_world(r, cfg),
                            f"the mini world (config {config_hash(cfg)})", force)
