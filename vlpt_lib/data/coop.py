"""CoOp/CoCoOp datasets in their real on-disk layouts (CoOp's DATASETS.md), few-shot draws and the
base/new class split.

    ds = load_dataset("Caltech101", data_root)          # CoopDataset: .train/.val/.test, .classnames, .template
    ds = few_shot(ds, shots=16, seed=1)                 # Dassl's draw (or its split_fewshot/*.pkl file)
    base = subsample_classes(ds, "base")                # first ceil(n/2) labels, remapped to 0..m-1
    loader = DataLoader(ImageListDataset(base.test, preprocess), batch_size=100)

Splits are the official ones (CoOp's split_zhou_<Name>.json, FGVC-Aircraft's lists, ImageNet's folders).
Class folders take their labels from classnames.txt in ImageNet's order (sorted wnids): a missing or
unknown class folder is an error, never a silent shift of the labels after it.
A split drawn from class folders exists only for your own copies of the datasets that allow it
(`allow_folder_split=True`); such a dataset is labelled "<Name> (folder split)" so its numbers are never
read as the paper's.
"""
from __future__ import annotations

import copyreg
import io
import json
import math
import os
import pickle
import random
import re
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
OFFICIAL_SPLITS = "CoOp's DATASETS.md (https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"
FOLDER_SPLIT_NOTE = " (folder split)"  # appended to a dataset's name when its split was drawn from folders


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
    class_subset: bool = False      # "folders" kind: only some classes of classnames.txt (ImageNet-A/-R)

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
    _spec("ImageNetA", "imagenet-adversarial", "imagenet-a", PHOTO, kind="folders", class_subset=True),
    _spec("ImageNetR", "imagenet-rendition", "imagenet-r", PHOTO, kind="folders", class_subset=True),
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


def base_label(label: str) -> str:
    """The dataset name of a row's dataset label (drops FOLDER_SPLIT_NOTE)."""
    return label[:-len(FOLDER_SPLIT_NOTE)] if label.endswith(FOLDER_SPLIT_NOTE) else label


def missing_split_message(spec: DatasetSpec, path: Path) -> str:
    """What to do when a split_zhou JSON is missing (the loader and 00_setup's check say the same)."""
    msg = (f"{spec.name}: the official split file {path} is missing. Download {spec.split_file} as "
           f"{OFFICIAL_SPLITS} says and put it there; the paper's numbers are measured on that split.")
    if spec.folder_fallback:
        msg += (" For your own data only, allow_folder_split=True (prompt job / recipe common) splits the class "
                "folders 50/20/30 instead; its rows are labelled" f" '{spec.name}{FOLDER_SPLIT_NOTE}'.")
    return msg


# ----------------------------------------------------------------------------- readers
def _classes_by_label(items: list[Datum], where: Path, layout: str) -> list[str]:
    names: dict[int, str] = {}
    for d in items:
        names.setdefault(d.label, d.classname)
    if not names:
        raise DatasetError(f"no images listed in {where}", where, layout)
    labels = sorted(names)
    if labels != list(range(len(labels))):
        n = len(labels)
        bad = [lab for lab in labels if not 0 <= lab < n]
        unused = sorted(set(range(n)) - set(labels))
        first = next(d for d in items if d.label in bad)
        raise DatasetError(f"labels in {where} must be 0..{n - 1} for its {n} classes: out of range {bad[:10]} "
                           f"(e.g. {first.impath}), never used {unused[:10]}; fix the file or re-download it",
                           where, layout)
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
    """ImageNet's classnames.txt: '<wnid> <class name>' per line (labels: the sorted wnids); a repeated
    wnid is an error, not a silently replaced name."""
    require(path, "class name file", layout, "file")
    names, line_of = {}, {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) != 2:
            raise DatasetError(f"malformed line {n} in {path}: {line!r} (want '<wnid> <class name>')", path, layout)
        if parts[0] in names:
            raise DatasetError(f"duplicate wnid {parts[0]} in {path} on lines {line_of[parts[0]]} and {n}; "
                               "each class must have one line (delete the extra one)", path, layout)
        names[parts[0]], line_of[parts[0]] = clean_classname(parts[1]), n
    return names


def _some(paths: list) -> str:
    return ", ".join(str(p) for p in paths[:5]) + (f" ... ({len(paths) - 5} more)" if len(paths) > 5 else "")


