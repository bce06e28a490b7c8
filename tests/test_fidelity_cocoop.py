"""CoCoOp / CoOp recipe fidelity (issue #8, points 1-5 + the recipe card).

Every EXPECTED value is computed here from the official code's own rule, written out below (or, when another
test file needs it too, in tests/references.py) with its source (github.com/KaiyangZhou/Dassl.pytorch and
KaiyangZhou/CoOp), never by calling the project.
"""
from __future__ import annotations

import json
import math
import pickle
import random
import shutil
import sys
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from numerics import EPS64
from references import dassl_epoch_lrs
import vlpt_lib.models.clip as clip_models
from vlpt_lib.data import DatasetError
from vlpt_lib.data import coop
from vlpt_lib.data.check import data_requirements
from vlpt_lib.jobs import prompt as P
from vlpt_lib.workbook import cocoop as C
from vlpt_lib.workbook import derived, tables
from vlpt_lib.workbook import params as notebook_params
from vlpt_lib.workbook import profiles, recipe


# ----------------------------------------------------------------------------- the references' rules
def dassl_fewshot(train, val, num_shots: int, seed: int):
    """Dassl dassl/data/datasets/base_dataset.py generate_fewshot_dataset(repeat=False) +
    split_dataset_by_label, as CoOp datasets/*.py call it right after train.py's set_random_seed(seed)
    (random.seed, np.random.seed, torch.manual_seed): train with K shots, then val with min(K, 4)."""
    random.seed(seed)
    out = []
    for source, k in ((train, num_shots), (val, min(num_shots, 4))):
        tracker = defaultdict(list)
        for item in source:
            tracker[item.label].append(item)
        dataset = []
        for _label, items in tracker.items():
            dataset.extend(random.sample(items, k) if len(items) >= k else items)
        out.append(dataset)
    return out


def dassl_steps_per_epoch(n: int, batch_size: int) -> int:
    """Dassl dassl/data/data_manager.py build_data_loader: drop_last = is_train and len(data) >= batch_size."""
    drop_last = n >= batch_size
    return n // batch_size if drop_last else math.ceil(n / batch_size)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def world_copy(smoke_env, tmp_path):
    dst = tmp_path / "world"
    shutil.copytree(smoke_env["data_root"], dst, ignore=shutil.ignore_patterns("split_fewshot"))
    return dst


# ----------------------------------------------------------------------------- 1. learning-rate schedule
def test_job_history_lrs_and_steps_follow_dassl(smoke_env, tmp_path):
    """A tiny CoOp run: the lr recorded per epoch is Dassl's, the steps per epoch are Dassl's loader's. (The
    schedule itself, create_scheduler("dassl_cosine") against Dassl's rule and the published CoCoOp sequence, is
    pinned in tests/test_training.py; here, that the job runs it with its cfg and loader.)"""
    cfg = {**smoke_env, "method": "CoOp", "dataset": "OxfordPets", "subsample": "base", "shots": 2, "seed": 1,
           "epochs": 4, "batch_size": 3, "lr": 0.002, "warmup_epochs": 1, "warmup_lr": 1e-5,
           "eval": [{"dataset": "OxfordPets", "subsample": "base"}]}
    res = P.run(cfg, tmp_path / "run")
    lrs = [h["lr"] for h in res["history"]]
    assert lrs == pytest.approx(dassl_epoch_lrs(0.002, 4, 1, 1e-5), rel=0, abs=16 * EPS64 * 0.002)  # float64 formulas
    n = res["train"]["images"]
    per_epoch = dassl_steps_per_epoch(n, 3)
    assert n % 3 and [h["step"] for h in res["history"]] == [per_epoch * (e + 1) for e in range(4)]


# ----------------------------------------------------------------------------- 2. QuickGELU
def _activations(model) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (torch.nn.GELU, QuickGELU))}


