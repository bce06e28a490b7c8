"""The papermill runner: order, parameters, caching, failures that say where and how to re-run."""
import os
import re
import subprocess
import sys

import nbformat
import pytest

from vlpt_lib.workbook import runner
from vlpt_lib.workbook.params import ParamsError
from vlpt_lib.workbook.paths import REPO_ROOT


def _notebook(path, params_src, body_src):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params_src)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), params, nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def toy(tmp_path, results_root):
    nb_dir, p_dir = tmp_path / "notebooks", tmp_path / "params"
    nb_dir.mkdir()
    (p_dir / "smoke").mkdir(parents=True)
    body = ("from pathlib import Path\nfrom vlpt_lib.workbook import paths\n"
            "out = paths.results_dir(profile) / 'toy.txt'\nout.parent.mkdir(parents=True, exist_ok=True)\n"
            "out.write_text(str(n * 2))")
    _notebook(nb_dir / "00_setup.ipynb", 'profile = "smoke"\nn = 1', body)
    _notebook(nb_dir / "99_report.ipynb", 'profile = "smoke"', "print('report')")
    return nb_dir, p_dir


def test_params_file_reaches_the_notebook_and_reruns_are_cached(toy, results_root):
    nb_dir, p_dir = toy
    (p_dir / "smoke" / "00_setup.yaml").write_text("n: 21\n")
    out = runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir)
    assert [(o.name, o.status) for o in out] == [("00_setup", "ran"), ("99_report", "ran")]
    assert (results_root / "smoke" / "toy.txt").read_text() == "42"
    assert (results_root / "smoke" / "notebooks" / "00_setup.ipynb").exists()
    assert (results_root / "smoke" / "report" / "index.html").exists()
    again = runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir)
    assert again[0].status == "cached" and again[1].status == "ran"  # the report always re-collects
    (p_dir / "smoke" / "00_setup.yaml").write_text("n: 5\n")
    assert runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir)[0].status == "ran"
    assert (results_root / "smoke" / "toy.txt").read_text() == "10"
    assert runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir, force=True)[0].status == "ran"


def test_a_failure_names_notebook_cell_and_rerun_command(toy, results_root):
    nb_dir, p_dir = toy
    _notebook(nb_dir / "20_cocoop_base2new.ipynb", 'profile = "smoke"', "x = 1\nraise ValueError('shots must be > 0')")
    with pytest.raises(runner.NotebookFailed) as err:
        runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir)
    msg = str(err.value)
    assert "20_cocoop_base2new" in msg and "cell" in msg and "shots must be > 0" in msg
    assert "python -m vlpt_lib reproduce --profile smoke --only 20_cocoop_base2new --force" in msg
    # the report is still rendered, and the failed run is not cached
    assert (results_root / "smoke" / "report" / "index.html").exists()
    record = (results_root / "smoke" / "notebooks" / "20_cocoop_base2new.run.json").read_text()
    assert '"failed"' in record


def test_only_accepts_table_names_and_brings_dependencies():
    present = ["00_setup", "01_mini_world", "10_mvp_pretrain", "11_imagenet_finetune", "20_cocoop_base2new", "99_report"]
    assert runner.resolve(["cocoop_base2new"], present) == ["00_setup", "01_mini_world", "20_cocoop_base2new",
                                                            "99_report"]
    assert runner.resolve(["imagenet_finetune"], present) == ["00_setup", "01_mini_world", "10_mvp_pretrain",
                                                              "11_imagenet_finetune", "99_report"]
    with pytest.raises(SystemExit):
        runner.resolve(["nope"], present)


def test_cli_reports_failures_with_exit_code(toy, tmp_path, results_root):
    proc = subprocess.run([sys.executable, "-m", "vlpt_lib", "reproduce", "--profile", "huge"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_params_are_checked_against_the_parameters_cell_before_anything_runs(toy, results_root):
    nb_dir, p_dir = toy
    path = p_dir / "smoke" / "00_setup.yaml"
    path.write_text("nn: 3\n")
    with pytest.raises(ParamsError, match=r"00_setup.yaml: unknown parameter 'nn' .*did you mean 'n'"):
        runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir)
    path.write_text("n: twotwo\n")
    with pytest.raises(ParamsError, match=r"parameter 'n' must be an integer .*'twotwo'"):
        runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir)
    path.write_text("n: [1, 2\n")
    with pytest.raises(ParamsError, match=r"00_setup.yaml:2:1: YAML syntax error"):
        runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir)
    assert not (results_root / "smoke" / "notebooks").exists(), "nothing ran"


