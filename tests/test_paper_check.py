"""The paper profile's data check as the user reads it: 00_setup raises `DataMissing`, whose message leads with
what to do, then lists per dataset its download page and the missing paths relative to the data root.
Fast: the check functions and 00_setup's last cell are called directly, no kernel runs."""
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from vlpt_lib.data import check, coop
from vlpt_lib.data.check import ADE20K, COOP_DATASETS_MD, DOWNLOADS, DataMissing, data_requirements, missing_message

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ("ViT-B-16", "openai")  # the paper profile's CLIP, not in the local cache
ALL = list(coop.BASE_TO_NEW) + list(coop.VARIANTS) + [ADE20K]


def _blocks(message: str) -> dict[str, list[str]]:
    """The dataset section: header "  <Name>: <page>" -> its "    in <folder>/: ..." lines."""
    blocks, name = {}, None
    for line in message.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and ": " in line and not line[2].isdigit() \
                and not line.startswith("  Then"):
            name = line.strip().split(": ", 1)[0]
            blocks[name] = [line]
        elif line.startswith("    ") and name:
            blocks[name].append(line)
        elif not line.startswith("  "):
            name = None
    return blocks


@pytest.mark.parametrize("set_root", [False, True], ids=["root unset", "empty root"])
def test_an_empty_data_root_says_what_to_do_first_then_what_is_missing_per_dataset(tmp_path, set_root):
    root = str(tmp_path) if set_root else None
    message = missing_message(data_requirements(root), root, WEIGHTS)
    lines = message.splitlines()
    # what to do leads: the data root, then the two ways to the weights, before any dataset is named
    first_dataset = next(i for i, line in enumerate(lines) if line.startswith("  ImageNet:"))
    head = "\n".join(lines[:first_dataset])
    assert lines[0].startswith("The paper profile is missing data and CLIP weights")
    assert lines[1].startswith("  1. Datasets: ") and "VLPT_DATA_ROOT" in lines[1]
    assert ("set VLPT_DATA_ROOT to the folder holding the datasets" in lines[1]) == (not set_root)
    assert lines[2].startswith("  2. CLIP weights") and "`openai`" in lines[2]
    assert "load_clip('ViT-B-16', 'openai')" in lines[2] and "clip_pretrained: /path/to/ViT-B-16.pt" in lines[2]
    assert "params/paper/*.yaml" in lines[2] and check.OPENAI_VIT_B_16 in lines[2]
    assert "Then run the same" in head
    # per dataset: its download page, then its missing paths relative to the data root
    blocks = _blocks(message)
    assert list(blocks) == ALL
    for name in coop.BASE_TO_NEW[1:] + coop.VARIANTS:
        assert blocks[name][0] == f"  {name}: {DOWNLOADS[name]}" and DOWNLOADS[name].startswith(COOP_DATASETS_MD + "#")
        assert all(line.startswith(f"    in {coop.DATASETS[name].dataset_dir}/: ") for line in blocks[name][1:])
    assert "https://image-net.org/download.php" in blocks["ImageNet"][0]
    assert blocks["ImageNet"][1:] == ["    in imagenet/: images/train/, images/val/, classnames.txt"]
    assert "http://sceneparsing.csail.mit.edu/" in blocks[ADE20K][0]
    assert blocks[ADE20K][1:] == ["    in ADEChallengeData2016/: images/training/, annotations/training/, "
                                  "images/validation/, annotations/validation/"]
    assert "    in caltech-101/: 101_ObjectCategories/, split_zhou_Caltech101.json" in blocks["Caltech101"]
    assert "    in fgvc_aircraft/: images/, images_variant_train.txt, images_variant_val.txt, " \
           "images_variant_test.txt" in blocks["FGVCAircraft"]
    # ImageNet's class names (read by CoCoOp and by MVP) once; nothing the runner would add
    assert message.count("ImageNet class names") == 1
    assert sum(line.count("classnames.txt") for line in blocks["ImageNet"][1:]) == 1
    assert "FAILED" not in message and "--force" not in message and "Traceback" not in message
    dataset_lines = [line for block in blocks.values() for line in block[1:]]
    assert not any(str(tmp_path) in line or "<set" in line for line in dataset_lines)  # relative paths
    assert lines[-1] == "notebooks/00_setup.ipynb lists every item with the tables that read it."
    assert len(lines) < 50