@pytest.fixture
def fake_openai_tag(tmp_path, monkeypatch):
    """A tag of the small registered model whose open_clip pretrained cfg says quick_gelu (as "openai"
    does for ViT-B-16), with weights that are "downloaded" from a local file."""
    import open_clip.factory as factory
    import open_clip.pretrained as pretrained

    torch.manual_seed(0)
    weights = tmp_path / "weights.pt"
    torch.save(open_clip.create_model("vlpt-smoke-clip").state_dict(), weights)
    cfg = pretrained._pcfg(url="https://example.invalid/fake.pt", hf_hub="vlpt-test/fake-openai/", quick_gelu=True)
    monkeypatch.setitem(pretrained._PRETRAINED, "vlpt-smoke-clip", {"fakeopenai": cfg})
    downloads = []

    def download(pretrained_cfg, cache_dir=None):
        downloads.append(pretrained_cfg)
        return str(weights)

    monkeypatch.setattr(factory, "download_pretrained", download)
    return weights, downloads


def test_uncached_openai_tag_builds_quickgelu(fake_openai_tag, monkeypatch):
    _, downloads = fake_openai_tag

    def cache_miss(*args, **kwargs):
        raise FileNotFoundError("not in the Hugging Face cache")

    monkeypatch.setattr(clip_models, "hf_hub_download", cache_miss)
    assert clip_models.cached_weights("vlpt-smoke-clip", "fakeopenai") is None
    bundle = clip_models.load_clip("vlpt-smoke-clip", "fakeopenai")
    assert downloads, "the uncached path (open_clip's download) was not taken"
    assert _activations(bundle.model) == {QuickGELU}


def test_cached_openai_tag_builds_quickgelu(fake_openai_tag, monkeypatch):
    weights, downloads = fake_openai_tag
    monkeypatch.setattr(clip_models, "hf_hub_download", lambda *a, **k: str(weights))
    bundle = clip_models.load_clip("vlpt-smoke-clip", "fakeopenai")
    assert not downloads and _activations(bundle.model) == {QuickGELU}


def test_local_openai_file_and_paper_profile_build_quickgelu(fake_openai_tag, tmp_path):
    weights, _ = fake_openai_tag
    assert _activations(clip_models.load_clip("vlpt-smoke-clip", str(weights), quick_gelu=True).model) == {QuickGELU}
    # the paper profile's CLIP is OpenAI's: quick_gelu=True unless the user says otherwise
    assert profiles.resolve("paper", tmp_path).clip["quick_gelu"] is True
    assert profiles.resolve("paper", tmp_path, clip_pretrained=str(weights)).clip["quick_gelu"] is True
    assert profiles.resolve("paper", tmp_path, clip_pretrained=str(weights), clip_quick_gelu=False).clip[
        "quick_gelu"] is False
    # a local file through the profile -> the job's loader -> QuickGELU
    world = profiles.resolve("paper", tmp_path, clip_model="vlpt-smoke-clip", clip_pretrained=str(weights))
    spec = world.clip
    built = clip_models.load_clip(spec["model_name"], spec["pretrained"], quick_gelu=spec["quick_gelu"])
    assert _activations(built.model) == {QuickGELU}


def test_mvp_teacher_gets_quickgelu_on_the_paper_profile(tmp_path):
    from vlpt_lib.workbook import mvp

    cfgs = mvp.pretrain_cfgs("paper", {}, ["clip"], data_root=tmp_path)
    assert cfgs["clip"]["clip"]["quick_gelu"] is True


# ----------------------------------------------------------------------------- 3. few-shot draw
def _items(labels, prefix="/data/x/images"):
    return [coop.Datum(f"{prefix}/{lab}/{i:03d}.jpg", lab, f"class {lab}") for i, lab in enumerate(labels)]


