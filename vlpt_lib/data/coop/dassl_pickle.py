"""Reading Dassl's own few-shot caches (split_fewshot/shot_{K}-seed_{S}.pkl) without Dassl installed.

The pickle holds Dassl Datum objects with the absolute paths of the machine that drew the shots: a
restricted unpickler maps Datum to a plain stand-in (nothing else may load), and every path is re-rooted
onto the local dataset's items. Kept apart from the few-shot rule because it is a file format with its
own safety concern (unpickling), not part of the draw.
"""
from __future__ import annotations

import copyreg
import io
import os
import pickle
import re
from pathlib import Path

from .. import DatasetError
from .dataset import CoopDataset, Datum

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
