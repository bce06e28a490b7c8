"""Results you can trust (issue #10): a result's key covers what it depends on, --force recomputes, an
interrupted run never leaves an "ok" record, and a run killed at any named point resumes to the tables an
uninterrupted run gives.

Most notebook-level tests run a toy pipeline (t1_up runs the `example` job and writes table toy_up; t2_down
reads it and writes toy_down) with its cells executed in this process in place of papermill (seconds);
test_fault_injection runs the same toy notebooks with papermill in a subprocess that stops itself at a fault
point (vlpt_lib/utils/faults.py).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
from PIL import Image

from vlpt_lib.__main__ import main
from vlpt_lib.jobs import example, launch, pretrain
from vlpt_lib.training import checkpoint
from vlpt_lib.utils import fingerprint as fp
from vlpt_lib.utils.faults import FAULT_ENV, fault_point
from vlpt_lib.workbook import mvp, runner, tables
from vlpt_lib.workbook.paths import REPO_ROOT

CFG = {"n": 32, "dim": 4, "batch_size": 8, "epochs": 2, "lr": 0.05, "seed": 0, "device": "cpu"}
PROFILE = "paper"  # the toy reads $VLPT_DATA_ROOT as the paper profile does

UP_PARAMS = 'profile = "smoke"\nepochs = 2\ndata_root = None'
UP_BODY = """import os
from pathlib import Path
from vlpt_lib.jobs.launch import run_job
from vlpt_lib.workbook import paths, tables
root = Path(data_root or os.environ["VLPT_DATA_ROOT"])
scale = float((root / "scale.txt").read_text())
cfg = {"n": 32, "dim": 4, "batch_size": 8, "epochs": epochs, "lr": 0.05 * scale, "seed": 0, "device": "cpu"}
r = run_job("example", cfg, paths.runs_dir(profile))
tables.save_table("toy_up", [{"method": "example", "dataset": "toy", "split": "all", "seed": 0, "metric": "bias",
                              "value": r["bias"], "run_id": r["run_id"]}], profile)"""
DOWN_BODY = """from vlpt_lib.workbook import tables
up = tables.load_table("toy_up", profile)
tables.save_table("toy_down", [{"method": "twice", "dataset": "toy", "split": "all", "seed": 0, "metric": "bias x 2",
                                "value": 2 * float(up["value"].iloc[0]), "run_id": up["run_id"].iloc[0]}], profile)"""
REGISTER = """from vlpt_lib.workbook import runner, tables
tables.TABLES["toy_up"] = tables.Table("toy up", "t1_up", paper=False)
tables.TABLES["toy_down"] = tables.Table("toy down", "t2_down", paper=False)
runner.PIPELINE["t1_up"] = []
runner.PIPELINE["t2_down"] = ["t1_up"]
"""


def _mark(run_dir: Path) -> None:
    """Put a marker into a run's result: a result served from cache keeps it, a recomputed one does not."""
    path = run_dir / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "marker": 1}))


# ----------------------------------------------------------------------------- job level
def test_job_key_holds_the_absolute_data_root_never_none(tmp_path, monkeypatch, results_root):
    """`data_root: null` meant "$VLPT_DATA_ROOT": other data gave the old key, hence the old table."""
    monkeypatch.setenv("VLPT_DATA_ROOT", str(tmp_path / "a"))
    cfg_a = mvp.pretrain_cfgs("paper", {}, ["pixel"])["pixel"]
    monkeypatch.setenv("VLPT_DATA_ROOT", str(tmp_path / "b"))
    cfg_b = mvp.pretrain_cfgs("paper", {}, ["pixel"])["pixel"]
    assert (cfg_a["data"]["root"], cfg_b["data"]["root"]) == (str(tmp_path / "a"), str(tmp_path / "b"))
    runs = tmp_path / "runs"
    assert launch.run_dir_for("pretrain", cfg_a, runs) != launch.run_dir_for("pretrain", cfg_b, runs)
    relative = {"data": {"root": "data"}}  # a relative root means the folder under the current directory
    monkeypatch.chdir(tmp_path / "..")
    here = launch.run_dir_for("pretrain", relative, runs)
    assert str(tmp_path.parent / "data" / "imagenet" / "images" / "train") in launch.data_paths(
        "pretrain", launch.resolve_config("pretrain", relative))
    monkeypatch.chdir(tmp_path)
    assert launch.run_dir_for("pretrain", relative, runs) != here