@pytest.mark.parametrize("name, text, message", [
    ("20_cocoop_base2new", "precision: bf61\n",
     r"parameter 'precision' = 'bf61' is not allowed: input should be 'auto', 'fp32', 'bf16' or 'fp16'"),
    ("20_cocoop_base2new", "seeds: [1, -2]\n", r"parameter 'seeds'\[1\] = -2 is not allowed"),
    ("20_cocoop_base2new", "recipe: {CoOp: {epochs: -1}}\n",
     r"recipe\['CoOp'\]\['epochs'\] = -1 is not allowed \(input should be greater than or equal to 1\)"),
    ("21_cocoop_cross_dataset", "recipe: {common: {batch_size: 0}}\n", r"\['batch_size'\] = 0 is not allowed"),
    ("11_imagenet_finetune", "finetune: {optim: {epochs: 0}}\n", r"optim.epochs = 0: Input should be greater"),
    ("12_ade20k_segmentation", "workers: 0\n", r"parameter 'workers' = 0 is not allowed"),
    ("10_mvp_pretrain", "device: gpu\n", r"'device' = 'gpu' is not allowed: expected auto, cpu, mps, cuda"),
])
def test_a_bad_value_is_refused_with_the_file_key_value_and_what_is_allowed(name, text, message, tmp_path):
    (tmp_path / "smoke").mkdir()
    path = tmp_path / "smoke" / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=re.escape(str(path)) + ".*" + message):
        runner.load_params(name, "smoke", p_dir=tmp_path)


def test_a_params_file_that_is_not_utf8_is_named_with_the_byte(tmp_path):
    (tmp_path / "smoke").mkdir()
    path = tmp_path / "smoke" / "20_cocoop_base2new.yaml"
    path.write_bytes(b"seeds: [1]\n# caf\xe9\n")
    with pytest.raises(ParamsError, match=re.escape(f"{path}: not UTF-8 text: byte 16 is b'\\xe9'")):
        runner.load_params("20_cocoop_base2new", "smoke", p_dir=tmp_path)


@pytest.mark.parametrize("text, key, lines", [
    ("seeds: [1]\nprecision: fp32\nseeds: [2]\n", "seeds", (3, 1)),
    ("seeds: [1]\nrecipe:\n  CoOp: {epochs: 2}\n  CoOp: {epochs: 3}\n", "CoOp", (4, 3)),
])
def test_a_key_given_twice_is_refused_with_the_file_key_and_lines(text, key, lines, tmp_path):
    (tmp_path / "smoke").mkdir()
    path = tmp_path / "smoke" / "20_cocoop_base2new.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=re.escape(f"{path}:{lines[0]}: duplicate key {key!r} (first on line "
                                                    f"{lines[1]})")):
        runner.load_params("20_cocoop_base2new", "smoke", p_dir=tmp_path)


def test_a_params_file_no_notebook_reads_is_named_with_the_name_it_should_have(toy, capsys):
    nb_dir, p_dir = toy
    (p_dir / "smoke" / "00_setup.yml").write_text("n: 2\n")
    (p_dir / "smoke" / "99_reprot.yaml").write_text("{}\n")
    runner.status("smoke", nb_dir=nb_dir, p_dir=p_dir)
    err = capsys.readouterr().err
    assert f"WARNING: {p_dir / 'smoke' / '00_setup.yml'}: no notebook reads this file" in err
    assert "did you mean 00_setup.yaml?" in err and "did you mean 99_report.yaml?" in err


def test_correctly_named_params_files_draw_no_warning(toy, capsys):
    nb_dir, p_dir = toy
    (p_dir / "smoke" / "00_setup.yaml").write_text("n: 2\n")
    (p_dir / "smoke" / "99_report.yaml").write_text("{}\n")
    runner.status("smoke", nb_dir=nb_dir, p_dir=p_dir)
    assert "WARNING" not in capsys.readouterr().err