def test_few_shot_draw_is_dassls(tmp_path):
    rng = np.random.default_rng(0)
    # labels in a non-sorted order of first appearance, one class with fewer items than K
    train_labels = [int(x) for x in rng.permutation([2] * 9 + [0] * 7 + [3] * 2 + [1] * 8)]
    val_labels = [int(x) for x in rng.permutation([1] * 5 + [3] * 6 + [0] * 3 + [2] * 5)]
    assert train_labels[0] != 0  # first appearance is not label order
    root = tmp_path / "toy"
    train, val = _items(train_labels, f"{root}/train"), _items(val_labels, f"{root}/val")
    ds = coop.CoopDataset("Toy", train, val, _items([0, 1, 2, 3], f"{root}/test"), [f"class {i}" for i in range(4)],
                          "a photo of a {}.", root)
    exp_train, exp_val = dassl_fewshot(train, val, 5, seed=3)
    random.seed(12345)
    random.random()  # anything drawn before (or numpy/torch seeding) does not change the draw
    torch.manual_seed(7)
    got = coop.few_shot(ds, 5, seed=3)
    assert got.train == exp_train and got.val == exp_val
    assert len(got.train) == 5 * 3 + 2  # all items of the class that has fewer than K
    # the draw is over ALL classes, then the base half is taken (CoOp: subsample_classes after few-shot)
    base = coop.subsample_classes(got, "base")
    assert [d.impath for d in base.train] == [d.impath for d in exp_train if d.label in (0, 1)]
    # the project's cache reproduces it, under its own name
    assert (tmp_path / "toy/split_fewshot/vlpt_shot_5-seed_3.json").is_file()
    assert coop.few_shot(ds, 5, seed=3).train == exp_train