def class_folder_order(image_dir: Path, present: list[str], names: dict[str, str], names_file: Path, what: str,
                       layout: str | None = None, every_class: bool = True) -> list[str]:
    """The wnids in label order for the class folders `present` under image_dir.

    every_class: labels are the canonical ImageNet order (sorted wnids of classnames.txt), and a
    missing folder is an error (labelling the folders present would shift every later label).
    Otherwise (ImageNet-A/-R: a class subset) labels follow the sorted folders present.
    A folder without a line in classnames.txt is an error either way."""
    extra = [w for w in present if w not in names]
    if extra:
        raise DatasetError(f"{what} has {len(extra)} class folder(s) with no line in {names_file}: "
                           f"{_some([image_dir / w for w in extra])}; add their lines or remove the folders",
                           image_dir / extra[0], layout)
    if not every_class:
        return sorted(present)
    have = set(present)
    missing = [w for w in sorted(names) if w not in have]
    if missing:
        raise DatasetError(f"{what} is missing {len(missing)} of {len(names)} class folders: "
                           f"{_some([image_dir / w for w in missing])}; labels would shift (restore the "
                           "folders from the dataset archive)", image_dir / missing[0], layout)
    return sorted(names)


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


def _read_folder_split(image_dir: Path, names: dict[str, str], names_file: Path, what: str, layout: str,
                       cache: Path | None, every_class: bool = True) -> tuple[list[Datum], list[str]]:
    folders = scan_folders(image_dir, cache)
    order = class_folder_order(image_dir, [w for w, _ in folders], names, names_file, what, layout, every_class)
    label_of = {w: i for i, w in enumerate(order)}
    items = [Datum(str(image_dir / w / f), label_of[w], names[w]) for w, files in folders for f in files]
    classnames = [names[w] for w in order]
    if not items:
        raise DatasetError(f"no images under {image_dir}", image_dir, layout)
    return items, classnames


def _check_first_images(splits: dict[str, list[Datum]], layout: str) -> None:
    for part, items in splits.items():
        for d in items[:1] + items[-1:]:
            if not os.path.exists(d.impath):
                raise DatasetError(f"image listed in the {part} split not found: {d.impath}", d.impath, layout)


def load_dataset(name: str, root: str | os.PathLike, allow_folder_split: bool = False) -> CoopDataset:
    """Read one CoOp dataset (or ImageNet variant) from the data root that holds its folder.

    Without its split_zhou JSON a dataset is refused (the message says where the official file comes
    from), unless allow_folder_split=True and the images sit in class folders (Caltech101, Food101, DTD,
    EuroSAT): then the split is drawn from the folders and the dataset is labelled a folder split."""
    spec = get_spec(name)
    layout = spec.layout()
    ddir = require(Path(root).expanduser() / spec.dataset_dir, f"{spec.name} folder", layout, "dir")
    image_dir = require(ddir / spec.image_dir, f"{spec.name} image folder", layout, "dir") if spec.image_dir else ddir
    meta = {"split_source": "official"}
    if spec.kind == "split_json":
        if (ddir / spec.split_file).is_file():
            train, val, test = _read_split_json(spec, ddir, image_dir)
        elif spec.folder_fallback and allow_folder_split:
            train, val, test = _split_by_folders(spec, image_dir)
            meta.update(split_source="folder", split="folder listing (no split file; allow_folder_split)")
        else:
            raise DatasetError(missing_split_message(spec, ddir / spec.split_file), ddir / spec.split_file, layout)
        classnames = _classes_by_label(train + val + test, ddir / (spec.split_file or ""), layout)
    elif spec.kind == "fgvc":
        train, val, test, classnames = _read_fgvc(spec, ddir, image_dir)
    elif spec.kind == "imagenet":
        names_file = ddir / "classnames.txt"
        names = read_classnames(names_file, layout)
        tdir = require(image_dir / "train", "ImageNet train folder", layout, "dir")
        vdir = require(image_dir / "val", "ImageNet val folder", layout, "dir")
        train, classnames = _read_folder_split(tdir, names, names_file, "ImageNet train", layout,
                                               ddir / "scan_train.json")
        test, _ = _read_folder_split(vdir, names, names_file, "ImageNet val", layout, ddir / "scan_val.json")
        val = test  # CoOp: ImageNet's val set is its test set
        meta["val_is_test"] = True  # CoOp draws no few-shot val set for ImageNet
    elif spec.kind == "imagenetv2":
        by_wnid = read_classnames(ddir / "classnames.txt", layout)
        names = [by_wnid[w] for w in sorted(by_wnid)]  # folder <i> is label i of the sorted wnids
        test = []
        for folder in sorted(_class_folders(image_dir), key=lambda p: int(p.name) if p.name.isdigit() else -1):
            if not folder.name.isdigit() or int(folder.name) >= len(names):
                raise DatasetError(f"ImageNetV2 folder {folder} is not a label in 0..{len(names) - 1}", folder, layout)
            lab = int(folder.name)
            test += [Datum(str(p), lab, names[lab]) for p in _list_images(folder)]
        train, val, classnames = [], [], names
    else:  # folders: Sketch (all classes), A and R (the classes present, labels from the sorted folder list)
        names_file = ddir / "classnames.txt"
        names = read_classnames(names_file, layout)
        test, classnames = _read_folder_split(image_dir, names, names_file, spec.name, layout, ddir / "scan.json",
                                              every_class=not spec.class_subset)
        train, val = [], []
    _check_first_images({"train": train, "val": val, "test": test}, layout)
    return CoopDataset(spec.name, train, val, test, classnames, spec.template, ddir, "all", meta)


