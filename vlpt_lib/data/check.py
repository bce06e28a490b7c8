"""What data each paper table needs, where it is expected, and whether it is there (00_setup shows it).

The CoCoOp datasets need their official split files (split_zhou_<Name>.json, from CoOp's DATASETS.md),
as `coop.load_dataset` does: a missing one is required unless `allow_folder_split` is set, and then only
for the datasets whose images sit in class folders (the loader's folder split, labelled as such).

`needs` (the datasets the selected notebooks read with their parameters, computed by the runner) makes only
their rows required: a run of Table 1 on OxfordPets alone is not refused for the datasets it never opens, which
are still listed.

On the paper profile 00_setup raises `DataMissing` when something required is missing: its message
(`missing_message`) is the whole text the user reads (the runner prints it alone): what to do first, then the
missing items per dataset with the dataset's download page, as paths relative to the data root.
"""
from __future__ import annotations

import os
from pathlib import Path

from .coop import BASE_TO_NEW, DATASETS, FOLDER_SPLIT_NOTE, VARIANTS, get_spec
from .world_layout import MINI_DATASETS, MINI_VARIANTS, STAMP, stamp_matches

B2N = "cocoop_base2new, cocoop_cross_dataset"
DG = "cocoop_domain_generalization"
ADE20K = "ADE20K"  # the name a notebook's needs give the segmentation data (the others: coop.DATASETS names)
UNSET_ROOT = "<set data_root or VLPT_DATA_ROOT>"  # the rows' stand-in root while no data root is set

COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
# where each dataset comes from: CoOp's DATASETS.md section (its images, split_zhou_<Name>.json, classnames.txt)
DOWNLOADS = {name: f"{COOP_DATASETS_MD}#{anchor}" for name, anchor in {
    "Caltech101": "caltech101", "OxfordPets": "oxfordpets", "StanfordCars": "stanfordcars",
    "OxfordFlowers": "flowers102", "Food101": "food101", "FGVCAircraft": "fgvcaircraft", "SUN397": "sun397",
    "DescribableTextures": "dtd", "EuroSAT": "eurosat", "UCF101": "ucf101", "ImageNetV2": "imagenetv2",
    "ImageNetSketch": "imagenet-sketch", "ImageNetA": "imagenet-a", "ImageNetR": "imagenet-r"}.items()}
DOWNLOADS["ImageNet"] = ("https://image-net.org/download.php (train and val images); ImageNet class names "
                         f"(classnames.txt): {COOP_DATASETS_MD}#imagenet")
DOWNLOADS[ADE20K] = "http://sceneparsing.csail.mit.edu/ (ADEChallengeData2016.zip)"
# OpenAI's ViT-B/16 file, the one open_clip's "openai" tag of ViT-B-16 names (open_clip/pretrained.py)
OPENAI_VIT_B_16 = ("https://openaipublic.azureedge.net/clip/models/"
                   "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt")


class DataMissing(Exception):
    """00_setup on the paper profile: something the run reads is missing. The message is the whole text for
    the user (what to do, then what is missing per dataset); the runner prints it alone, without a traceback."""


def _dataset_rows(root: Path, allow_folder_split: bool = False) -> list[dict]:
    rows = []
    for name in BASE_TO_NEW + VARIANTS:
        spec = DATASETS[name]
        ddir = root / spec.dataset_dir
        table = DG if name in VARIANTS else (B2N if name != "ImageNet" else f"{B2N}, {DG}")
        image_dir = ddir / spec.image_dir if spec.image_dir else ddir
        first = len(rows)
        rows.append({"table": table, "what": f"{name} images", "path": str(image_dir), "kind": "dir"})
        if spec.kind == "split_json":
            optional = allow_folder_split and spec.folder_fallback
            what = f"{name} official split file (CoOp's DATASETS.md)"
            if optional:
                what += f"; missing: folder split, rows labelled '{name}{FOLDER_SPLIT_NOTE}'"
            rows.append({"table": table, "what": what, "path": str(ddir / spec.split_file), "kind": "file",
                         "required": not optional})
        elif spec.kind == "fgvc":
            for part in ("train", "val", "test"):
                rows.append({"table": table, "what": f"{name} {part} list", "path": str(ddir / f"images_variant_{part}.txt"),
                             "kind": "file"})
        else:
            rows.append({"table": table, "what": f"{name} class names", "path": str(ddir / "classnames.txt"), "kind": "file"})
            if spec.kind == "imagenet":
                rows[-2]["path"] = str(image_dir / "val")
                rows[-2]["what"] = "ImageNet val images (CoOp's test set)"
                rows.insert(len(rows) - 2, {"table": table, "what": "ImageNet train images (few-shot source)",
                                            "path": str(image_dir / "train"), "kind": "dir"})
        for row in rows[first:]:
            row["dataset"] = name
    return rows


