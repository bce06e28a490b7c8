"""CoOp/CoCoOp datasets in their real on-disk layouts (CoOp's DATASETS.md), few-shot draws and the
base/new class split.

    ds = load_dataset("Caltech101", data_root)          # CoopDataset: .train/.val/.test, .classnames, .template
    ds = few_shot(ds, shots=16, seed=1)                 # cached in <dataset_dir>/split_fewshot/
    base = subsample_classes(ds, "base")                # first ceil(n/2) labels, remapped to 0..m-1
    loader = DataLoader(ImageListDataset(base.test, preprocess), batch_size=100)
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple

import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..utils.io import atomic_write
from . import DatasetError, require

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
SCAN_CACHE_MIN = 50_000  # folder scans with more files than this are cached to JSON beside the data


class Datum(NamedTuple):
    impath: str
    label: int
    classname: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    dataset_dir: str            # folder under the data root
    image_dir: str              # folder under dataset_dir holding the images ("" = dataset_dir itself)
    kind: str                   # split_json | fgvc | imagenet | imagenetv2 | folders
    template: str               # CoOp's CUSTOM_TEMPLATES entry
    split_file: str | None = None
    folder_fallback: bool = False   # class-per-folder images: split by listing when the JSON is missing
    ignored: tuple[str, ...] = ()

    def layout(self) -> str:
        d, im = self.dataset_dir, self.image_dir
        if self.kind == "split_json":
            rows = [f"{d}/", f"  {self.split_file}   {{\"train\"|\"val\"|\"test\": [[<path under {im or d}>, label, classname], ...]}}"]
            rows.append(f"  {im}/..." if im else "  <image folders>/...")
        elif self.kind == "fgvc":
            rows = [f"{d}/", f"  {im}/<image id>.jpg", "  images_variant_{train,val,test}.txt   \"<image id> <variant name>\" per line",
                    "  variants.txt   one variant name per line"]
        elif self.kind == "imagenet":
            rows = [f"{d}/", "  classnames.txt   \"<wnid> <class name>\" per line", f"  {im}/train/<wnid>/*.JPEG",
                    f"  {im}/val/<wnid>/*.JPEG"]
        elif self.kind == "imagenetv2":
            rows = [f"{d}/", "  classnames.txt   (a copy of imagenet/classnames.txt)", f"  {im}/<label 0..999>/*.jpeg"]
        else:
            rows = [f"{d}/", "  classnames.txt   (a copy of imagenet/classnames.txt)", f"  {im}/<wnid>/*"]
        return "<data root>/\n" + "\n".join("  " + r for r in rows)


def _spec(name, dataset_dir, image_dir, template, kind="split_json", split=None, **kw):
    if kind == "split_json" and split is None:
        split = f"split_zhou_{name}.json"
    return DatasetSpec(name, dataset_dir, image_dir, kind, template, split, **kw)


PHOTO = "a photo of a {}."
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in [
    _spec("ImageNet", "imagenet", "images", PHOTO, kind="imagenet"),
    _spec("Caltech101", "caltech-101", "101_ObjectCategories", PHOTO, folder_fallback=True, ignored=CALTECH_IGNORED),
    _spec("OxfordPets", "oxford_pets", "images", "a photo of a {}, a type of pet."),
    _spec("StanfordCars", "stanford_cars", "", PHOTO),
    _spec("OxfordFlowers", "oxford_flowers", "jpg", "a photo of a {}, a type of flower."),
    _spec("Food101", "food-101", "images", "a photo of {}, a type of food.", folder_fallback=True),
    _spec("FGVCAircraft", "fgvc_aircraft", "images", "a photo of a {}, a type of aircraft.", kind="fgvc"),
    _spec("SUN397", "sun397", "SUN397", PHOTO),
    _spec("DescribableTextures", "dtd", "images", "{} texture.", folder_fallback=True),
    _spec("EuroSAT", "eurosat", "2750", "a centered satellite photo of {}.", folder_fallback=True),
    _spec("UCF101", "ucf101", "UCF-101-midframes", "a photo of a person doing {}."),
    _spec("ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val", PHOTO, kind="imagenetv2"),
    _spec("ImageNetSketch", "imagenet-sketch", "images", PHOTO, kind="folders"),
    _spec("ImageNetA", "imagenet-adversarial", "imagenet-a", PHOTO, kind="folders"),
    _spec("ImageNetR", "imagenet-rendition", "imagenet-r", PHOTO, kind="folders"),
]}
BASE_TO_NEW = ("ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
               "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101")
VARIANTS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")
ALIASES = {"dtd": "DescribableTextures", "flowers102": "OxfordFlowers", "imagenet-a": "ImageNetA",
           "imagenet-r": "ImageNetR", "imagenet-sketch": "ImageNetSketch", "imagenetv2": "ImageNetV2"}


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

    def prompts(self) -> list[str]:
        return [self.template.format(c) for c in self.classnames]


def get_spec(name: str) -> DatasetSpec:
    if name in DATASETS:
        return DATASETS[name]
    low = {k.lower(): k for k in DATASETS}
    key = ALIASES.get(name.lower()) or low.get(name.lower())
    if key is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def clean_classname(name: str) -> str:
    return name.replace("_", " ").strip()


# ----------------------------------------------------------------------------- readers
def _classes_by_label(items: list[Datum], where: Path, layout: str) -> list[str]:
    names: dict[int, str] = {}
    for d in items:
        names.setdefault(d.label, d.classname)
    if not names:
        raise DatasetError(f"no images listed in {where}", where, layout)
    labels = sorted(names)
    if labels != list(range(len(labels))):
        raise DatasetError(f"labels in {where} are not 0..{len(labels) - 1} (found {labels[:5]}...)", where, layout)
    return [names[i] for i in labels]


def _read_split_json(spec: DatasetSpec, ddir: Path, image_dir: Path):
    path = ddir / spec.split_file
    try:
        split = json.loads(path.read_text())
        out = {}
        for part in ("train", "val", "test"):
            out[part] = [Datum(str(image_dir / rel), int(lab), clean_classname(str(cname)))
                         for rel, lab, cname in split[part]]
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"malformed split file {path} ({type(err).__name__}: {err})", path, spec.layout()) from None
    return out["train"], out["val"], out["test"]


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def _class_folders(image_dir: Path, ignored=()) -> list[Path]:
    return sorted(p for p in image_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in ignored)


def _split_by_folders(spec: DatasetSpec, image_dir: Path, p_train=0.5, p_val=0.2, seed=0):
    """CoOp's rule when no split file exists: per class, shuffle, 50% train, 20% val, rest test."""
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label, folder in enumerate(_class_folders(image_dir, spec.ignored)):
        files = _list_images(folder)
        rng.shuffle(files)
        n_train, n_val = round(len(files) * p_train), round(len(files) * p_val)
        cname = clean_classname(folder.name)
        for i, f in enumerate(files):
            (train if i < n_train else val if i < n_train + n_val else test).append(Datum(str(f), label, cname))
    return train, val, test