class Datum:
    """Stand-in for dassl.data.datasets.base_dataset.Datum (its attributes; no file check)."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        self._impath, self._label, self._domain, self._classname = impath, label, domain, classname


def _dassl_pickle(data: dict) -> bytes:
    """Pickle bytes as Dassl writes them: Datum objects of module dassl.data.datasets.base_dataset."""
    names = ["dassl", "dassl.data", "dassl.data.datasets", "dassl.data.datasets.base_dataset"]
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n in names:
            sys.modules[n] = types.ModuleType(n)
        sys.modules[names[-1]].Datum = Datum
        Datum.__module__ = names[-1]
        return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        Datum.__module__ = __name__
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def test_official_dassl_fewshot_file_is_read_rerooted_and_never_overwritten(world_copy):
    ds = coop.load_dataset("OxfordPets", world_copy)
    image_dir = world_copy / "oxford_pets" / "images"
    foreign = "/home/someone/datasets/oxford_pets/images"  # absolute paths of the machine that drew them

    def foreign_datum(d):
        return Datum(f"{foreign}/{Path(d.impath).relative_to(image_dir).as_posix()}", d.label, 0,
                     d.classname.replace(" ", "_"))

    # a draw that differs from the project's (the last items of each class)
    train = [d for lab in range(ds.num_classes) for d in [x for x in ds.train if x.label == lab][-2:]]
    val = [d for lab in range(ds.num_classes) for d in [x for x in ds.val if x.label == lab][-1:]]
    path = world_copy / "oxford_pets" / "split_fewshot" / "shot_2-seed_1.pkl"
    path.parent.mkdir(parents=True)
    blob = _dassl_pickle({"train": [foreign_datum(d) for d in train], "val": [foreign_datum(d) for d in val]})
    path.write_bytes(blob)
    assert "dassl.data.datasets.base_dataset" not in sys.modules  # read without Dassl

    got = coop.few_shot(ds, 2, seed=1)
    assert got.train == train and got.val == val  # re-rooted onto the local images, local labels/names
    assert all(Path(d.impath).is_file() for d in got.train)
    assert got.meta["few_shot"]["source"] == "dassl"
    assert path.read_bytes() == blob  # never overwritten
    assert not (path.parent / "vlpt_shot_2-seed_1.json").exists()
    # another seed has no official file: the project draws and caches under its own name beside it
    coop.few_shot(ds, 2, seed=2)
    assert (path.parent / "vlpt_shot_2-seed_2.json").is_file() and not (path.parent / "shot_2-seed_2.pkl").exists()
    # an image the local split does not hold is an error, not a silent redraw
    path.write_bytes(_dassl_pickle({"train": [Datum(f"{foreign}/nope.jpg", 0, 0, "x")], "val": []}))
    with pytest.raises(DatasetError, match="nope.jpg"):
        coop.few_shot(ds, 2, seed=1)


def test_dassl_pickle_reader_loads_nothing_else(world_copy):
    ds = coop.load_dataset("OxfordPets", world_copy)
    path = world_copy / "oxford_pets" / "split_fewshot" / "shot_2-seed_1.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"train": [Path("/etc/passwd")], "val": []}))
    with pytest.raises(DatasetError, match="not allowed"):
        coop.few_shot(ds, 2, seed=1)


def test_imagenet_official_file_holds_train_only(world_copy):
    ds = coop.load_dataset("ImageNet", world_copy)
    image_dir = world_copy / "imagenet" / "images"
    train = [d for lab in range(ds.num_classes) for d in [x for x in ds.train if x.label == lab][:1]]
    path = world_copy / "imagenet" / "split_fewshot" / "shot_1-seed_1.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(_dassl_pickle({"train": [Datum("C:\\data\\imagenet\\images\\" + str(
        Path(d.impath).relative_to(image_dir)).replace("/", "\\"), d.label, 0, d.classname) for d in train]}))
    got = coop.few_shot(ds, 1, seed=1)
    assert got.train == train and got.val is ds.val  # CoOp's ImageNet: val = test, no few-shot val


# ----------------------------------------------------------------------------- 4. last partial batch
@pytest.mark.parametrize("n", [10 * 32 + 7, 10 * 32, 20])
def test_coop_train_loader_drops_the_last_partial_batch_like_dassl(n):
    cfg = P.Config(data_root=".", method="CoOp", dataset="EuroSAT")
    assert cfg.batch_size == 32
    data = torch.utils.data.TensorDataset(torch.arange(n))
    loader = P.make_train_loader(data, cfg)
    assert len(loader) == dassl_steps_per_epoch(n, 32) == {327: 10, 320: 10, 20: 1}[n]
    assert sum(1 for _ in loader) == len(loader)


# ----------------------------------------------------------------------------- 5. official splits only
def test_missing_split_file_stops_unless_folder_split_is_allowed(smoke_env, world_copy, tmp_path):
    (world_copy / "eurosat" / "split_zhou_EuroSAT.json").unlink()
    (world_copy / "oxford_pets" / "split_zhou_OxfordPets.json").unlink()
    cfg = {**smoke_env, "data_root": str(world_copy), "method": "CLIP", "dataset": "EuroSAT", "subsample": "all",
           "eval": [{"dataset": "EuroSAT"}]}
    with pytest.raises(DatasetError, match="DATASETS.md") as err:
        P.run(cfg, tmp_path / "refused")
    assert "split_zhou_EuroSAT.json" in str(err.value) and "allow_folder_split" in str(err.value)
    res = P.run({**cfg, "allow_folder_split": True}, tmp_path / "folder")
    assert [r["dataset"] for r in res["rows"]] == ["EuroSAT (folder split)"]
    assert res["eval"][0]["split_source"] == "folder"
    from vlpt_lib.workbook.tables import to_frame

    assert list(to_frame(res["rows"], "paper", "cocoop_base2new")["dataset"]) == ["EuroSAT (folder split)"]
    with pytest.raises(DatasetError, match="DATASETS.md"):  # no class folders to split: refused either way
        coop.load_dataset("OxfordPets", world_copy, allow_folder_split=True)

    # 00_setup's check and the loaders agree, with and without the flag
    for allow in (False, True):
        for r in data_requirements(world_copy, allow_folder_split=allow):
            name = r["what"].split()[0]
            if "split file" not in r["what"] or not (world_copy / coop.DATASETS[name].dataset_dir).is_dir():
                continue
            loads = True
            try:
                coop.load_dataset(name, world_copy, allow_folder_split=allow)
            except DatasetError:
                loads = False
            assert loads == (r["present"] or not r["required"]), (name, allow)


def test_folder_split_rows_keep_their_label_in_the_tables():
    """A folder-split dataset is its own row, under its label, and never meets the paper's number."""
    rows = [{"method": "CoOp", "dataset": "EuroSAT (folder split)", "split": s, "seed": 1, "metric": "acc",
             "value": v} for s, v in (("base", 80.0), ("new", 60.0))]
    cells, _ = derived.base2new_cells(tables.to_frame(rows), tables.load_reference("cocoop_base2new"), ["CoOp"])
    cell = cells["EuroSAT (folder split)"][("CoOp", "base")]
    assert cell["ours"] == 80.0 and math.isnan(cell["paper"]) and "EuroSAT" not in cells