def _mvp_rows(root: Path) -> list[dict]:
    t1, t2 = "mvp pre-training, imagenet_finetune", "ade20k_segmentation"
    ade = root / "ADEChallengeData2016"
    rows = [
        {"table": t1, "what": "ImageNet-1K train images", "path": str(root / "imagenet/images/train"), "kind": "dir"},
        {"table": t1, "what": "ImageNet-1K val images", "path": str(root / "imagenet/images/val"), "kind": "dir"},
        {"table": t1, "what": "ImageNet class names", "path": str(root / "imagenet/classnames.txt"), "kind": "file"},
    ] + [{"table": t2, "what": f"ADE20K {kind} {split}", "path": str(ade / kind / split), "kind": "dir"}
         for split in ("training", "validation") for kind in ("images", "annotations")]
    for row in rows:
        row["dataset"] = "ImageNet" if row["table"] == t1 else ADE20K
    return rows


def _present(row: dict) -> bool:
    p = Path(row["path"])
    return p.is_dir() if row["kind"] == "dir" else p.is_file()


def _dataset_names(needs) -> set[str]:
    """The registry's names of `needs` (an alias works: "dtd"); ValueError for a name no dataset has."""
    out = set()
    for name in needs:
        if name == ADE20K:
            out.add(name)
            continue
        try:
            out.add(get_spec(name).name)
        except KeyError as err:
            raise ValueError(f"{err.args[0]}, {ADE20K}") from None
    return out


def data_requirements(root: str | os.PathLike | None, world_hash: str | None = None,
                      allow_folder_split: bool = False, needs=None) -> list[dict]:
    """Rows {table, what, path, present, required, dataset}. world_hash None: the real datasets the paper profile
    reads under `root` (None: not set yet); the config hash of a generated world (the profile module's
    part): that world in `root`, present only when its stamp carries this hash.
    allow_folder_split: a missing split file of a class-folder dataset is not required (the prompt
    job's `allow_folder_split`).
    needs: the datasets the run reads (coop.DATASETS names or their aliases, "ADE20K"): every other dataset's rows
    are listed with required False. None: every row is required (all of the profile's tables)."""
    wanted = None if needs is None else _dataset_names(needs)
    if world_hash is None:
        base = _base(root)
        rows = _dataset_rows(base, allow_folder_split) + _mvp_rows(base)
    else:
        base = Path(root)
        rows = [{"table": "all (mini world)", "what": f"generated world (config {world_hash})",
                 "path": str(base / STAMP), "kind": "file"}]
        rows += [r for r in _dataset_rows(base, allow_folder_split) + _mvp_rows(base) if _world_has(r)]
        rows.append({"table": "mini CLIP", "what": "image-caption pairs (open_clip CSV)",
                     "path": str(base / "captions" / "train.csv"), "kind": "file"})
        stamp_ok = stamp_matches(base, world_hash)
    out = []
    for r in rows:
        present = _present(r)
        if world_hash is not None and r["path"].endswith(STAMP):
            present = present and stamp_ok
        needed = wanted is None or r.get("dataset") is None or r["dataset"] in wanted
        out.append({"table": r["table"], "what": r["what"], "path": r["path"], "present": bool(present),
                    "required": r.get("required", True) and needed, "dataset": r.get("dataset")})
    return out


def _world_has(row: dict) -> bool:
    names = set(MINI_DATASETS + MINI_VARIANTS)
    first = row["what"].split(" ")[0]
    return first in names or row["table"].startswith(("mvp", "ade20k"))


def _base(root) -> Path:
    return Path(root).expanduser() if root else Path(UNSET_ROOT)