# ----------------------------------------------------------------------------- few-shot, base/new
def _group(items: list[Datum]) -> dict[int, list[Datum]]:
    """Items per label, the labels in order of first appearance (Dassl's split_dataset_by_label)."""
    groups: dict[int, list[Datum]] = {}
    for d in items:
        groups.setdefault(d.label, []).append(d)
    return groups


def _draw(items: list[Datum], k: int, rng: random.Random) -> list[Datum]:
    """Dassl's generate_fewshot_dataset (repeat=False): per label, k items by rng.sample, or all of them."""
    out = []
    for group in _group(items).values():
        out += rng.sample(group, k) if len(group) >= k else list(group)
    return out


def _fingerprint(ds: CoopDataset) -> list:
    return [len(ds.train), len(ds.val), len(ds.test), list(ds.classnames)]


class _DasslDatum:
    """Stand-in for dassl.data.datasets.base_dataset.Datum when reading Dassl's pickles (state only)."""


class _DasslUnpickler(pickle.Unpickler):
    """Reads Dassl's few-shot pickles without Dassl: Datum maps to a plain stand-in, nothing else loads."""
    ALLOWED = {("dassl.data.datasets.base_dataset", "Datum"): _DasslDatum,
               ("dassl.data.datasets", "Datum"): _DasslDatum,
               ("copyreg", "_reconstructor"): copyreg._reconstructor,
               ("builtins", "object"): object}

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a few-shot file") from None


def official_fewshot_path(ds: CoopDataset, shots: int, seed: int) -> Path | None:
    """Dassl's own cache file, <dataset_dir>/split_fewshot/shot_{K}-seed_{S}.pkl (never written here)."""
    return ds.dataset_dir / "split_fewshot" / f"shot_{shots}-seed_{seed}.pkl" if ds.dataset_dir else None


def own_fewshot_path(ds: CoopDataset, shots: int, seed: int) -> Path | None:
    """The project's cache of a draw, beside Dassl's files under its own name."""
    return ds.dataset_dir / "split_fewshot" / f"vlpt_shot_{shots}-seed_{seed}.json" if ds.dataset_dir else None


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[\\/]", path) if p)


def read_dassl_fewshot(path: Path, ds: CoopDataset) -> tuple[list[Datum], list[Datum] | None] | None:
    """(train, val or None) from a Dassl few-shot pickle, re-rooted onto this dataset's images.

    Dassl stores absolute paths of the machine that drew the shots: each is matched to the local item
    whose path under the dataset folder is its longest matching tail. Returns None when the file is not
    Dassl's (e.g. an old cache of this project under the same name). A path with no local image, or a
    label that disagrees with the local split, raises DatasetError."""
    try:
        data = _DasslUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as err:
        raise DatasetError(f"unreadable few-shot file {path} ({type(err).__name__}: {err}); it is Dassl's "
                           "cache: remove it to draw the shots again", path) from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), list) or "fingerprint" in data:
        return None

    def index(items: list[Datum]) -> tuple[dict, list[int]]:
        table = {_parts(os.path.relpath(d.impath, ds.dataset_dir)): d for d in items}
        return table, sorted({len(k) for k in table}, reverse=True)

    def rerooted(records, items: list[Datum], part: str) -> list[Datum]:
        table, depths = index(items)
        out = []
        for r in records:
            state = getattr(r, "__dict__", {})
            if "_impath" not in state:
                raise DatasetError(f"{path}: {part} entries are not Dassl Datum objects", path)
            parts = _parts(state["_impath"])
            local = next((table[parts[-n:]] for n in depths if parts[-n:] in table), None)
            if local is None:
                raise DatasetError(f"{path}: {part} image {state['_impath']} is not in the local {ds.name} "
                                   f"{part} split under {ds.dataset_dir}", path)
            if int(state.get("_label", local.label)) != local.label:
                raise DatasetError(f"{path}: {state['_impath']} has label {state['_label']} there but "
                                   f"{local.label} in the local split", path)
            out.append(local)
        return out

    train = rerooted(data["train"], ds.train, "train")
    val = rerooted(data["val"], ds.val, "val") if isinstance(data.get("val"), list) else None
    return train, val


