"""Listing class folders and their images, with a JSON cache for large scans (ImageNet's 1.28M files).

A scan with at least SCAN_CACHE_MIN files is written beside the data (atomically; skipped on a read-only
root) and reused while the mtimes of the folder and of every class folder are unchanged: adding or removing a file
changes its class folder's mtime, not the top folder's.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...utils.io import atomic_write

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SCAN_CACHE_MIN = 50_000  # folder scans with more files than this are cached to JSON beside the data


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def class_folders(image_dir: Path, ignored=()) -> list[Path]:
    return sorted(p for p in image_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in ignored)


def scan_folders(image_dir: Path, cache: Path | None = None) -> list[tuple[str, list[str]]]:
    """[(class folder name, [file names])] in sorted order; large scans are cached to a JSON file."""
    folders = class_folders(image_dir)
    key = [image_dir.stat().st_mtime_ns] + [[f.name, f.stat().st_mtime_ns] for f in folders]
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == key:
                return [(k, v) for k, v in data["folders"]]
        except (OSError, ValueError, KeyError):
            pass
    listing = [(f.name, [p.name for p in list_images(f)]) for f in folders]
    if cache is not None and sum(len(v) for _, v in listing) >= SCAN_CACHE_MIN:
        try:
            atomic_write(cache, json.dumps({"key": key, "folders": listing}))
        except OSError:
            pass  # read-only data: just rescan next time
    return listing
