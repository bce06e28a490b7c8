"""The mini-world generator: deterministic, cached by config hash, and its captions name every class word."""
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from vlpt_lib.data import world_layout as L
from vlpt_lib.workbook import profiles
from vlpt_lib.worlds import mini_world as M
from vlpt_lib.worlds import render as R

TINY = replace(M.CONFIGS["smoke"], imagenet_classes=4, imagenet_train=2, imagenet_val=1, variant_per_class=1,
               subset_classes=2, coop_train=2, coop_val=1, coop_test=1, ade_train=2, ade_val=1, captions=40)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    a = M.ensure_world(tmp_path / "a", TINY)
    b = M.ensure_world(tmp_path / "b", TINY)
    da, db = _digest(a), _digest(b)
    assert da == db and len(da) > 100
    c = M.ensure_world(tmp_path / "c", replace(TINY, seed=1))
    dc = _digest(c)
    assert dc.keys() == da.keys() and sum(da[k] != dc[k] for k in da) > len(da) // 2


def test_stamp_makes_rerun_a_noop_and_config_change_regenerates(tmp_path):
    root = M.ensure_world(tmp_path / "w", TINY)
    marker = root / "imagenet" / "marker"
    marker.write_text("x")
    M.ensure_world(root, TINY)
    assert marker.exists()  # no-op: nothing rewritten
    M.ensure_world(root, replace(TINY, captions=41))
    assert not marker.exists() and M.is_current(root, replace(TINY, captions=41))
    assert len((root / "captions" / "train.csv").read_text().splitlines()) == 42


def test_ensure_world_uses_results_root(results_root, monkeypatch):
    monkeypatch.setitem(M.CONFIGS, "smoke", TINY)
    root = profiles.ensure_world_of("smoke")
    assert root == results_root / "smoke" / "world" and (root / L.STAMP).is_file()
    with pytest.raises(ValueError):
        profiles.ensure_world_of("paper")


def test_real_layouts_are_written(tmp_path):
    root = M.ensure_world(tmp_path / "w", TINY)
    for rel in ["imagenet/classnames.txt", "imagenet/images/train", "imagenet/images/val",
                "imagenetv2/imagenetv2-matched-frequency-format-val/0", "imagenetv2/classnames.txt",
                "imagenet-sketch/images", "imagenet-adversarial/imagenet-a", "imagenet-rendition/imagenet-r",
                "caltech-101/split_zhou_Caltech101.json", "caltech-101/101_ObjectCategories/BACKGROUND_Google",
                "caltech-101/101_ObjectCategories/Faces_easy", "oxford_pets/split_zhou_OxfordPets.json",
                "dtd/split_zhou_DescribableTextures.json", "eurosat/split_zhou_EuroSAT.json", "eurosat/2750/Forest",
                "fgvc_aircraft/images_variant_train.txt", "fgvc_aircraft/variants.txt",
                "ADEChallengeData2016/images/training", "ADEChallengeData2016/annotations/validation",
                "ADEChallengeData2016/objectInfo150.txt", "captions/train.csv"]:
        assert (root / rel).exists(), rel
    wnids = sorted(p.name for p in (root / "imagenet/images/train").iterdir())
    sub = sorted(p.name for p in (root / "imagenet-adversarial/imagenet-a").iterdir() if p.is_dir())
    assert len(sub) == TINY.subset_classes < len(wnids) and set(sub) <= set(wnids)
    header = (root / "captions/train.csv").read_text().splitlines()[0]
    assert header == "filepath\ttitle"


def test_captions_cover_every_class_word_and_fit_the_context():
    import numpy as np
    import open_clip

    cfg = M.CONFIGS["mini"]
    rng = np.random.default_rng(0)
    texts = [M.caption_example(12, rng, cfg)[1] for _ in range(800)]
    vocab = set(" ".join(texts).lower().replace(".", " ").replace(",", " ").replace(":", " ").split())
    words = {w for names in M.all_class_names(cfg).values() for n in names for w in n.lower().split()}
    assert words - vocab == set()
    tok = open_clip.get_tokenizer("RN50")  # same BPE as every open_clip model
    longest = max(int((t != 0).sum()) for t in tok(texts, context_length=77))
    assert longest <= 25


def test_captions_never_use_the_zero_shot_templates():
    # The templates' fixed parts ("a photo of a ", ", a type of pet.", " texture.", "a centered satellite photo
    # of ") must be foreign to the captions: the misfit between how the CLIP learned to read text and the
    # hand-written templates is what CoOp's learned context can fix (issue #12).
    import numpy as np

    from vlpt_lib.data import coop

    rng = np.random.default_rng(1)
    texts = [M.caption_example(12, rng, M.CONFIGS["mini"])[1].lower() for _ in range(1500)]
    parts = {part.strip() for name in L.MINI_DATASETS + L.MINI_VARIANTS
             for part in coop.DATASETS[name].template.lower().split("{}") if len(part.strip()) > 2}
    assert {"a photo of a", "texture.", "a centered satellite photo of", ", a type of pet."} <= parts
    found = {part: t for part in parts for t in texts if part in t}
    assert not found, found


def test_class_counts_match_the_paper_structure():
    names = M.all_class_names(M.CONFIGS["mini"])
    assert len(names["OxfordPets"]) % 2 == 1 and len(names["DescribableTextures"]) % 2 == 1
    assert all(len(set(v)) == len(v) for v in names.values())
    assert names["ADE20K"] == list(R.TEXTURES)  # the stuff; the things (shapes) are "other"


def test_ade_scenes_are_stuff_and_things():
    # ADE20K stand-in: 2-4 textured "stuff" regions in random colours + 0-3 shape "things" labelled 0 ("other");
    # the same seed paints the same scene, and a texture's colours never name its class.
    import numpy as np

    scenes = [R.stuff_scene(32, np.random.default_rng(i)) for i in range(40)]
    img, mask, info = scenes[0]
    again = R.stuff_scene(32, np.random.default_rng(0))
    assert np.array_equal(img, again[0]) and np.array_equal(mask, again[1])
    assert img.shape == (32, 32, 3) and mask.dtype == np.uint8
    for _, m, inf in scenes:
        assert m.max() <= len(R.ADE_CLASSES) and (m == 0).any() == bool(inf["things"])
        assert 2 <= len(inf["stuff"]) <= 4 and len(inf["things"]) <= 3
        assert len({s["texture"] for s in inf["stuff"]}) == len(inf["stuff"])
        assert set(np.unique(m[m >= 1])) <= {R.ADE_CLASSES.index(s["texture"]) + 1 for s in inf["stuff"]}
    colours = {}
    for _, _, inf in scenes:
        for s in inf["stuff"]:
            colours.setdefault(s["texture"], set()).add(s["colours"])
    assert max(len(c) for c in colours.values()) >= 3


def test_a_killed_generation_leaves_nothing_behind_after_the_next(tmp_path):
    dead = tmp_path / ".w.partial-999999999"  # no such process: a generation killed before it could clean up
    (dead / "imagenet").mkdir(parents=True)
    live = tmp_path / f".w.partial-{os.getppid()}"  # a running process's: left alone
    live.mkdir()
    M.ensure_world(tmp_path / "w", TINY)
    assert not dead.exists() and live.exists()
