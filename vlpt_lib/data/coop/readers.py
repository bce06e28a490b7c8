"""The readers of the datasets' real on-disk formats, one per DatasetSpec.kind: split_zhou JSON (with
CoOp's folder split only where allowed), FGVC-Aircraft's lists, ImageNet's class folders with
classnames.txt, ImageNetV2's numbered folders, and the class-folder variants (Sketch, A, R).

load_dataset picks the reader from the registry (specs) and returns a CoopDataset (dataset); labels of
class folders come from classnames.txt in ImageNet's order, and a missing or unknown folder is an error.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

from .. import DatasetError, require
from .dataset import CoopDataset, Datum
from .folder_scan import class_folders, list_images, scan_folders
from .specs import DatasetSpec, clean_classname, get_spec, missing_split_message

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


def _check_label_names(rows: dict[str, list[tuple[str, int, str]]], path: Path) -> None:
    """One class name per label and one label per class name across the file's splits, as the file writes
    them (before clean_classname): the class list is built from these pairs, so a row that contradicts
    another would silently train or score its images under the wrong class."""
    first_name: dict[int, tuple[str, str, int, str]] = {}   # label -> (name, split, row, path) where first seen
    first_label: dict[str, tuple[int, str, int, str]] = {}  # name -> (label, split, row, path) where first seen
    for part, items in rows.items():
        for i, (rel, lab, cname) in enumerate(items):
            seen = first_name.setdefault(lab, (cname, part, i, rel))
            if seen[0] != cname:
                conflict = f"{seen[1]} row {seen[2]} ({seen[3]}) gives label {lab} to {seen[0]!r}"
            else:
                seen = first_label.setdefault(cname, (lab, part, i, rel))
                if seen[0] == lab:
                    continue
                conflict = f"{seen[1]} row {seen[2]} ({seen[3]}) gives {cname!r} label {seen[0]}"
            raise DatasetError(f"split file {path}: {part} row {i} ({rel}) gives {cname!r} label {lab}, but "
                               f"{conflict}; regenerate the split file or fix {part} row {i}", path)


def _read_split_json(spec: DatasetSpec, ddir: Path, image_dir: Path):
    path = ddir / spec.split_file
    try:
        split = json.loads(path.read_text())
        rows = {part: [(rel, int(lab), str(cname)) for rel, lab, cname in split[part]]
                for part in ("train", "val", "test")}
        out = {part: [Datum(str(image_dir / rel), lab, clean_classname(cname)) for rel, lab, cname in items]
               for part, items in rows.items()}
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"malformed split file {path} ({type(err).__name__}: {err})", path, spec.layout()) from None
    _check_label_names(rows, path)
    return out["train"], out["val"], out["test"]


def _split_by_folders(spec: DatasetSpec, image_dir: Path, p_train=0.5, p_val=0.2, seed=0):
    """CoOp's rule when no split file exists: per class, shuffle, 50% train, 20% val, rest test."""
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label, folder in enumerate(class_folders(image_dir, spec.ignored)):
        files = list_images(folder)
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
    """ImageNet's classnames.txt: '<wnid> <class name>' per line, in the file's order (ImageNet's labels follow its
    sorted class folders, ImageNetV2's the file's lines, as in CoOp); a repeated wnid is an error, not a silently
    replaced name."""
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
        # folder <i> is the class on line i of classnames.txt, whatever its order (CoOp's datasets/imagenetv2.py:
        # folders = list(classnames.keys()); classnames[folders[label]]), not of the sorted wnids
        names = list(read_classnames(ddir / "classnames.txt", layout).values())
        test = []
        for folder in sorted(class_folders(image_dir), key=lambda p: int(p.name) if p.name.isdigit() else -1):
            if not folder.name.isdigit() or int(folder.name) >= len(names):
                raise DatasetError(f"ImageNetV2 folder {folder} is not a label in 0..{len(names) - 1}", folder, layout)
            lab = int(folder.name)
            test += [Datum(str(p), lab, names[lab]) for p in list_images(folder)]
        train, val, classnames = [], [], names
    else:  # folders: Sketch (all classes), A and R (the classes present, labels from the sorted folder list)
        names_file = ddir / "classnames.txt"
        names = read_classnames(names_file, layout)
        test, classnames = _read_folder_split(image_dir, names, names_file, spec.name, layout, ddir / "scan.json",
                                              every_class=not spec.class_subset)
        train, val = [], []
    _check_first_images({"train": train, "val": val, "test": test}, layout)
    return CoopDataset(spec.name, train, val, test, classnames, spec.template, ddir, "all", meta)