def _read_fgvc(spec: DatasetSpec, ddir: Path, image_dir: Path):
    layout = spec.layout()
    files = {p: require(ddir / f"images_variant_{p}.txt", "FGVC-Aircraft split file", layout, "file")
             for p in ("train", "val", "test")}
    rows = {}
    for part, path in files.items():
        rows[part] = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(" ", 1)
            if len(parts) != 2:
                raise DatasetError(f"malformed line {n} in {path}: {line!r}", path, layout)
            rows[part].append(parts)
    variants = ddir / "variants.txt"
    if variants.is_file():
        classnames = [line.strip() for line in variants.read_text().splitlines() if line.strip()]
    else:
        classnames = sorted({name for name, in ((r[1],) for r in rows["train"])})
    lab = {name: i for i, name in enumerate(classnames)}
    out = {}
    for part, items in rows.items():
        try:
            out[part] = [Datum(str(image_dir / f"{iid}.jpg"), lab[name], clean_classname(name)) for iid, name in items]
        except KeyError as err:
            raise DatasetError(f"variant {err} in {files[part]} is not in {variants}", files[part], layout) from None
    return out["train"], out["val"], out["test"], [clean_classname(c) for c in classnames]


def read_classnames(path: Path, layout: str | None = None) -> dict[str, str]:
    """ImageNet's classnames.txt: '<wnid> <class name>' per line, in label order."""
    require(path, "class name file", layout, "file")
    names = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) != 2:
            raise DatasetError(f"malformed line {n} in {path}: {line!r} (want '<wnid> <class name>')", path, layout)
        names[parts[0]] = clean_classname(parts[1])
    return names