def test_the_paper_data_check_requires_only_what_the_selected_notebooks_read(tmp_path):
    """A Table 1 run on OxfordPets alone is not refused for the 10 datasets it never opens (they are still listed);
    add EuroSAT to its datasets and EuroSAT's missing folder and split file are what the strict check names."""
    from vlpt_lib.data.check import data_requirements
    root = tmp_path / "data"
    (root / "oxford_pets" / "images").mkdir(parents=True)
    (root / "oxford_pets" / "split_zhou_OxfordPets.json").write_text("{}")
    (tmp_path / "paper").mkdir()

    def refused(datasets):
        (tmp_path / "paper" / "20_cocoop_base2new.yaml").write_text(f"datasets: {datasets}\n")
        needs = runner.data_needs(["00_setup", "20_cocoop_base2new"], "paper", p_dir=tmp_path)
        rows = data_requirements(root, needs=needs)
        assert any("Caltech101" in r["what"] and not r["required"] for r in rows)  # listed, not required
        return sorted(r["path"] for r in rows if r["required"] and not r["present"])

    assert refused("[OxfordPets]") == []
    assert refused("[OxfordPets, EuroSAT]") == [str(root / "eurosat" / "2750"),
                                                str(root / "eurosat" / "split_zhou_EuroSAT.json")]


def test_cli_names_the_bad_parameter_without_a_traceback(tmp_path):
    bad = REPO_ROOT / "params" / "smoke" / "00_setup.yaml"
    old = bad.read_text() if bad.exists() else None
    try:
        bad.write_text((old or "") + "\nstrictt: true\n")
        proc = subprocess.run([sys.executable, "-m", "vlpt_lib", "reproduce", "--profile", "smoke", "--only", "00_setup"],
                              cwd=REPO_ROOT, capture_output=True, text=True,
                              env={**os.environ, "VLPT_RESULTS_ROOT": str(tmp_path)})
    finally:
        bad.write_text(old) if old is not None else bad.unlink()
    assert proc.returncode == 1 and "unknown parameter 'strictt'" in proc.stderr and "Traceback" not in proc.stderr


def test_only_on_the_paper_profile_checks_the_selected_data_before_any_job(results_root, tmp_path, monkeypatch):
    """`--only` used to skip 00_setup: on real data, hours of GPU ran before a missing dataset stopped the run."""
    root = tmp_path / "data"
    for sub in ("imagenet/images/train/n01", "imagenet/images/val/n01"):
        (root / sub).mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_text("n01 tench\n")
    monkeypatch.setenv("VLPT_DATA_ROOT", str(root))
    with pytest.raises(runner.NotebookFailed) as err:
        runner.reproduce("paper", only=["cocoop_base2new"], render=False)
    msg = str(err.value)
    assert "00_setup" in msg and "Caltech101" in msg
    assert not (results_root / "paper" / "notebooks" / "20_cocoop_base2new.ipynb").exists(), "no job ran"
    with pytest.raises(runner.NotebookFailed) as err:
        runner.reproduce("paper", only=["imagenet_finetune"], render=False)
    msg = str(err.value)  # ImageNet is there; only what MVP also needs is listed, not the CoOp datasets
    assert "00_setup" in msg and "Caltech101" not in msg and "ADE20K" not in msg


def test_independent_notebooks_run_side_by_side_after_their_upstream(toy, monkeypatch):
    """notebooks=2: the setup notebook first and alone, then independent notebooks two at a time (each once its
    upstream has run), the report last; outcomes in run order whatever finished first."""
    import threading
    import time

    nb_dir, p_dir = toy
    for name in ("10_mvp_pretrain", "11_imagenet_finetune", "20_cocoop_base2new"):
        _notebook(nb_dir / f"{name}.ipynb", 'profile = "smoke"', "pass")
    events, lock = [], threading.Lock()

    def execute(input_path, output_path, parameters, **kw):
        name = os.path.basename(input_path)[:-6]
        with lock:
            events.append(("start", name))
        time.sleep(0.3)
        nbformat.write(nbformat.read(input_path, as_version=4), output_path)
        with lock:
            events.append(("end", name))

    monkeypatch.setattr(runner.pm, "execute_notebook", execute)
    out = runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir, render=False, notebooks=2)
    assert [o.name for o in out] == ["00_setup", "10_mvp_pretrain", "11_imagenet_finetune", "20_cocoop_base2new",
                                     "99_report"]
    assert {o.status for o in out} == {"ran"}
    at = {e: i for i, e in enumerate(events)}
    assert at[("end", "00_setup")] < min(at[("start", n)] for n in ("10_mvp_pretrain", "20_cocoop_base2new"))
    assert at[("start", "20_cocoop_base2new")] < at[("end", "10_mvp_pretrain")]  # side by side
    assert at[("end", "10_mvp_pretrain")] < at[("start", "11_imagenet_finetune")]  # after its upstream
    assert at[("start", "99_report")] == len(events) - 2  # the report alone, last


