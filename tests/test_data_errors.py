"""Silent wrong data becomes a clear error: each test builds a tiny on-disk layout by hand with one defect."""
import gc
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vlpt_lib.data import DatasetError, WorkerTraceback
from vlpt_lib.data import coop
from vlpt_lib.data.ade20k import ADE20K
from vlpt_lib.data.imagefolder import ImageNetFolder
from vlpt_lib.training.evaluate import evaluate_classifier, evaluate_segmentation

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted, as ImageNet's label order is


def _jpg(path, size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def _classnames(path, wnids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} class {i}\n" for i, w in enumerate(wnids)))


def _imagenet(root, wnids=WNIDS):
    _classnames(root / "imagenet/classnames.txt", wnids)
    for split in ("train", "val"):
        for w in wnids:
            _jpg(root / f"imagenet/images/{split}/{w}/{w}_1.JPEG")
    return root / "imagenet"


def _ade(root, mask: np.ndarray, image_size=(8, 6)):
    base = root / "ADEChallengeData2016"
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        _jpg(base / f"images/{split}/{stem}.jpg", image_size)
        (base / f"annotations/{split}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8), mode="L").save(base / f"annotations/{split}/{stem}.png")
    return base


# ----------------------------------------------------------------------------- ImageNet class folders
def test_imagenet_labels_are_the_class_list_order(tmp_path):
    inet = _imagenet(tmp_path)
    for split in ("train", "val"):
        folder = ImageNetFolder(inet, split)
        assert [(p.split("/")[-2], lab) for p, lab in folder.samples] == [(w, i) for i, w in enumerate(WNIDS)]
    ds = coop.load_dataset("ImageNet", tmp_path)
    assert [d.label for d in ds.test] == [0, 1, 2] and ds.classnames == ["class 0", "class 1", "class 2"]


def test_imagenet_val_missing_a_class_folder_is_an_error(tmp_path):
    inet = _imagenet(tmp_path)
    gone = inet / "images/val" / WNIDS[0]
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    want = f"ImageNet val is missing 1 of 3 class folders: {gone}; labels would shift"
    with pytest.raises(DatasetError) as err:
        ImageNetFolder(inet, "val")
    assert want in str(err.value)
    with pytest.raises(DatasetError) as err:
        coop.load_dataset("ImageNet", tmp_path)
    assert want in str(err.value)
    ImageNetFolder(inet, "train")  # the other split is whole


def test_imagenet_folder_not_in_class_list_is_an_error(tmp_path):
    inet = _imagenet(tmp_path)
    stray = inet / "images/train/n99999999"
    _jpg(stray / "x.JPEG")
    for load in (lambda: ImageNetFolder(inet, "train"), lambda: coop.load_dataset("ImageNet", tmp_path)):
        with pytest.raises(DatasetError) as err:
            load()
        assert str(stray) in str(err.value) and str(inet / "classnames.txt") in str(err.value)


def test_sketch_needs_every_class_but_a_and_r_are_subsets(tmp_path):
    _classnames(tmp_path / "imagenet-sketch/classnames.txt", WNIDS)
    for w in WNIDS[1:]:
        _jpg(tmp_path / f"imagenet-sketch/images/{w}/s.JPEG")
    with pytest.raises(DatasetError, match="ImageNetSketch is missing 1 of 3 class folders"):
        coop.load_dataset("ImageNetSketch", tmp_path)
    _classnames(tmp_path / "imagenet-adversarial/classnames.txt", WNIDS)
    for w in WNIDS[1:]:
        _jpg(tmp_path / f"imagenet-adversarial/imagenet-a/{w}/a.jpg")
    a = coop.load_dataset("ImageNetA", tmp_path)  # labels: the sorted folders present
    assert a.classnames == ["class 1", "class 2"] and [d.label for d in a.test] == [0, 1]
    _jpg(tmp_path / "imagenet-adversarial/imagenet-a/n99999999/a.jpg")
    with pytest.raises(DatasetError, match="n99999999"):
        coop.load_dataset("ImageNetA", tmp_path)


def test_duplicate_wnid_in_classnames_is_an_error(tmp_path):
    inet = _imagenet(tmp_path)
    names = inet / "classnames.txt"
    names.write_text(names.read_text() + f"{WNIDS[0]} another name\n")  # line 4 repeats line 1
    with pytest.raises(DatasetError) as err:
        ImageNetFolder(inet, "val")
    msg = str(err.value)
    assert str(names) in msg and f"duplicate wnid {WNIDS[0]}" in msg and "lines 1 and 4" in msg


# ----------------------------------------------------------------------------- ADE20K masks
def test_ade_mask_of_another_size_is_an_error(tmp_path):
    base = _ade(tmp_path, np.ones((3, 4)), image_size=(8, 6))
    with pytest.raises(DatasetError) as err:
        ADE20K(tmp_path, "training")[0]
    msg = str(err.value)
    assert str(base / "annotations/training/ADE_train_00000001.png") in msg and "4x3" in msg
    assert str(base / "images/training/ADE_train_00000001.jpg") in msg and "8x6" in msg


@pytest.mark.parametrize("reduce_zero_label", [True, False])
def test_ade_label_values_above_the_class_count_are_an_error(tmp_path, reduce_zero_label):
    mask = np.zeros((6, 8))
    mask[0, :4] = [150, 151, 199, 199]  # 150 classes: raw values 0..150 are valid
    base = _ade(tmp_path, mask)
    for split, path in (("training", "annotations/training/ADE_train_00000001.png"),
                        ("validation", "annotations/validation/ADE_val_00000001.png")):
        data = ADE20K(tmp_path, split, reduce_zero_label=reduce_zero_label)
        with pytest.raises(DatasetError) as err:
            data[0]
        assert str(base / path) in str(err.value) and "[151, 199]" in str(err.value)
    with pytest.raises(DatasetError, match="151, 199"):  # evaluation does not skip them either
        evaluate_segmentation(lambda x: torch.zeros(1, 150, 6, 8), data, 150, device=torch.device("cpu"))


def test_ade_valid_mask_loads(tmp_path):
    mask = np.zeros((6, 8))
    mask[0, :2] = [1, 150]
    _ade(tmp_path, mask)
    _, m = ADE20K(tmp_path, "training")[0]
    assert m[0, :3].tolist() == [0, 149, 255]


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_ade_coloured_mask_is_an_error(tmp_path, mode):
    base = _ade(tmp_path, np.ones((6, 8)))
    data = ADE20K(tmp_path, "training")  # built while the mask is still a label map
    mask = base / "annotations/training/ADE_train_00000001.png"
    Image.new(mode, (8, 6), (120, 30, 200)).save(mask)  # a coloured visualisation in its place
    for load in (lambda: data[0], lambda: ADE20K(tmp_path, "training")):
        with pytest.raises(DatasetError) as err:
            load()
        msg = str(err.value)
        assert str(mask) in msg and f"{mode} image" in msg and "single-channel PNG of class indices 0-150" in msg
        assert "\n" not in msg
    ADE20K(tmp_path, "validation")[0]  # the other split's label map still loads


# ----------------------------------------------------------------------------- CoOp split JSON
def test_split_json_label_out_of_range_is_an_error(tmp_path):
    ddir = tmp_path / "oxford_pets"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _jpg(ddir / "images" / name)
    split = {"train": [["a.jpg", 0, "cat"], ["b.jpg", 1, "dog"]], "val": [["a.jpg", 0, "cat"]],
             "test": [["c.jpg", 199, "bird"]]}  # a class of its own: the label alone is wrong
    (ddir / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    with pytest.raises(DatasetError) as err:
        coop.load_dataset("OxfordPets", tmp_path)
    msg = str(err.value)
    assert str(ddir / "split_zhou_OxfordPets.json") in msg and "[199]" in msg and str(ddir / "images/c.jpg") in msg


@pytest.mark.parametrize("row, conflict", [
    (["c.jpg", 0, "dog"], "train row 0 (a.jpg) gives label 0 to 'cat'"),     # one label, two names
    (["c.jpg", 2, "dog"], "train row 1 (b.jpg) gives 'dog' label 1"),         # one name, two labels
])
def test_split_json_label_contradicting_its_class_name_is_an_error(tmp_path, row, conflict):
    ddir = tmp_path / "oxford_pets"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _jpg(ddir / "images" / name)
    split = {"train": [["a.jpg", 0, "cat"], ["b.jpg", 1, "dog"]], "val": [["b.jpg", 1, "dog"]],
             "test": [["a.jpg", 0, "cat"], row]}
    path = ddir / "split_zhou_OxfordPets.json"
    path.write_text(json.dumps(split))
    with pytest.raises(DatasetError) as err:
        coop.load_dataset("OxfordPets", tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"split file {path}: test row 1 (c.jpg) gives 'dog' label {row[1]}, but {conflict}")
    assert msg.endswith("fix test row 1") and "\n" not in msg


# ----------------------------------------------------------------------------- DataLoader workers
def _error_of(run) -> DatasetError:
    """The DatasetError that run() raises. Its traceback is dropped and collected at once: torch's re-raise
    leaves the failed worker iterator in a reference cycle, and reaping it later stalls a later loader 5 s."""
    try:
        run()
    except DatasetError as err:
        err.__traceback__ = None
        error = err
    else:
        pytest.fail("no DatasetError raised")
    gc.collect()
    return error


def test_corrupt_image_in_a_worker_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    data = coop.ImageListDataset([coop.Datum(str(bad), 0, "x")])
    with pytest.raises(DatasetError) as here:
        data[0]
    line = str(here.value)
    assert line.startswith(f"cannot read image {bad}: ") and line.endswith("; re-download or delete it")
    assert "\n" not in line
    err = _error_of(lambda: next(iter(DataLoader(data, batch_size=1, num_workers=1))))
    assert str(err) == line
    assert isinstance(err.__cause__, WorkerTraceback) and "worker process" in str(err.__cause__)
    err = _error_of(lambda: evaluate_classifier(lambda x: torch.zeros(len(x), 2), data, device=torch.device("cpu"),
                                                num_workers=1))
    assert str(err) == line


def test_multi_line_error_from_a_worker_keeps_all_its_lines(tmp_path):
    data = ADE20K(_ade(tmp_path, np.ones((6, 8))), "training")
    data.samples[0] = (data.samples[0][0], str(tmp_path / "gone.png"))  # missing: message + expected layout
    with pytest.raises(DatasetError) as here:
        data[0]
    assert "\n" in str(here.value)
    err = _error_of(lambda: next(iter(DataLoader(data, batch_size=1, num_workers=1))))
    assert str(err) == str(here.value)