def scan_folders(image_dir: Path, cache: Path | None = None) -> list[tuple[str, list[str]]]:
    """[(class folder name, [file names])] in sorted order; large scans are cached to a JSON file."""
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("mtime") == image_dir.stat().st_mtime:
                return [(k, v) for k, v in data["folders"]]
        except (OSError, ValueError, KeyError):
            pass
    folders = [(f.name, [p.name for p in _list_images(f)]) for f in _class_folders(image_dir)]
    if cache is not None and sum(len(v) for _, v in folders) >= SCAN_CACHE_MIN:
        try:
            atomic_write(cache, json.dumps({"mtime": image_dir.stat().st_mtime, "folders": folders}))
        except OSError:
            pass  # read-only data: just rescan next time
    return folders


def _read_folder_split(image_dir: Path, names: dict[str, str], layout: str, cache: Path | None,
                       labels_from_folders: bool = True) -> tuple[list[Datum], list[str]]:
    items, classnames = [], []
    for label, (wnid, files) in enumerate(scan_folders(image_dir, cache)):
        if wnid not in names:
            raise DatasetError(f"class folder {image_dir / wnid} has no line in classnames.txt", image_dir / wnid, layout)
        classnames.append(names[wnid])
        items += [Datum(str(image_dir / wnid / f), label, names[wnid]) for f in files]
    if not items:
        raise DatasetError(f"no images under {image_dir}", image_dir, layout)
    return items, classnames


def _check_first_images(splits: dict[str, list[Datum]], layout: str) -> None:
    for part, items in splits.items():
        for d in items[:1] + items[-1:]:
            if not os.path.exists(d.impath):
                raise DatasetError(f"image listed in the {part} split not found: {d.impath}", d.impath, layout)


def load_dataset(name: str, root: str | os.PathLike) -> CoopDataset:
    """Read one CoOp dataset (or ImageNet variant) from the data root that holds its folder."""
    spec = get_spec(name)
    layout = spec.layout()
    ddir = require(Path(root).expanduser() / spec.dataset_dir, f"{spec.name} folder", layout, "dir")
    image_dir = require(ddir / spec.image_dir, f"{spec.name} image folder", layout, "dir") if spec.image_dir else ddir
    meta = {}
    if spec.kind == "split_json":
        if (ddir / spec.split_file).is_file():
            train, val, test = _read_split_json(spec, ddir, image_dir)
        elif spec.folder_fallback:
            train, val, test = _split_by_folders(spec, image_dir)
            meta["split"] = "folder listing (no split file)"
        else:
            raise DatasetError(f"{spec.name} split file not found: {ddir / spec.split_file} (CoOp's DATASETS.md links it)",
                               ddir / spec.split_file, layout)
        classnames = _classes_by_label(train + val + test, ddir / (spec.split_file or ""), layout)
    elif spec.kind == "fgvc":
        train, val, test, classnames = _read_fgvc(spec, ddir, image_dir)
    elif spec.kind == "imagenet":
        names = read_classnames(ddir / "classnames.txt", layout)
        tdir = require(image_dir / "train", "ImageNet train folder", layout, "dir")
        vdir = require(image_dir / "val", "ImageNet val folder", layout, "dir")
        train, classnames = _read_folder_split(tdir, names, layout, ddir / "scan_train.json")
        test, _ = _read_folder_split(vdir, names, layout, ddir / "scan_val.json")
        val = test  # CoOp: ImageNet's val set is its test set
    elif spec.kind == "imagenetv2":
        names = list(read_classnames(ddir / "classnames.txt", layout).values())
        test = []
        for folder in sorted(_class_folders(image_dir), key=lambda p: int(p.name) if p.name.isdigit() else -1):
            if not folder.name.isdigit() or int(folder.name) >= len(names):
                raise DatasetError(f"ImageNetV2 folder {folder} is not a label in 0..{len(names) - 1}", folder, layout)
            lab = int(folder.name)
            test += [Datum(str(p), lab, names[lab]) for p in _list_images(folder)]
        train, val, classnames = [], [], names
    else:  # folders: Sketch (all classes), A and R (the classes present, labels from the sorted folder list)
        names = read_classnames(ddir / "classnames.txt", layout)
        test, classnames = _read_folder_split(image_dir, names, layout, ddir / "scan.json")
        train, val = [], []
    _check_first_images({"train": train, "val": val, "test": test}, layout)
    return CoopDataset(spec.name, train, val, test, classnames, spec.template, ddir, "all", meta)


