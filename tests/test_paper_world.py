"""The paper world: the real datasets' layouts and class counts, read by the same loaders as the real data."""
import math
import time
from collections import Counter

import numpy as np
import pytest
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from PIL import Image

from vlpt_lib.data import check, coop
from vlpt_lib.data.ade20k import ADE20K, ADE20K_CLASSES
from vlpt_lib.data.imagefolder import ImageNetFolder
from vlpt_lib.worlds import paper_world as PW

# The real class counts. Sources: CoOp's DATASETS.md and the CoCoOp paper (Zhou et al., CVPR 2022), the
# dataset statistics table of its appendix (ImageNet 1000, Caltech101 100, OxfordPets 37, StanfordCars 196,
# Flowers102 102, Food101 101, FGVCAircraft 100, SUN397 397, DTD 47, EuroSAT 10, UCF101 101); ImageNet-V2
# and -Sketch keep ImageNet's 1000; ImageNet-A (Hendrycks et al. 2021, "Natural Adversarial Examples") and
# ImageNet-R (Hendrycks et al. 2021, "The Many Faces of Robustness") use 200-class subsets.
REAL_CLASSES = {"ImageNet": 1000, "Caltech101": 100, "OxfordPets": 37, "StanfordCars": 196, "OxfordFlowers": 102,
                "Food101": 101, "FGVCAircraft": 100, "SUN397": 397, "DescribableTextures": 47, "EuroSAT": 10,
                "UCF101": 101, "ImageNetV2": 1000, "ImageNetSketch": 1000, "ImageNetA": 200, "ImageNetR": 200}
ADE20K_REAL_CLASSES = 150  # SceneParsing benchmark (ADEChallengeData2016): 150 classes + 0 "other"
SHOTS = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    start = time.time()
    root = PW.ensure_paper_world(tmp_path_factory.mktemp("paper") / "world")
    files = [p for p in root.rglob("*") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in files) / 2**20
    print(f"\npaper world: {len(files)} files, {megabytes:.1f} MB, generated in {time.time() - start:.1f} s")
    return root


def test_the_data_check_finds_every_input_of_the_paper_profile(world):
    rows = check.data_requirements(world)
    assert len(rows) > 30  # every dataset's images + split file / lists / class names, ImageNet, ADE20K
    assert [r["path"] for r in rows if not r["present"]] == []


@pytest.mark.parametrize("name", list(REAL_CLASSES))
def test_each_dataset_loads_with_its_real_class_count(world, name):
    ds = coop.load_dataset(name, world)
    n = REAL_CLASSES[name]
    assert ds.num_classes == n and ds.split_source == "official"
    if coop.DATASETS[name].kind in ("split_json", "fgvc"):  # stand-in names: unique within the dataset
        assert len({c.lower() for c in ds.classnames}) == n
    assert {d.label for d in ds.test} == set(range(n))   # every class has test images
    base, new = coop.subsample_classes(ds, "base"), coop.subsample_classes(ds, "new")
    assert (base.num_classes, new.num_classes) == (math.ceil(n / 2), n - math.ceil(n / 2))
    assert {d.label for d in new.test} == set(range(n - math.ceil(n / 2)))
    shots = coop.few_shot(ds, SHOTS, seed=1, cache=False)
    per_class = Counter(d.label for d in ds.train)
    assert len(shots.train) == sum(min(SHOTS, k) for k in per_class.values())  # Dassl: all when fewer than K
    if name not in coop.VARIANTS:  # the variants are test sets only
        assert set(per_class) == set(range(n)) and min(per_class.values()) >= 2
        assert coop.subsample_classes(shots, "base").num_classes == math.ceil(n / 2)


def test_imagenet_folders_hold_the_real_1000_classes(world):
    train, val = ImageNetFolder(world, "train"), ImageNetFolder(world, "val")
    assert train.classnames == val.classnames == list(IMAGENET_CLASSNAMES)
    assert train.wnids[:2] == ["n01440764", "n01443537"] and len(set(train.wnids)) == 1000  # tench, goldfish
    assert min(Counter(train.targets).values()) >= 2 and min(Counter(val.targets).values()) >= 1
    # the real 200-class subsets start with these (ImageNet-A's and ImageNet-R's class lists)
    assert coop.load_dataset("ImageNetA", world).classnames[:3] == ["stingray", "goldfinch", "junco"]
    assert coop.load_dataset("ImageNetR", world).classnames[:3] == ["goldfish", "great white shark", "hammerhead shark"]


def test_ade20k_has_150_classes_and_masks_of_the_image_size(world):
    seen = set()
    for split, n in (("training", 8), ("validation", 4)):
        ds = ADE20K(world, split, reduce_zero_label=False)
        assert len(ds) == n and ds.num_classes == ADE20K_REAL_CLASSES and ds.classnames == list(ADE20K_CLASSES)
        sizes = []
        for image_path, mask_path in ds.samples:
            with Image.open(image_path) as im, Image.open(mask_path) as mask:
                assert im.size == mask.size and mask.mode == "L"
                sizes.append(im.size)
                values = np.asarray(mask)
            assert values.max() <= ADE20K_REAL_CLASSES
            seen |= set(np.unique(values).tolist())
        assert min(min(s) for s in sizes) >= 480 and any(w != h for w, h in sizes)  # real ADE20K proportions
    assert seen == set(range(ADE20K_REAL_CLASSES + 1))


def test_stand_in_names_are_deterministic_unique_and_short():
    names = PW.stand_in_names("SUN397", 397)
    assert names == PW.stand_in_names("SUN397", 397) != PW.stand_in_names("UCF101", 397)
    assert len({n.lower() for n in names}) == 397 and max(len(n.split()) for n in names) <= 4


def test_a_second_call_is_a_noop_and_force_regenerates(world, monkeypatch):
    calls = []
    monkeypatch.setattr(PW, "generate_paper_world", calls.append)
    assert PW.ensure_paper_world(world) == world and calls == []
    PW.ensure_paper_world(world, force=True)
    assert calls == [world]
    monkeypatch.setitem(PW.SHAPE, "seed", 1)  # another shape: the stamp no longer matches
    assert not PW.is_current(world)


def test_the_world_stays_small(world):
    files = [p for p in world.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 100 * 2**20 and len(files) < 20_000
