"""The loaders read the real formats (as the mini world writes them) and fail with clear errors."""
import json
import shutil
from pathlib import Path
from dataclasses import replace

import pytest
import torch

from vlpt_lib.data import DatasetError
from vlpt_lib.data import coop
from vlpt_lib.data import world_layout as L
from vlpt_lib.data.ade20k import ADE20K
from vlpt_lib.data.check import data_requirements
from vlpt_lib.data.imagefolder import ImageNetFolder
from vlpt_lib.worlds import mini_world as M

CFG = replace(M.CONFIGS["smoke"], captions=20, ade_train=4, ade_val=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return M.ensure_world(tmp_path_factory.mktemp("world") / "world", CFG)


@pytest.fixture
def world_copy(world, tmp_path):
    dst = tmp_path / "world"
    shutil.copytree(world, dst)
    return dst


def test_registry_covers_the_papers():
    assert set(coop.BASE_TO_NEW) | set(coop.VARIANTS) == set(coop.DATASETS) and len(coop.DATASETS) == 15
    assert coop.DATASETS["DescribableTextures"].template == "{} texture."
    assert coop.DATASETS["EuroSAT"].template == "a centered satellite photo of {}."
    assert coop.DATASETS["ImageNetA"].template == "a photo of a {}."
    assert set(L.MINI_DATASETS) <= set(coop.DATASETS) and len(L.MINI_DATASETS) >= 5


@pytest.mark.parametrize("name", L.MINI_DATASETS + L.MINI_VARIANTS)
def test_every_mini_dataset_loads(world, name):
    ds = coop.load_dataset(name, world)
    assert ds.test and all(0 <= d.label < ds.num_classes for d in ds.test)
    assert all(ds.classnames[d.label] == d.classname for d in ds.test + ds.train)
    assert "{}" in ds.template and "_" not in " ".join(ds.classnames)


def test_imagenet_tree_and_variants(world):
    inet = coop.load_dataset("ImageNet", world)
    assert inet.val == inet.test and inet.num_classes == CFG.imagenet_classes
    assert len(inet.train) == CFG.imagenet_classes * CFG.imagenet_train
    folder = ImageNetFolder(world / "imagenet", "train")
    assert folder.classnames == inet.classnames and len(folder) == len(inet.train)
    assert ImageNetFolder(world, "val").targets == [d.label for d in inet.test]
    v2 = coop.load_dataset("ImageNetV2", world)
    assert v2.classnames == inet.classnames
    a = coop.load_dataset("ImageNetA", world)
    r = coop.load_dataset("ImageNetR", world)
    for sub in (a, r):  # the classes present, labels from the sorted folder list
        assert sub.num_classes == CFG.subset_classes < inet.num_classes
        assert set(sub.classnames) <= set(inet.classnames)
        assert sorted({d.label for d in sub.test}) == list(range(sub.num_classes))
    sketch = coop.load_dataset("ImageNetSketch", world)
    assert sketch.classnames == inet.classnames


def test_split_json_and_fgvc_text_files(world):
    raw = json.loads((world / "caltech-101/split_zhou_Caltech101.json").read_text())
    ds = coop.load_dataset("Caltech101", world)
    assert len(ds.train) == len(raw["train"]) and ds.test[0].impath.endswith(raw["test"][0][0])
    fg = coop.load_dataset("FGVCAircraft", world)
    lines = (world / "fgvc_aircraft/images_variant_test.txt").read_text().split("\n")
    iid, name = lines[0].split(" ", 1)
    assert fg.test[0].impath.endswith(f"images/{iid}.jpg") and fg.test[0].classname == name
    assert fg.classnames == (world / "fgvc_aircraft/variants.txt").read_text().split("\n")[:-1]


def test_caltech_folder_listing_drops_background_and_faces(world_copy):
    (world_copy / "caltech-101/split_zhou_Caltech101.json").unlink()
    with pytest.raises(DatasetError, match="DATASETS.md"):  # official splits only, unless allowed
        coop.load_dataset("Caltech101", world_copy)
    ds = coop.load_dataset("Caltech101", world_copy, allow_folder_split=True)
    assert "BACKGROUND Google" not in ds.classnames and "Faces easy" not in ds.classnames
    assert ds.num_classes == len(M.CALTECH_CLASSES) and ds.meta["split"].startswith("folder")
    assert ds.split_source == "folder" and ds.label == "Caltech101 (folder split)"


def test_few_shot_cache_reuse_and_val_cap(world_copy):
    ds = coop.load_dataset("OxfordPets", world_copy)
    fs = coop.few_shot(ds, 5, seed=1)
    cache = world_copy / "oxford_pets/split_fewshot/vlpt_shot_5-seed_1.json"  # the project's own name
    assert cache.is_file() and not fs.meta["few_shot"]["reused"]
    assert not (world_copy / "oxford_pets/split_fewshot/shot_5-seed_1.pkl").exists()  # Dassl's name: never written
    counts = {lab: sum(d.label == lab for d in fs.train) for lab in range(ds.num_classes)}
    assert set(counts.values()) == {min(5, CFG.coop_train)}
    assert all(sum(d.label == lab for d in fs.val) == min(5, 4, CFG.coop_val) for lab in range(ds.num_classes))
    again = coop.few_shot(ds, 5, seed=1)
    assert again.meta["few_shot"]["reused"] and again.train == fs.train and again.val == fs.val
    # the cache is what is reused: tamper with it and the tampered draw comes back
    data = json.loads(cache.read_text())
    data["train"] = data["train"][:1]
    cache.write_text(json.dumps(data))
    assert len(coop.few_shot(ds, 5, seed=1).train) == 1
    assert coop.few_shot(ds, 5, seed=2).train != fs.train
    assert coop.few_shot(ds, 2, seed=1, cache=False).meta["few_shot"]["cache"] is None


def test_base_new_ceil_rule_with_odd_count(world):
    ds = coop.load_dataset("OxfordPets", world)
    n = ds.num_classes
    assert n % 2 == 1
    base, new = coop.subsample_classes(ds, "base"), coop.subsample_classes(ds, "new")
    assert base.num_classes == (n + 1) // 2 and new.num_classes == n // 2
    assert base.classnames + new.classnames == ds.classnames
    for half in (base, new):
        assert sorted({d.label for d in half.test}) == list(range(half.num_classes))
        assert all(half.classnames[d.label] == d.classname for d in half.test)
    assert coop.subsample_classes(ds, "all") is ds
    with pytest.raises(ValueError):
        coop.subsample_classes(ds, "novel")


def test_ade_reduce_zero_label(world):
    from PIL import Image
    import numpy as np

    raw = ADE20K(world, "training", reduce_zero_label=False)
    red = ADE20K(world / "ADEChallengeData2016", "train")
    assert red.classnames == list(M.R.ADE_CLASSES) and len(red) == CFG.ade_train
    m_raw = np.asarray(Image.open(raw.samples[0][1]))
    _, m = red[0]
    assert m.dtype == torch.int64
    assert (m[torch.from_numpy(m_raw == 0)] == 255).all()
    assert torch.equal(m[torch.from_numpy(m_raw > 0)], torch.from_numpy(m_raw[m_raw > 0].astype("int64") - 1))
    assert torch.equal(raw[0][1], torch.from_numpy(m_raw.astype("int64")))


def test_ade_joint_v2_transforms(world):
    from torchvision.transforms import v2

    t = v2.Compose([v2.RandomResizedCrop(16), v2.RandomHorizontalFlip(), v2.ToImage(),
                    v2.ToDtype(torch.float32, scale=True)])
    x, m = ADE20K(world, "validation", transforms=t)[0]
    assert x.shape == (3, 16, 16) and m.shape == (16, 16) and m.dtype == torch.int64


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(DatasetError) as err:
        coop.load_dataset("EuroSAT", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "eurosat") in msg and "split_zhou_EuroSAT.json" in msg and "2750" in msg
    with pytest.raises(DatasetError, match="ADEChallengeData2016"):
        ADE20K(tmp_path, "training")
    with pytest.raises(DatasetError, match="classnames.txt"):
        (tmp_path / "imagenet/images/train").mkdir(parents=True)
        ImageNetFolder(tmp_path / "imagenet", "train")


def test_missing_split_file_and_malformed_json(world_copy):
    (world_copy / "oxford_pets/split_zhou_OxfordPets.json").unlink()
    with pytest.raises(DatasetError, match="split_zhou_OxfordPets.json"):
        coop.load_dataset("OxfordPets", world_copy)
    (world_copy / "dtd/split_zhou_DescribableTextures.json").write_text("{not json")
    with pytest.raises(DatasetError, match="malformed split file"):
        coop.load_dataset("DescribableTextures", world_copy)


def test_corrupt_jpeg_names_the_file(world_copy):
    ds = coop.load_dataset("EuroSAT", world_copy)
    bad = ds.test[0].impath
    with open(bad, "r+b") as f:
        f.write(b"\0" * 64)
    data = coop.ImageListDataset(ds.test[:2])
    with pytest.raises(DatasetError, match=bad):
        data[0]
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=1)
    with pytest.raises(DatasetError, match=bad):
        next(iter(loader))
    x, y = data[1]
    assert x.shape[0] == 3 and y == ds.test[1].label