# ----------------------------------------------------------------------------- the recipe card
NOTEBOOKS = {"20_cocoop_base2new": "datasets", "21_cocoop_cross_dataset": "source",
             "22_cocoop_domain_generalization": "source"}


def _paper_configs(nb: str) -> dict:
    p = notebook_params.effective(nb, "paper")
    world = profiles.Resolved("paper", Path("/data"), {"model_name": "ViT-B-16", "pretrained": "openai",
                                                       "quick_gelu": True})
    params = C.job_params(world, p["recipe"], test_batch_size=p["test_batch_size"], precision=p["precision"],
                          device=p["device"], num_workers=p["num_workers"], threads=p["threads"],
                          text_chunk=p["text_chunk"])
    names = p["datasets"] if NOTEBOOKS[nb] == "datasets" else [p["source"]]
    return C.recipe_configs(params, p["methods"], names, p["seeds"], "base" if nb.startswith("20") else "all")


@pytest.mark.parametrize("nb", list(NOTEBOOKS))
def test_paper_configs_have_no_undocumented_field(nb):
    configs = _paper_configs(nb)
    assert {k.split(" ")[0] for k in configs} == {"CoOp", "CoCoOp", "KgCoOp", "MaPLe", "PromptSRC"}
    for label, cfg in configs.items():
        assert recipe.undocumented(cfg) == [], label
    card = recipe.recipe_card(configs)
    # CoOp/CoCoOp/KgCoOp configs LR 0.002; MaPLe vit_b16_c2_ep5_batch4_2ctx.yaml 0.0035 (base-to-new) and its
    # _cross_datasets.yaml 0.0026 (Tables 2-3); PromptSRC vit_b16_c2_ep20_batch4_4+4ctx(_cross_datasets).yaml 0.0025
    maple_lr = "0.0035" if nb.startswith("20") else "0.0026"
    expected = {label: {"MaPLe": maple_lr, "PromptSRC": "0.0025"}.get(label.split(" ")[0], "0.002") for label in configs}
    assert card.loc["lr"].drop("source").to_dict() == expected
    assert all(card["source"].str.len() > 0)


def test_paper_card_values_are_the_official_configs():
    configs = _paper_configs("20_cocoop_base2new")
    cocoop_cfg = configs["CoCoOp"]
    # CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml
    assert (cocoop_cfg.epochs, cocoop_cfg.batch_size, cocoop_cfg.lr, cocoop_cfg.warmup_epochs, cocoop_cfg.warmup_lr,
            cocoop_cfg.n_ctx, cocoop_cfg.ctx_init, cocoop_cfg.test_batch_size) == (10, 1, 0.002, 1, 1e-5, 4,
                                                                                   "a photo of a", 100)
    # CoOp configs/trainers/CoOp/vit_b16_ctxv1.yaml (200 epochs) and vit_b16_ep50_ctxv1.yaml for ImageNet
    assert configs["CoOp (ImageNet)"].epochs == 50 and configs["CoOp (Caltech101 +9)"].epochs == 200
    assert all(c.batch_size == 32 for k, c in configs.items() if k.startswith("CoOp"))
    assert cocoop_cfg.clip.quick_gelu is True and not cocoop_cfg.allow_folder_split


def test_the_card_reads_the_params_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(tmp_path))
    world = profiles.resolve("smoke")
    assert not (tmp_path / "smoke").exists()  # nothing generated, nothing trained
    params = C.job_params(world, {"common": {"shots": 2}, "CoOp": {"epochs": 2}})
    card = C.recipe_card(params, ["CLIP", "CoOp", "CoCoOp"], ["OxfordPets"], [1])
    assert list(card.columns) == ["CoOp", "CoCoOp", "paper", "deviates", "source"] and card.loc["shots", "CoOp"] == "2"
    assert json.dumps(card.to_dict())  # plain values
