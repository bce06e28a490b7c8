"""What data each paper table needs, where it is expected, and whether it is there (00_setup shows it).

The CoCoOp datasets need their official split files (split_zhou_<Name>.json, from CoOp's DATASETS.md),
as `coop.load_dataset` does: a missing one is required unless `allow_folder_split` is set, and then only
for the datasets whose images sit in class folders (the loader's folder split, labelled as such).

`needs` (the datasets the selected notebooks read with their parameters, computed by the runner) makes only
their rows required: a run of Table 1 on OxfordPets alone is not refused for the datasets it never opens, which
are still listed.
"""
from __future__ import annotations

import os
from pathlib import Path

from .coop import BASE_TO_NEW, DATASETS, FOLDER_SPLIT_NOTE, VARIANTS, get_spec
from .world_layout import MINI_DATASETS, MINI_VARIANTS, STAMP, stamp_matches

B2N = "cocoop_base2new, cocoop_cross_dataset"
DG = "cocoop_domain_generalization"
ADE20K = "ADE20K"  # the name a notebook's needs give the segmentation data (the others: coop.DATASETS names)


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
    """Rows {table, what, path, present, required}. world_hash None: the real datasets the paper profile
    reads under `root` (None: not set yet); the config hash of a generated world (the profile module's
    part): that world in `root`, present only when its stamp carries this hash.
    allow_folder_split: a missing split file of a class-folder dataset is not required (the prompt
    job's `allow_folder_split`).
    needs: the datasets the run reads (coop.DATASETS names or their aliases, "ADE20K"): every other dataset's rows
    are listed with required False. None: every row is required (all of the profile's tables)."""
    wanted = None if needs is None else _dataset_names(needs)
    if world_hash is None:
        base = Path(root).expanduser() if root else Path("<set data_root or VLPT_DATA_ROOT>")
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
                    "required": r.get("required", True) and needed})
    return out


def _world_has(row: dict) -> bool:
    names = set(MINI_DATASETS + MINI_VARIANTS)
    first = row["what"].split(" ")[0]
    return first in names or row["table"].startswith(("mvp", "ade20k"))