def test_data_requirements(world, tmp_path):
    paper = data_requirements(tmp_path)  # the paper profile: the real datasets
    whats = " ".join(r["what"] for r in paper)
    for name in coop.DATASETS:
        assert name in whats
    assert "ADE20K" in whats and not any(r["present"] for r in paper)
    assert all(str(tmp_path) in r["path"] for r in paper)
    mini = data_requirements(world, M.config_hash(M.world_config("smoke")))
    assert all(r["present"] for r in mini[1:]) and not mini[0]["present"]  # CFG differs from the smoke stamp
    split_rows = [r for r in paper if "split file" in r["what"]]
    assert split_rows and all(r["required"] and "DATASETS.md" in r["what"] for r in split_rows)
    allowed = {r["what"].split(" ")[0]: r["required"] for r in data_requirements(tmp_path, allow_folder_split=True)
               if "split file" in r["what"]}
    assert allowed == {n: not coop.DATASETS[n].folder_fallback for n in allowed}


def test_cached_folder_scan_follows_each_class_folder(tmp_path, monkeypatch):
    """A scan cache (kept for large folders) lists an image added to, or removed from, a class folder: adding a
    file changes that folder's mtime, not the top folder's."""
    from vlpt_lib.data.coop import folder_scan
    monkeypatch.setattr(folder_scan, "SCAN_CACHE_MIN", 1)
    for wnid in ("n01", "n02"):
        (tmp_path / "images" / wnid).mkdir(parents=True)
        (tmp_path / "images" / wnid / "a.JPEG").write_bytes(b"")
    cache = tmp_path / "scan.json"
    assert folder_scan.scan_folders(tmp_path / "images", cache) == [("n01", ["a.JPEG"]), ("n02", ["a.JPEG"])]
    assert cache.is_file()
    (tmp_path / "images" / "n02" / "b.JPEG").write_bytes(b"")
    assert folder_scan.scan_folders(tmp_path / "images", cache)[1] == ("n02", ["a.JPEG", "b.JPEG"])
    (tmp_path / "images" / "n01" / "a.JPEG").unlink()  # as the error about a corrupt image advises
    assert folder_scan.scan_folders(tmp_path / "images", cache)[0] == ("n01", [])


def test_imagenetv2_labels_follow_the_lines_of_its_classnames_file(world_copy):
    """CoOp's datasets/imagenetv2.py: folder <i> holds the class on line i of classnames.txt (folders =
    list(classnames.keys())), in whatever order the file lists them, not the sorted wnids."""
    names_file = world_copy / "imagenetv2" / "classnames.txt"
    lines = names_file.read_text().splitlines()
    names_file.write_text("\n".join(lines[::-1]) + "\n")  # the same classes, listed backwards
    v2 = coop.load_dataset("ImageNetV2", world_copy)
    assert v2.classnames == [coop.clean_classname(line.split(" ", 1)[1]) for line in lines[::-1]]
    first = coop.clean_classname(lines[-1].split(" ", 1)[1])  # line 0 of the reversed file
    assert {(d.label, d.classname) for d in v2.test if Path(d.impath).parent.name == "0"} == {(0, first)}
