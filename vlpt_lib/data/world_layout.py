"""What a generated world looks like on disk, as far as its readers need to know: its stamp file and the
CoOp-style registry names it holds.

The generators (vlpt_lib.worlds) write this layout and the readers here (the data check, the mini CLIP's
zero-shot evaluation) read it; both import these names from this module, so neither side imports the
other. The stamp is a JSON object whose "hash" identifies the config the world was generated from.
"""
from __future__ import annotations

import json
from pathlib import Path

STAMP = "world_stamp.json"

# CoOp-style registry names present in the mini world (ImageNet first: the cross-dataset source)
MINI_DATASETS = ("ImageNet", "Caltech101", "OxfordPets", "DescribableTextures", "EuroSAT", "FGVCAircraft")
MINI_VARIANTS = ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR")


def stamp_matches(root: str | Path, config_hash: str, stamp: str = STAMP) -> bool:
    """Whether the world in `root` was generated from the config with hash `config_hash` (its stamp says
    so); False when the stamp is missing or unreadable."""
    try:
        return json.loads((Path(root) / stamp).read_text()).get("hash") == config_hash
    except (OSError, ValueError):
        return False
