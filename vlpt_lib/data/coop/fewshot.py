"""CoOp's few-shot draw (Dassl's generate_fewshot_dataset, seeded) with its cache, and the base/new split
of the classes (first ceil(n/2) labels = base, relabelled 0..m-1).

few_shot uses Dassl's own pickle when it is there (dassl_pickle), else draws and caches the draw as
split_fewshot/vlpt_shot_{K}-seed_{S}.json beside it; call it before subsample_classes, as CoOp does.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import replace
from pathlib import Path

from ...utils.io import atomic_write
from .dassl_pickle import official_fewshot_path, read_dassl_fewshot
from .dataset import CoopDataset, Datum

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


def own_fewshot_path(ds: CoopDataset, shots: int, seed: int) -> Path | None:
    """The project's cache of a draw, beside Dassl's files under its own name."""
    return ds.dataset_dir / "split_fewshot" / f"vlpt_shot_{shots}-seed_{seed}.json" if ds.dataset_dir else None


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