def test_needs_limited_to_one_dataset_requires_only_its_items(tmp_path):
    rows = data_requirements(tmp_path, needs=["OxfordPets"])
    assert {r["dataset"] for r in rows if r["required"]} == {"OxfordPets"}
    assert {r["dataset"] for r in rows} == set(ALL)  # the others are still listed
    assert check.missing_by_dataset(rows, tmp_path) == {"OxfordPets": ["oxford_pets/images/",
                                                                       "oxford_pets/split_zhou_OxfordPets.json"]}
    message = missing_message(rows, tmp_path)
    assert list(_blocks(message)) == ["OxfordPets"]
    assert f"  OxfordPets: {COOP_DATASETS_MD}#oxfordpets" in message
    assert "CLIP weights" not in message and "missing data it reads" in message.splitlines()[0]
    for other in ("Caltech101", "ImageNet", ADE20K):
        assert other not in message
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").write_text("{}")
    assert missing_message(data_requirements(tmp_path, needs=["OxfordPets"]), tmp_path) == ""


def test_needs_by_alias_and_the_segmentation_data(tmp_path):
    message = missing_message(data_requirements(tmp_path, needs=["dtd", ADE20K]), tmp_path)
    assert list(_blocks(message)) == ["DescribableTextures", ADE20K]
    assert message.count("split_zhou_<Name>.json") == 1  # the note on the split files, once
    only_ade = missing_message(data_requirements(tmp_path, needs=[ADE20K]), tmp_path)
    assert "split_zhou" not in only_ade and "Datasets: put what is missing below into the data root" in only_ade


def test_allow_folder_split_keeps_its_strictness(tmp_path):
    groups = check.missing_by_dataset(data_requirements(tmp_path, allow_folder_split=True), tmp_path)
    for name in coop.BASE_TO_NEW:
        spec = coop.DATASETS[name]
        if spec.kind == "split_json":
            assert any(p.endswith(spec.split_file) for p in groups[name]) == (not spec.folder_fallback), name


def test_imagenet_present_for_one_reader_is_present_for_both(tmp_path):
    """CoCoOp and MVP read the same ImageNet folders: present, neither lists them; missing, they are listed once."""
    for sub in ("imagenet/images/train", "imagenet/images/val"):
        (tmp_path / sub).mkdir(parents=True)
    rows = data_requirements(tmp_path, needs=["ImageNet"])
    assert check.missing_by_dataset(rows, tmp_path) == {"ImageNet": ["imagenet/classnames.txt"]}


def test_weights_alone_and_a_missing_weights_file(tmp_path):
    assert missing_message([], tmp_path) == ""
    tag = missing_message([], tmp_path, WEIGHTS)
    assert tag.splitlines()[1].startswith("  1. CLIP weights (ViT-B-16, open_clip tag `openai`")
    assert "Missing under the data root" not in tag and "VLPT_DATA_ROOT" not in tag
    missing_file = missing_message([], tmp_path, ("ViT-B-16", str(tmp_path / "ViT-B-16.pt")))
    assert f"the file {tmp_path / 'ViT-B-16.pt'} (clip_pretrained) does not exist" in missing_file
    assert "`clip_pretrained: openai`" in missing_file


def test_a_data_root_that_is_not_a_folder(tmp_path):
    root = tmp_path / "nowhere"
    message = missing_message(data_requirements(root, needs=["EuroSAT"]), root)
    assert f"the data root {root} is not a folder; set VLPT_DATA_ROOT to" in message.splitlines()[1]
    assert "    in eurosat/: 2750/, split_zhou_EuroSAT.json" in message