# ----------------------------------------------------------------------------- few-shot, base/new
def _group(items: list[Datum]) -> dict[int, list[Datum]]:
    groups: dict[int, list[Datum]] = {}
    for d in items:
        groups.setdefault(d.label, []).append(d)
    return dict(sorted(groups.items()))


def _draw(items: list[Datum], k: int, rng: random.Random) -> list[Datum]:
    out = []
    for _, group in _group(items).items():
        out += rng.sample(group, k) if len(group) >= k else list(group)
    return out


def _fingerprint(ds: CoopDataset) -> list:
    return [len(ds.train), len(ds.val), len(ds.test), list(ds.classnames)]


def few_shot(ds: CoopDataset, shots: int, seed: int, cache: bool = True) -> CoopDataset:
    """K training images per class (val: min(K, 4)), drawn with `seed` over ALL classes.

    The draw is cached in <dataset_dir>/split_fewshot/shot_{K}-seed_{S}.pkl so the same seed gives
    the same shots on every run (paths are stored relative to the dataset folder). Call it before
    subsample_classes, as CoOp does. shots <= 0 returns the dataset unchanged.
    """
    if not shots or shots <= 0:
        return ds
    path = ds.dataset_dir / "split_fewshot" / f"shot_{shots}-seed_{seed}.pkl" if ds.dataset_dir else None
    use_cache = cache and path is not None and ds.subsample == "all"
    base = Path(ds.dataset_dir) if ds.dataset_dir else None

    def rel(d: Datum):
        try:
            return (os.path.relpath(d.impath, base), d.label, d.classname)
        except ValueError:
            return tuple(d)

    if use_cache and path.is_file():
        try:
            data = pickle.loads(path.read_bytes())
            if data.get("fingerprint") == _fingerprint(ds):
                unpack = lambda rows: [Datum(str(base / p), int(l), c) for p, l, c in rows]  # noqa: E731
                return replace(ds, train=unpack(data["train"]), val=unpack(data["val"]),
                               meta={**ds.meta, "few_shot": {"shots": shots, "seed": seed, "cache": str(path), "reused": True}})
        except Exception:  # unreadable or stale cache: draw again
            pass
    rng = random.Random(seed)
    train = _draw(ds.train, shots, rng)
    val = _draw(ds.val, min(shots, 4), rng)
    if use_cache:
        try:
            blob = pickle.dumps({"fingerprint": _fingerprint(ds), "train": [rel(d) for d in train],
                                 "val": [rel(d) for d in val]})
            atomic_write(path, blob)
        except OSError:
            pass  # read-only data root: the draw is still deterministic from the seed
    return replace(ds, train=train, val=val,
                   meta={**ds.meta, "few_shot": {"shots": shots, "seed": seed, "cache": str(path) if use_cache else None,
                                                 "reused": False}})


def base_new_labels(labels, which: str) -> list[int]:
    labels = sorted(set(labels))
    m = math.ceil(len(labels) / 2)
    if which == "base":
        return labels[:m]
    if which == "new":
        return labels[m:]
    if which == "all":
        return labels
    raise ValueError(f"subsample must be 'base', 'new' or 'all', not {which!r}")


def subsample_classes(ds: CoopDataset, which: str) -> CoopDataset:
    """Keep the first ceil(n/2) labels ("base") or the rest ("new"), relabelled 0..k-1; "all" = as is."""
    if which == "all":
        return ds
    if ds.subsample != "all":
        raise ValueError(f"{ds.name} is already the {ds.subsample!r} half")
    keep = base_new_labels(range(len(ds.classnames)), which)
    remap = {old: new for new, old in enumerate(keep)}
    sub = lambda items: [Datum(d.impath, remap[d.label], d.classname) for d in items if d.label in remap]  # noqa: E731
    return replace(ds, train=sub(ds.train), val=sub(ds.val), test=sub(ds.test),
                   classnames=[ds.classnames[i] for i in keep], subsample=which)


# ----------------------------------------------------------------------------- torch dataset
def open_image(path: str | os.PathLike):
    """PIL RGB image, or DatasetError naming the file when it is missing or cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image not found: {path}", path) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"corrupt or unreadable image: {path} ({type(err).__name__}: {err})", path) from None


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


__all__ = ["DATASETS", "BASE_TO_NEW", "VARIANTS", "Datum", "DatasetSpec", "CoopDataset", "load_dataset",
           "few_shot", "subsample_classes", "base_new_labels", "ImageListDataset", "open_image", "get_spec",
           "read_classnames", "scan_folders"]