def test_fingerprint_sees_data_changes_but_not_caches_beside_the_data(tmp_path):
    images = tmp_path / "images"
    (images / "n01").mkdir(parents=True)
    (images / "n01" / "a.jpg").write_bytes(b"x")
    split = tmp_path / "split.json"
    split.write_text("{}")
    os.utime(images / "n01", ns=(10**9, 10**9))  # an old mtime: the next change surely moves it
    paths = [str(images), str(split), str(tmp_path / "absent")]
    before = fp.fingerprint(paths)
    assert before[str(tmp_path / "absent")] == "missing"
    (images / "scan_train.json").write_text("{}")  # this project's caches are not data
    (images / "split_fewshot").mkdir()
    assert fp.fingerprint(paths) == before
    (images / "n01" / "b.jpg").write_bytes(b"y")  # an image added to a class folder
    assert fp.changed_paths(before, fp.fingerprint(paths)) == [str(images)]
    split.write_text('{"train": []}')  # a split file rewritten
    assert str(split) in fp.changed_paths(before, fp.fingerprint(paths))


def test_job_recomputes_when_the_data_it_reads_is_fixed_in_place(tmp_path, monkeypatch):
    data = tmp_path / "labels.txt"
    data.write_text("1")
    monkeypatch.setattr(example, "data_paths", lambda cfg: [str(data)], raising=False)
    runs = tmp_path / "runs"
    launch.run_job("example", CFG, runs)
    run_dir = launch.run_dir_for("example", CFG, runs)
    _mark(run_dir)
    assert launch.run_job("example", CFG, runs)["marker"] == 1
    data.write_text("22")  # same path, other content: the key is the same, the fingerprint is not
    assert launch.stale_reason(run_dir) == f"input changed: {data}"
    assert "marker" not in launch.run_job("example", CFG, runs)
    assert launch.stale_reason(run_dir) is None