def _last_cell(**namespace):
    """Run 00_setup's last cell (the verdict) in `namespace`, as the kernel would after the cells before it."""
    nb = nbformat.read(REPO_ROOT / "notebooks" / "00_setup.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.get("id") == "9172f596")
    import os
    requirements = namespace["requirements"]
    namespace.setdefault("missing", requirements[~requirements["present"] & requirements["required"]])
    exec(cell.source, {"os": os, **namespace})


def test_the_setup_notebook_raises_data_missing_with_the_message(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VLPT_DATA_ROOT", raising=False)
    base = dict(profile="paper", data_root=None, name="ViT-B-16", tag="openai")
    requirements = pd.DataFrame(data_requirements(None, needs=["EuroSAT"]))
    with pytest.raises(DataMissing) as err:
        _last_cell(**base, requirements=requirements, strict=True, weights_ok=False)
    assert type(err.value).__name__ == "DataMissing"  # the ename the runner matches
    assert str(err.value) == missing_message(requirements.to_dict("records"), None, WEIGHTS)
    _last_cell(**base, requirements=requirements, strict=False, weights_ok=False)  # not strict: shown, no error
    assert capsys.readouterr().out.startswith("The paper profile is missing data and CLIP weights")
    root = tmp_path / "data"
    (root / "eurosat" / "2750").mkdir(parents=True)
    (root / "eurosat" / "split_zhou_EuroSAT.json").write_text("{}")
    ok = pd.DataFrame(data_requirements(root, needs=["EuroSAT"]))
    _last_cell(**{**base, "data_root": str(root)}, requirements=ok, strict=True, weights_ok=True)
    assert capsys.readouterr().out.strip() == "Everything this profile needs is in place."


def test_smoke_keeps_its_check(tmp_path, capsys):
    """smoke/mini: the generated world's rows, listed as before; strict raises FileNotFoundError there."""
    requirements = pd.DataFrame(data_requirements(tmp_path, world_hash="0" * 12))
    base = dict(profile="smoke", data_root=None, name="vlpt-smoke-clip", tag=None, weights_ok=False)
    _last_cell(**base, requirements=requirements, strict=False)
    assert capsys.readouterr().out.startswith("Missing for this profile:")
    with pytest.raises(FileNotFoundError):
        _last_cell(**base, requirements=requirements, strict=True)


def test_the_runner_raises_data_not_ready_with_the_message_alone(tmp_path, monkeypatch, results_root):
    """A notebook failing with DataMissing: the runner's error is that message, no 'failed in cell', no --force."""
    import papermill as pm

    from vlpt_lib.workbook import runner

    message = "The paper profile is missing data and CLIP weights it reads. What to do: ..."

    def data_missing(input_path, output_path, *_, **__):
        Path(output_path).write_text(Path(input_path).read_text())  # papermill leaves the executed copy
        raise pm.PapermillExecutionError(cell_index=8, exec_count=8, source="raise DataMissing(text)",
                                         ename="DataMissing", evalue=message, traceback=[])

    monkeypatch.setattr(runner.pm, "execute_notebook", data_missing)
    with pytest.raises(runner.DataNotReady) as err:
        runner.reproduce("smoke", only=["00_setup"], render=False)
    assert str(err.value) == message


def test_the_cli_prints_data_not_ready_without_failed(monkeypatch, capsys):
    import vlpt_lib.__main__ as cli
    from vlpt_lib.workbook.runner import DataNotReady

    def refuse(*_, **__):
        raise DataNotReady("set VLPT_DATA_ROOT ...")

    monkeypatch.setattr(cli, "reproduce", refuse)
    assert cli.main(["reproduce", "--profile", "paper", "--only", "00_setup"]) == 1
    err = capsys.readouterr().err
    assert "set VLPT_DATA_ROOT" in err and "FAILED" not in err and "--force" not in err