def missing_by_dataset(rows: list[dict], root) -> dict[str, list[str]]:
    """The required rows that are missing, per dataset in the rows' order: their paths relative to the data
    root (a folder ends in "/"), each path once (ImageNet's folders serve CoCoOp and MVP alike)."""
    base, out, seen = _base(root), {}, set()
    for r in rows:
        if r["present"] or not r["required"] or r["path"] in seen:
            continue
        seen.add(r["path"])
        path = Path(r["path"])
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            rel = str(path)
        folder = not path.suffix  # the files checked are .json/.txt; the folders have no suffix
        out.setdefault(r.get("dataset") or r["what"], []).append(rel + ("/" if folder else ""))
    return out


def _weights_step(weights) -> str:
    name, pretrained = (str(w) for w in weights)
    offline = f"set `clip_pretrained: /path/to/{name}.pt` in params/paper/*.yaml"
    if name == "ViT-B-16":
        offline = f"download OpenAI's file {OPENAI_VIT_B_16} and {offline}"
    if any(ch in pretrained for ch in "/\\") or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        return (f"CLIP weights: the file {pretrained} (clip_pretrained) does not exist. Offline, {offline}; "
                f"online, set `clip_pretrained: openai` there and fetch the tag once: {_fetch(name, 'openai')}.")
    return (f"CLIP weights ({name}, open_clip tag `{pretrained}`, not in the local cache): online, fetch the tag "
            f"into the local open_clip cache (Hugging Face) once: {_fetch(name, pretrained)}; offline, {offline}.")


def _fetch(name: str, tag: str) -> str:
    return f"python -c \"from vlpt_lib.models.clip import load_clip; load_clip('{name}', '{tag}')\""


def missing_message(rows: list[dict], root, weights=None) -> str:
    """What the user reads when the paper profile lacks data or weights ("" when nothing required is missing).

    rows: data_requirements rows (00_setup's selection); only the required missing ones count.
    root: the data root they were checked under (the data_root parameter or $VLPT_DATA_ROOT; None: not set).
    weights: (model name, open_clip tag or file) of CLIP weights that were not found; None: they are in place.
    It leads with what to do, then lists per dataset its download page and missing paths relative to root."""
    groups = missing_by_dataset(rows, root)
    if not groups and weights is None:
        return ""
    steps = []
    if groups:
        where = "the folder holding the datasets (or `data_root:` in params/paper/*.yaml), laid out as below"
        if not root:
            steps.append(f"Datasets: set VLPT_DATA_ROOT to {where}.")
        elif not _base(root).is_dir():
            steps.append(f"Datasets: the data root {root} is not a folder; set VLPT_DATA_ROOT to {where}.")
        else:
            steps.append(f"Datasets: put what is missing below into the data root {root} (VLPT_DATA_ROOT or "
                         "`data_root:` in params/paper/*.yaml).")
    if weights is not None:
        steps.append(_weights_step(weights))
    lines = ["The paper profile is missing " + " and ".join(
        w for w, on in (("data", groups), ("CLIP weights", weights is not None)) if on) + " it reads. What to do:"]
    lines += [f"  {i}. {step}" for i, step in enumerate(steps, 1)]
    lines.append("  Then run the same `python -m vlpt_lib reproduce` command again.")
    if groups:
        lines += ["", f"Missing under the data root ({root if root else 'VLPT_DATA_ROOT, not set yet'}), "
                      "per dataset with its download page:"]
        for dataset, paths in groups.items():
            lines.append(f"  {dataset}: {DOWNLOADS.get(dataset, '')}".rstrip(": "))
            by_dir: dict[str, list[str]] = {}  # paths under the dataset's folder: "in <folder>/: a, b"
            for rel in paths:
                top, _, rest = rel.partition("/") if not rel.startswith("/") else ("", "", rel)
                by_dir.setdefault(top, []).append(rest or "the folder itself (images)")
            lines += [f"    in {top}/: {', '.join(items)}" if top else f"    {', '.join(items)}"
                      for top, items in by_dir.items()]
    lines.append("")
    if any("split_zhou_" in p for paths in groups.values() for p in paths):
        lines.append("split_zhou_<Name>.json: CoOp's fixed splits, linked from each dataset's section of "
                     "DATASETS.md (the paper's numbers are measured on them).")
    lines.append("notebooks/00_setup.ipynb lists every item with the tables that read it.")
    return "\n".join(lines)