def test_an_image_rewritten_in_place_recomputes_the_run(smoke_env, tmp_path):
    """A real job on the smoke world: one test image of a class folder overwritten under its own name (as a
    re-download or a repair does; the class folder's mtime does not move) makes the cached run stale."""
    root = tmp_path / "data"
    shutil.copytree(Path(smoke_env["data_root"]) / "dtd", root / "dtd")
    cfg = {**smoke_env, "data_root": str(root), "method": "CLIP", "dataset": "DescribableTextures"}
    runs = tmp_path / "runs"
    launch.run_job("prompt", cfg, runs)
    run_dir = launch.run_dir_for("prompt", cfg, runs)
    _mark(run_dir)
    image = sorted((root / "dtd" / "images").glob("*/*.jpg"))[0]
    folder_mtime = image.parent.stat().st_mtime_ns
    with Image.open(image) as im:
        size = im.size
    Image.new("RGB", size).save(image)  # black, same name, same folder
    assert image.parent.stat().st_mtime_ns == folder_mtime
    assert launch.stale_reason(run_dir) == f"input changed: {root / 'dtd' / 'images'}"
    assert "marker" not in launch.run_job("prompt", cfg, runs)
    assert launch.stale_reason(run_dir) is None


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "vlpt_lib"
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_a_jobs_code_is_its_import_closure_hashed_on_meaning(tmp_path):
    """A job's code: the modules it imports, through each other (a lazy import, a registry's folder listing, a
    package's model configs), each hashed on its AST without docstrings; a generator it never imports is not
    part of it."""
    pkg = _package(tmp_path, {
        "__init__.py": "", "jobs/__init__.py": "", "models/__init__.py": "", "worlds/__init__.py": "",
        "jobs/job.py": "from ..models import loss\ndef run():\n    from ..methods import reg\n    return loss.f()",
        "models/loss.py": '"""The loss."""\ndef f():\n    return 1  # one\n',
        "models/configs/m.json": '{"width": 1}',
        "methods/__init__.py": "", "methods/reg/__init__.py": "import pkgutil\nlist(pkgutil.iter_modules(__path__))",
        "methods/reg/a.py": "A = 1", "worlds/gen.py": "G = 1"})
    closure = fp.code_closure.__wrapped__  # uncached: the files change under it here
    before = closure(("vlpt_lib.jobs.job",), pkg)
    assert set(before) == {"vlpt_lib", "vlpt_lib.jobs", "vlpt_lib.jobs.job", "vlpt_lib.models", "vlpt_lib.models.loss",
                           "vlpt_lib/models/configs/m.json", "vlpt_lib.methods", "vlpt_lib.methods.reg",
                           "vlpt_lib.methods.reg.a"}
    (pkg / "models" / "loss.py").write_text('"""The loss, documented."""\n\n\ndef f():\n    # why one\n    return (1)\n')
    (pkg / "worlds" / "gen.py").write_text("G = 2")
    (pkg / "models" / "configs" / "m.json").write_text('{\n  "width": 1\n}')
    assert closure(("vlpt_lib.jobs.job",), pkg) == before
    (pkg / "models" / "loss.py").write_text("def f():\n    return 2\n")
    (pkg / "methods" / "reg" / "a.py").write_text("A = 2")
    assert fp.changed_modules(before, closure(("vlpt_lib.jobs.job",), pkg)) == [
        "vlpt_lib.methods.reg.a", "vlpt_lib.models.loss"]


def _other_code(monkeypatch, module="vlpt_lib.jobs.example"):
    """Make the example job's code differ from what its runs recorded (as a real edit of `module` would)."""
    code = dict(launch.job_code("example"))
    monkeypatch.setattr(launch, "job_code", lambda job: {**code, module: "edited"})


def test_changed_code_recomputes_a_finished_run_in_its_folder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    launch.run_job("example", CFG, runs)
    run_dir = launch.run_dir_for("example", CFG, runs)
    _mark(run_dir)
    _other_code(monkeypatch)
    assert launch.run_dir_for("example", CFG, runs) == run_dir  # the run keeps its folder
    assert launch.stale_reason(run_dir) == "code changed: vlpt_lib.jobs.example"
    assert "marker" not in launch.run_job("example", CFG, runs)
    assert launch.stale_reason(run_dir) is None