def few_shot(ds: CoopDataset, shots: int, seed: int, cache: bool = True) -> CoopDataset:
    """K training images per class (val: min(K, 4)), Dassl's draw over ALL classes (call it before
    subsample_classes, as CoOp does). shots <= 0 returns the dataset unchanged.

    The draw is Dassl's generate_fewshot_dataset right after set_random_seed(seed): Python's `random`
    seeded with `seed` (a fresh generator: nothing drawn before changes it), labels in order of first
    appearance in the split's list, `sample(items, K)` per label (all items when fewer), the train list,
    then the val list with min(K, 4) (none for ImageNet, whose val set is its test set).

    Where Dassl's split_fewshot/shot_{K}-seed_{S}.pkl is in the dataset folder (official split only),
    its shots are used. Otherwise the draw is cached in split_fewshot/vlpt_shot_{K}-seed_{S}.json (paths
    relative to the dataset folder); Dassl's files are never written or overwritten.
    """
    if not shots or shots <= 0:
        return ds
    whole = ds.subsample == "all"
    info = {"shots": shots, "seed": seed, "cache": None, "reused": False, "source": "drawn"}
    official = official_fewshot_path(ds, shots, seed)
    if whole and official is not None and ds.split_source == "official" and official.is_file():
        got = read_dassl_fewshot(official, ds)
        if got is not None:
            train, val = got
            info.update(cache=str(official), reused=True, source="dassl")
            return replace(ds, train=train, val=ds.val if val is None else val, meta={**ds.meta, "few_shot": info})
    own = own_fewshot_path(ds, shots, seed) if cache and whole else None
    base = Path(ds.dataset_dir) if ds.dataset_dir else None
    if own is not None and own.is_file():
        try:
            data = json.loads(own.read_text())
            if data.get("fingerprint") == _fingerprint(ds):
                unpack = lambda rows: [Datum(str(base / p), int(l), c) for p, l, c in rows]  # noqa: E731
                info.update(cache=str(own), reused=True, source="cache")
                val = ds.val if data.get("val") is None else unpack(data["val"])
                return replace(ds, train=unpack(data["train"]), val=val, meta={**ds.meta, "few_shot": info})
        except (OSError, ValueError, TypeError, KeyError):  # unreadable or stale cache: draw again
            pass
    rng = random.Random(seed)  # = random.seed(seed) in Dassl's set_random_seed, before the dataset is built
    train = _draw(ds.train, shots, rng)
    val = ds.val if ds.meta.get("val_is_test") else _draw(ds.val, min(shots, 4), rng)
    if own is not None:
        rel = lambda items: [[os.path.relpath(d.impath, base), d.label, d.classname] for d in items]  # noqa: E731
        try:
            atomic_write(own, json.dumps({"fingerprint": _fingerprint(ds), "train": rel(train),
                                          "val": None if ds.meta.get("val_is_test") else rel(val)}))
            info["cache"] = str(own)
        except (OSError, ValueError, TypeError):
            pass  # read-only data root: the draw is still deterministic from the seed
    return replace(ds, train=train, val=val, meta={**ds.meta, "few_shot": info})


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


__all__ = ["DATASETS", "BASE_TO_NEW", "VARIANTS", "Datum", "DatasetSpec", "CoopDataset", "load_dataset",
           "few_shot", "read_dassl_fewshot", "OFFICIAL_SPLITS", "FOLDER_SPLIT_NOTE", "base_label",
           "subsample_classes", "base_new_labels", "ImageListDataset", "open_image", "get_spec",
           "read_classnames", "scan_folders", "class_folder_order"]