def test_a_failure_beside_another_notebook_skips_what_is_left(toy, monkeypatch):
    nb_dir, p_dir = toy
    for name in ("10_mvp_pretrain", "11_imagenet_finetune", "20_cocoop_base2new"):
        _notebook(nb_dir / f"{name}.ipynb", 'profile = "smoke"', "pass")

    def execute(input_path, output_path, parameters, **kw):
        nbformat.write(nbformat.read(input_path, as_version=4), output_path)  # papermill writes as it goes
        if "20_cocoop" in input_path:
            raise runner.pm.PapermillExecutionError(2, 1, "x", "ValueError", "bad", [])

    monkeypatch.setattr(runner.pm, "execute_notebook", execute)
    with pytest.raises(runner.NotebookFailed, match="20_cocoop_base2new"):
        runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir, render=False, notebooks=2)
    states = {s.name: s.reason for s in runner.status("smoke", nb_dir=nb_dir, p_dir=p_dir)}
    assert states["10_mvp_pretrain"] is None  # it ran beside the failure: kept
    assert states["20_cocoop_base2new"] and states["99_report"]  # failed / skipped: they run next time


def test_notebooks_side_by_side_each_get_their_own_run_log_and_folder(toy, results_root):
    """Two kernels at once: each logs the job runs it used to its own file and runs in the notebooks' folder,
    and the runner's own working folder is left as it was."""
    nb_dir, p_dir = toy
    body = ("import os\nfrom vlpt_lib.jobs.launch import RUN_LOG_ENV\nfrom vlpt_lib.workbook import paths\n"
            "out = paths.results_dir(profile) / f'{name}.txt'\nout.parent.mkdir(parents=True, exist_ok=True)\n"
            "out.write_text(os.environ[RUN_LOG_ENV] + '\\n' + os.getcwd())")
    for name in ("10_mvp_pretrain", "20_cocoop_base2new"):
        _notebook(nb_dir / f"{name}.ipynb", f'profile = "smoke"\nname = "{name}"', body)
    cwd = os.getcwd()
    out = runner.reproduce("smoke", nb_dir=nb_dir, p_dir=p_dir, render=False, notebooks=2)
    assert {o.status for o in out} == {"ran"} and os.getcwd() == cwd
    for name in ("10_mvp_pretrain", "20_cocoop_base2new"):
        log, folder = (results_root / "smoke" / f"{name}.txt").read_text().splitlines()
        assert log.endswith(f"{name}.runs.jsonl") and folder == str(nb_dir)


def test_executed_notebooks_name_no_folder_of_the_machine_that_ran_them(tmp_path, results_root):
    """Outputs (streams, text/html, tracebacks) name the results root as $VLPT_RESULTS_ROOT, the repository as .,
    a data root outside the results as $VLPT_DATA_ROOT."""
    import nbformat

    from vlpt_lib.workbook import paths, runner

    data = tmp_path / "datasets"
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"saved {results_root}/smoke/tables/t.csv\n"),
                    nbformat.v4.new_output("display_data", data={"text/html": f"<td>{data}/imagenet</td>",
                                                                 "text/plain": f"{paths.REPO_ROOT}/notebooks"}),
                    nbformat.v4.new_output("error", ename="E", evalue="", traceback=[f"File {paths.REPO_ROOT}/x.py"])]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["papermill"] = {"input_path": f"{paths.REPO_ROOT}/notebooks/n.ipynb",
                                "output_path": f"{results_root}/smoke/notebooks/.partial/n.ipynb"}
    path = tmp_path / "executed.ipynb"
    nbformat.write(nb, path)
    runner._portable(path, str(data))
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert outputs[0]["text"] == "saved $VLPT_RESULTS_ROOT/smoke/tables/t.csv\n"
    assert outputs[1]["data"] == {"text/html": "<td>$VLPT_DATA_ROOT/imagenet</td>", "text/plain": "./notebooks"}
    assert outputs[2]["traceback"] == ["File ./x.py"]
    assert nbformat.read(path, as_version=4).metadata["papermill"] == {
        "input_path": "./notebooks/n.ipynb", "output_path": "$VLPT_RESULTS_ROOT/smoke/notebooks/.partial/n.ipynb"}
