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

One file per concern; this package re-exports their public names, so `from vlpt_lib.data import coop`
then `coop.load_dataset(...)` is the interface:

    specs.py         the registry: DatasetSpec per dataset (folder, kind, template, split file), get_spec
    dataset.py       Datum, CoopDataset, and the torch ImageListDataset / open_image
    folder_scan.py   class-folder listing with its JSON cache for large scans
    readers.py       one reader per on-disk kind, and load_dataset that picks it
    dassl_pickle.py  Dassl's few-shot pickles, read without Dassl (restricted unpickler)
    fewshot.py       the few-shot draw with its cache, and the base/new class split
"""
from __future__ import annotations

from .dassl_pickle import official_fewshot_path, read_dassl_fewshot
from .dataset import CoopDataset, Datum, ImageListDataset, open_image
from .fewshot import base_new_labels, few_shot, own_fewshot_path, subsample_classes
from .folder_scan import IMAGE_EXTS, SCAN_CACHE_MIN, scan_folders
from .readers import class_folder_order, load_dataset, read_classnames
from .specs import (ALIASES, BASE_TO_NEW, CALTECH_IGNORED, DATASETS, FOLDER_SPLIT_NOTE, OFFICIAL_SPLITS, PHOTO,
                    VARIANTS, DatasetSpec, base_label, clean_classname, get_spec, missing_split_message)

__all__ = ["DATASETS", "BASE_TO_NEW", "VARIANTS", "Datum", "DatasetSpec", "CoopDataset", "load_dataset",
           "few_shot", "read_dassl_fewshot", "OFFICIAL_SPLITS", "FOLDER_SPLIT_NOTE", "base_label",
           "subsample_classes", "base_new_labels", "ImageListDataset", "open_image", "get_spec",
           "read_classnames", "scan_folders", "class_folder_order",
           # also public in the single-file module this package replaced
           "ALIASES", "CALTECH_IGNORED", "IMAGE_EXTS", "PHOTO", "SCAN_CACHE_MIN", "clean_classname",
           "missing_split_message", "official_fewshot_path", "own_fewshot_path"]