def test_changed_code_stops_when_asked_and_names_the_run_and_module(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    launch.run_job("example", CFG, runs)
    run_dir = launch.run_dir_for("example", CFG, runs)
    _mark(run_dir)
    _other_code(monkeypatch)
    monkeypatch.setenv(launch.CODE_CHANGE_ENV, "stop")
    with pytest.raises(launch.CodeChanged, match=f"{run_dir}.*vlpt_lib.jobs.example"):
        launch.run_job("example", CFG, runs)
    assert json.loads((run_dir / "result.json").read_text())["marker"] == 1  # nothing discarded


def test_kept_run_resumes_under_changed_code_and_records_both_versions(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    cfg = {**CFG, "epochs": 2}
    launch.run_job("example", cfg, runs)
    run_dir = launch.run_dir_for("example", cfg, runs)
    (run_dir / "result.json").unlink()  # as if stopped after its last checkpoint, before the result
    _other_code(monkeypatch)
    monkeypatch.setenv(launch.CODE_CHANGE_ENV, "keep")
    assert launch.run_job("example", cfg, runs)["resumed_from_epoch"] == 2
    recorded = json.loads((run_dir / "config.json").read_text())
    versions = recorded["code_versions"]
    assert [v["how"] for v in versions] == ["started", "kept under changed code"]
    assert versions[0]["code"] != versions[1]["code"] and {"commit", "dirty"} <= set(versions[1])
    assert recorded["modules"]["vlpt_lib.jobs.example"] == "edited"  # the next check compares with this version
    monkeypatch.delenv(launch.CODE_CHANGE_ENV)
    assert launch.stale_reason(run_dir) is None


def test_a_run_reading_an_upstream_run_that_would_be_recomputed_is_stale(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    up_cfg, down_cfg = CFG, {**CFG, "tag": "reads up"}
    launch.run_job("example", up_cfg, runs)
    up = launch.run_dir_for("example", up_cfg, runs)
    monkeypatch.setattr(example, "data_paths",
                        lambda cfg: [str(up / "result.json")] if cfg["tag"] else [], raising=False)
    launch.run_job("example", down_cfg, runs)
    down = launch.run_dir_for("example", down_cfg, runs)
    assert launch.stale_reason(down) is None
    real = launch.code_change
    monkeypatch.setattr(launch, "code_change", lambda d: ["vlpt_lib.models.mvp"] if Path(d) == up else real(d))
    assert launch.stale_reason(down) == f"upstream {up.name}: code changed: vlpt_lib.models.mvp"


def test_finetune_key_follows_its_pretraining_run(tmp_path, results_root):
    runs = tmp_path / "runs"

    def finetune_dir(pretrain_epochs: int) -> Path:
        cfgs = mvp.pretrain_cfgs("smoke", {"optim": {"epochs": pretrain_epochs}})
        exports = {t: {"export": str(launch.run_dir_for("pretrain", c, runs) / pretrain.EXPORT_NAME),
                       "model_name": "beit_base_patch16_224", "kwargs": {}} for t, c in cfgs.items()}
        cfg = mvp.finetune_cfg("smoke", {}, "MVP", 0, exports)
        assert exports["clip"]["export"] in launch.data_paths("finetune", cfg)  # its file is fingerprinted too
        return launch.run_dir_for("finetune", cfg, runs)

    assert finetune_dir(1) == finetune_dir(1)
    assert finetune_dir(1) != finetune_dir(2)


def test_force_recomputes_a_job_once(tmp_path, monkeypatch):
    """A cached result older than $VLPT_RECOMPUTE_BEFORE (what --force exports) is recomputed, once."""
    runs = tmp_path / "runs"
    launch.run_job("example", CFG, runs)
    run_dir = launch.run_dir_for("example", CFG, runs)
    _mark(run_dir)
    time.sleep(0.05)
    monkeypatch.setenv(launch.RECOMPUTE_BEFORE_ENV, f"{time.time():.3f}")
    assert "marker" not in launch.run_job("example", CFG, runs)
    _mark(run_dir)
    assert launch.run_job("example", CFG, runs)["marker"] == 1  # a second notebook using it: not again


# ----------------------------------------------------------------------------- notebook level (toy pipeline)
def _notebook(path: Path, params_src: str, body_src: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params_src)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def toy(tmp_path, results_root, monkeypatch):
    """The toy pipeline registered with the runner: (nb_dir, p_dir, data roots a and b)."""
    nb_dir, p_dir = tmp_path / "notebooks", tmp_path / "params"
    nb_dir.mkdir()
    (p_dir / PROFILE).mkdir(parents=True)
    _notebook(nb_dir / "t1_up.ipynb", UP_PARAMS, UP_BODY)
    _notebook(nb_dir / "t2_down.ipynb", 'profile = "smoke"', DOWN_BODY)
    roots = []
    for name, scale in (("a", "1"), ("b", "3")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "scale.txt").write_text(scale)
        roots.append(tmp_path / name)
    monkeypatch.setenv("VLPT_DATA_ROOT", str(roots[0]))
    monkeypatch.setitem(tables.TABLES, "toy_up", tables.Table("toy up", "t1_up", paper=False))
    monkeypatch.setitem(tables.TABLES, "toy_down", tables.Table("toy down", "t2_down", paper=False))
    monkeypatch.setitem(runner.PIPELINE, "t1_up", [])
    monkeypatch.setitem(runner.PIPELINE, "t2_down", ["t1_up"])
    return nb_dir, p_dir, roots[0], roots[1]


@pytest.fixture
def in_process(monkeypatch):
    """papermill replaced by running the notebook's cells in this process (the parameters after their cell)."""
    def execute(input_path, output_path, parameters, **_):
        nb = nbformat.read(input_path, as_version=4)
        namespace: dict = {}
        for cell in nb.cells:
            exec(cell.source, namespace)
            if "parameters" in cell.metadata.get("tags", []):
                namespace.update(parameters)
        nbformat.write(nb, output_path)

    monkeypatch.setattr(runner.pm, "execute_notebook", execute)
    return execute


def _run(toy, **kw) -> list[tuple[str, str]]:
    nb_dir, p_dir = toy[:2]
    return [(o.name, o.status) for o in runner.reproduce(PROFILE, nb_dir=nb_dir, p_dir=p_dir, render=False, **kw)]


def _reasons(toy) -> dict[str, str | None]:
    return {s.name: s.reason for s in runner.status(PROFILE, nb_dir=toy[0], p_dir=toy[1])}


def _tables(results: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_csv(results / PROFILE / "tables" / f"{t}.csv") for t in ("toy_up", "toy_down")}


def _record(results: Path, name: str) -> dict:
    return json.loads((results / PROFILE / "notebooks" / f"{name}.run.json").read_text())


def test_changed_data_root_reruns_what_reads_it(toy, in_process, results_root, monkeypatch):
    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    assert _reasons(toy) == {"t1_up": None, "t2_down": None}
    first = _tables(results_root)
    monkeypatch.setenv("VLPT_DATA_ROOT", str(toy[3]))
    assert _reasons(toy) == {"t1_up": "data root changed", "t2_down": "upstream t1_up would run"}
    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    second = _tables(results_root)
    assert second["toy_up"]["run_id"][0] != first["toy_up"]["run_id"][0]
    assert second["toy_down"]["value"][0] == pytest.approx(2 * second["toy_up"]["value"][0])


def test_changed_upstream_param_reruns_downstream(toy, in_process, results_root):
    """Changing params/*/10_mvp_pretrain.yaml re-ran 10 but left 11 and 12 describing the old model."""
    _run(toy)
    (toy[1] / PROFILE / "t1_up.yaml").write_text("epochs: 3\n")
    assert _reasons(toy) == {"t1_up": "params changed", "t2_down": "upstream t1_up would run"}
    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    assert _reasons(toy) == {"t1_up": None, "t2_down": None}


def test_deleted_table_is_rebuilt(toy, in_process, results_root):
    _run(toy)
    before = _tables(results_root)
    (results_root / PROFILE / "tables" / "toy_down.csv").unlink()
    assert _reasons(toy) == {"t1_up": None, "t2_down": "table toy_down missing"}
    assert _run(toy) == [("t1_up", "cached"), ("t2_down", "ran")]
    pd.testing.assert_frame_equal(_tables(results_root)["toy_down"], before["toy_down"])


def test_code_change_and_changed_job_data_rerun_notebooks(toy, in_process, results_root, monkeypatch, tmp_path):
    data = tmp_path / "labels.txt"
    data.write_text("1")
    monkeypatch.setattr(example, "data_paths", lambda cfg: [str(data)], raising=False)
    _run(toy)
    data.write_text("22")  # the job's data fixed in place: its run, hence t1_up's table, is stale
    assert _reasons(toy)["t1_up"].endswith(f"input changed: {data}")
    _run(toy)
    real = runner.notebook_code
    monkeypatch.setattr(runner, "notebook_code", lambda sources: {**real(sources), "vlpt_lib.workbook.tables": "edited"})
    assert _reasons(toy) == {"t1_up": "code changed: vlpt_lib.workbook.tables",
                             "t2_down": "code changed: vlpt_lib.workbook.tables"}


def test_paper_stops_before_any_notebook_on_runs_made_by_other_code_and_keeps_them_when_asked(
        toy, in_process, results_root, monkeypatch):
    """The paper profile never discards a run because the code changed: reproduce names the run and the module
    and runs nothing; --keep-runs serves it as it is and records the code change in the run."""
    _run(toy)
    run_dir = Path(_record(results_root, "t1_up")["runs"][0]["run_dir"])
    _mark(run_dir)
    _other_code(monkeypatch)
    with pytest.raises(runner.RunsMadeByOtherCode, match=f"(?s){run_dir}: vlpt_lib.jobs.example.*--keep-runs"):
        _run(toy)
    assert json.loads((run_dir / "result.json").read_text())["marker"] == 1
    assert runner.code_change_lines(PROFILE, nb_dir=toy[0])[1] == f"  {run_dir}: vlpt_lib.jobs.example"
    _run(toy, keep_runs=True)
    assert json.loads((run_dir / "result.json").read_text())["marker"] == 1  # kept, not recomputed
    versions = json.loads((run_dir / "config.json").read_text())["code_versions"]
    assert [v["how"] for v in versions] == ["started", "kept under changed code"]
    assert runner.code_change_lines(PROFILE, nb_dir=toy[0]) == []


def test_force_recomputes_jobs_too(toy, in_process, results_root):
    _run(toy)
    run_dir = Path(_record(results_root, "t1_up")["runs"][0]["run_dir"])
    _mark(run_dir)
    start = time.time()
    assert _run(toy, force=True) == [("t1_up", "ran"), ("t2_down", "ran")]
    assert "marker" not in json.loads((run_dir / "result.json").read_text())
    assert (run_dir / "config.json").stat().st_mtime >= start - 0.01
    assert os.environ.get(launch.RECOMPUTE_BEFORE_ENV) is None  # only while that reproduce runs


@pytest.mark.parametrize("how", ["runner", "kernel"])
def test_interrupted_force_keeps_no_ok_record_and_resumes(toy, in_process, results_root, monkeypatch, how):
    """Ctrl-C during --force used to keep the old "ok" record and the KeyboardInterrupt in the report."""
    _run(toy)
    clean = _tables(results_root)

    def interrupted(input_path, output_path, parameters, **_):
        Path(output_path).write_text("half a notebook")
        if how == "runner":
            raise KeyboardInterrupt
        raise pm.PapermillExecutionError(1, 1, "run_job(...)", "KeyboardInterrupt", "", [])

    monkeypatch.setattr(runner.pm, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(toy, force=True)
    executed = results_root / PROFILE / "notebooks"
    assert _record(results_root, "t1_up")["status"] == "interrupted"
    assert not (executed / "t1_up.ipynb").exists() and not list((executed / ".partial").glob("*.ipynb"))
    assert _reasons(toy) == {"t1_up": "last run was interrupted", "t2_down": "upstream t1_up would run"}
    monkeypatch.setattr(runner.pm, "execute_notebook", in_process)
    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    for name, df in _tables(results_root).items():
        pd.testing.assert_frame_equal(df, clean[name])


def test_a_full_disk_under_the_runner_marks_the_record_failed_and_is_one_line(toy, in_process, results_root,
                                                                             monkeypatch):
    """papermill cannot write the executed copy: the record says failed (with the path), the error is the disk's
    (the CLI prints it in one line), and even a record the disk refuses does not replace that error."""
    import errno

    def disk_full(input_path, output_path, parameters, **_):
        raise OSError(errno.ENOSPC, "No space left on device", str(output_path))

    monkeypatch.setattr(runner.pm, "execute_notebook", disk_full)
    with pytest.raises(OSError) as err:
        _run(toy)
    assert err.value.errno == errno.ENOSPC and err.value.__context__ is None
    record = _record(results_root, "t1_up")
    assert record["status"] == "failed" and "No space left on device" in record["reason"]
    assert not list((results_root / PROFILE / "notebooks" / ".partial").glob("*.ipynb"))
    real_write = runner._write_record
    monkeypatch.setattr(runner, "_write_record", lambda path, rec: real_write(path, rec) if rec["status"] == "running"
                        else disk_full(None, path, None))
    with pytest.raises(OSError) as again:
        _run(toy)
    assert again.value.filename.endswith(".ipynb") and again.value.__context__ is None


def test_cli_status_runs_nothing_and_help_says_what_force_recomputes(results_root, capsys):
    assert main(["reproduce", "--profile", "smoke", "--status", "--only", "cocoop_base2new"]) == 0
    out = capsys.readouterr().out
    assert "20_cocoop_base2new" in out and "would run: never ran" in out and "10_mvp_pretrain" not in out
    assert not results_root.exists(), "--status wrote something"
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("VLPT_RESULTS_ROOT", "VLPT_DATA_ROOT", "VLPT_NO_PROGRESS", "VLPT_RECOMPUTE_BEFORE", "Default: mini",
                  "recompute every job result they use", "run nothing"):
        assert words in text, words


# ----------------------------------------------------------------------------- fault injection (papermill)
DRIVER = REGISTER + """import signal
import sys
from pathlib import Path
# Ctrl-C as in a terminal, also where the tests run in the background (which starts them with SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    runner.reproduce("paper", nb_dir=Path(sys.argv[1]), p_dir=Path(sys.argv[2]), render=False,
                     force="--force" in sys.argv)
except KeyboardInterrupt:
    sys.exit(130)
"""
@pytest.mark.parametrize("spec", ["checkpoint2", "chekpoint@2:SIGKILL", "table@0:SIGINT", "table@1:SIGTERM"])
def test_a_malformed_fault_spec_is_refused(spec, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, spec)
    with pytest.raises(ValueError, match=rf"\$VLPT_FAULT='{spec}': expected <event>@<n>:<SIGINT\|SIGKILL>"):
        fault_point("table")


EXIT = {"SIGINT": 130, "SIGKILL": -9}  # the driver's exit: Ctrl-C handled, or killed outright
NOT_OK = {"SIGINT": "interrupted", "SIGKILL": "running"}  # what the killed notebook's record says


def _killed_run(toy, results: Path, tmp_path: Path, fault: str, *args: str) -> None:
    """A papermill reproduce of the toy pipeline that stops itself at `fault` ($VLPT_FAULT)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "VLPT_RESULTS_ROOT": str(results), FAULT_ENV: fault}
    proc = subprocess.run([sys.executable, str(driver), str(toy[0]), str(toy[1]), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT[fault.rpartition(":")[2]], proc.stdout[-2000:] + proc.stderr[-2000:]


def _assert_consistent(results: Path) -> None:
    """Every "ok" record has its executed copy and tables; no other record has an executed copy."""
    executed = results / PROFILE / "notebooks"
    for path in executed.glob("*.run.json"):
        name, record = path.name[:-len(".run.json")], json.loads(path.read_text())
        if record["status"] == "ok":
            assert (executed / f"{name}.ipynb").exists(), name
            assert all((results / PROFILE / "tables" / f"{t}.csv").exists() for t in record["tables"]), name
        else:
            assert record["status"] in ("running", "interrupted"), record
            assert not (executed / f"{name}.ipynb").exists(), f"{name}: an unfinished run's notebook is shown"


def _statuses(results: Path) -> dict[str, str]:
    executed = results / PROFILE / "notebooks"
    return {p.name[:-len(".run.json")]: json.loads(p.read_text())["status"] for p in executed.glob("*.run.json")}


def _assert_same_tables(results: Path, clean: dict[str, pd.DataFrame]) -> None:
    """The toy tables equal the uninterrupted run's, to the bit."""
    for name, df in _tables(results).items():
        pd.testing.assert_frame_equal(df, clean[name])


def _toy_run_dir(results: Path) -> Path:
    """t1_up's job run (the example job, 4 epochs, as `clean` sets it)."""
    return launch.run_dir_for("example", {**CFG, "epochs": 4}, results / PROFILE / "runs")


@pytest.fixture
def clean(toy, in_process, tmp_path, monkeypatch):
    """The tables of an uninterrupted run (in this process), then papermill and its kernels from here on."""
    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(tmp_path / "clean"))
    (toy[1] / PROFILE / "t1_up.yaml").write_text("epochs: 4\n")
    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    tables_ = _tables(tmp_path / "clean")
    monkeypatch.setenv("VLPT_RESULTS_ROOT", str(tmp_path / "killed"))
    return tables_


# (fault point, the job's epochs done when killed: None = the job never started, 4 = its result was written)
KILL_POINTS = [("record-running@1", None), ("checkpoint@2", 2), ("table@1", 4)]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("point,epochs_done", KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_fault_injection(toy, clean, tmp_path, point, epochs_done, sig):
    """Killed at a named point, the run leaves t1_up's record not "ok" and no executed copy of it; run again,
    the job resumes from the checkpoint it left (or is served whole), and the tables equal an uninterrupted
    run's, to the bit."""
    results = tmp_path / "killed"
    _killed_run(toy, results, tmp_path, f"{point}:{sig}")
    _assert_consistent(results)
    assert _statuses(results) == {"t1_up": NOT_OK[sig]}
    run_dir = _toy_run_dir(results)
    state = checkpoint.load(run_dir)
    assert (state["epoch"] + 1 if state else None) == epochs_done
    finished = (run_dir / "result.json").read_bytes() if epochs_done == 4 else None

    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    result = json.loads((run_dir / "result.json").read_text())
    if finished is None:
        assert result["resumed_from_epoch"] == (epochs_done or 0)
    else:
        assert (run_dir / "result.json").read_bytes() == finished  # served, not run again
    _assert_consistent(results)
    _assert_same_tables(results, clean)


def test_fault_in_the_second_notebook_keeps_the_first(toy, clean, tmp_path):
    results = tmp_path / "killed"
    _killed_run(toy, results, tmp_path, "record-running@2:SIGKILL")
    _assert_consistent(results)
    assert _statuses(results) == {"t1_up": "ok", "t2_down": "running"}
    assert _run(toy) == [("t1_up", "cached"), ("t2_down", "ran")]
    _assert_same_tables(results, clean)


def test_fault_during_force_recomputes_from_the_new_checkpoint(toy, clean, tmp_path):
    """Ctrl-C during --force right after the recomputed job's first checkpoint: its old result is gone, the
    downstream notebook would run, and the next run resumes the new job after epoch 1."""
    results = tmp_path / "killed"
    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    _killed_run(toy, results, tmp_path, "checkpoint@1:SIGINT", "--force")
    _assert_consistent(results)
    assert _statuses(results) == {"t1_up": "interrupted", "t2_down": "ok"}
    assert _reasons(toy)["t2_down"] == "upstream t1_up would run"
    run_dir = _toy_run_dir(results)
    assert checkpoint.load(run_dir)["epoch"] == 0 and not (run_dir / "result.json").exists()
    assert _run(toy) == [("t1_up", "ran"), ("t2_down", "ran")]
    assert json.loads((run_dir / "result.json").read_text())["resumed_from_epoch"] == 1
    _assert_same_tables(results, clean)


HEAVY_MODULES = ("torch", "open_clip", "nbformat", "papermill")
LOADED_AFTER_CLI = f"""import json, runpy, sys
sys.argv = ["vlpt_lib", *sys.argv[1:]]
try:
    runpy.run_module("vlpt_lib", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("loaded:", json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["reproduce", "--help"], ["report", "--help"],
                                  ["report", "--profile", "nonsense"], ["bench"]])
def test_cli_help_and_argument_errors_import_no_heavy_module(args):
    """Which modules load, not how long it takes (timings are flaky on CI): these took 10-30 s with torch and co."""
    proc = subprocess.run([sys.executable, "-c", LOADED_AFTER_CLI, *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)
    assert "usage:" in proc.stdout + proc.stderr
    assert "loaded: []" in proc.stderr.splitlines(), proc.stderr
