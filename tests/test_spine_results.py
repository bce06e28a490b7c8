import pytest

from vlpt_lib.utils.io import atomic_write
from vlpt_lib.workbook import paths, report
from vlpt_lib.workbook import tables as results


def test_save_table_is_tidy_and_atomic(results_root):
    rows = [{"method": "CoOp", "dataset": "EuroSAT", "split": "base", "seed": s, "metric": "acc", "value": 80.0 + s,
             "run_id": "prompt-abc"} for s in (1, 2, 3)]
    path = results.save_table("cocoop_base2new", rows, "mini")
    assert path == results_root / "mini" / "tables" / "cocoop_base2new.csv"
    assert not list(path.parent.glob("*.tmp")), "no temp file left behind"
    df = results.load_table("cocoop_base2new", "mini")
    assert list(df.columns) == results.COLUMNS
    assert set(df["profile"]) == {"mini"} and set(df["table"]) == {"cocoop_base2new"}
    summary = results.ours_summary("cocoop_base2new", "mini")
    assert summary.loc[0, "ours"] == pytest.approx(82.0) and summary.loc[0, "seeds"] == 3


def test_rows_without_value_are_refused(results_root):
    with pytest.raises(ValueError):
        results.save_table("x", [{"method": "CLIP", "metric": "acc"}], "smoke")


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "t.txt"
    atomic_write(target, "old")

    with pytest.raises(TypeError):
        atomic_write(target, 123)  # not str/bytes: fails mid-write
    assert target.read_text() == "old"
    assert not list(tmp_path.glob(".t.txt.*"))


def test_a_full_disk_names_the_file_and_the_fix(tmp_path, monkeypatch, capsys):
    import errno
    import os

    import vlpt_lib.__main__ as cli
    from vlpt_lib.utils import io

    class FullDisk:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "last.pt"
    with monkeypatch.context() as m:
        m.setattr(io.os, "fdopen", FullDisk)
        with pytest.raises(OSError) as err:
            atomic_write(target, b"x")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert not list(tmp_path.iterdir())  # no temp file left

    def reproduce(*args, **kwargs):
        raise err.value

    monkeypatch.setattr(cli, "reproduce", reproduce)
    assert cli.main(["reproduce", "--profile", "smoke"]) == 1
    line = capsys.readouterr().err.strip()
    assert line == f"FAILED: No space left on device ({target}): free space on that disk, or set VLPT_RESULTS_ROOT " \
                   "to a folder on another one"


@pytest.mark.parametrize("env, says", [("VLPT_RESULTS_ROOT", "is a file: point it at a folder"),
                                       ("VLPT_RECOMPUTE_BEFORE", "expected epoch seconds")])
def test_a_wrong_environment_variable_is_one_line(tmp_path, monkeypatch, capsys, env, says):
    from vlpt_lib.__main__ import main
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv(env, str(tmp_path / "a_file") if env == "VLPT_RESULTS_ROOT" else "yesterday")
    assert main(["reproduce", "--profile", "smoke", "--status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vlpt: ${env}=" if env == "VLPT_RECOMPUTE_BEFORE" else f"vlpt: {env}=")
    assert says in err and "\n" not in err


@pytest.mark.parametrize("table", results.PAPER_TABLES)
def test_reference_tables_are_complete(table):
    ref = results.load_reference(table)
    assert list(ref.columns) == results.REFERENCE_COLUMNS
    assert ref["value"].map(float).notna().all() and ref["source"].str.len().gt(10).all()
    assert set(ref["table"]) == {table}
    assert set(ref["metric"]) <= {"acc", "miou", "H"}


def test_reference_base2new_average_follows_the_papers_rule():
    ref = results.load_reference("cocoop_base2new").set_index(["method", "dataset", "split"])["value"]
    for method in ("CLIP", "CoOp", "CoCoOp"):
        b, n, h = (ref[(method, "Average", s)] for s in ("base", "new", "base2new"))
        assert 2 * b * n / (b + n) == pytest.approx(h, abs=0.02)  # 2 printed decimals of b, n and h


def test_compare_shows_paper_rows_before_any_run(results_root):
    df = results.compare("imagenet_finetune", "mini")
    assert df["ours"].isna().all() and (df["method"] == "MVP").any()
    index = report.render_report("mini")
    text = index.read_text()
    assert "MINI profile" in text and "84.40" in text and "Not run yet" in text
    # Table 1 before any run: H of ours is unmeasured (NaN, drawn as a dash), never 0 with a Δ of -70
    frame = results.paper_table("cocoop_base2new", "paper").frame
    h_ours = frame[[c for c in frame.columns if c[-2:] == ("H", "ours")]]
    assert h_ours.size and h_ours.isna().all().all()


def test_results_root_override(results_root):
    assert paths.results_dir("smoke") == results_root / "smoke"
    with pytest.raises(ValueError):
        paths.results_dir("huge")


def test_atomic_write_honours_the_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "shared.csv", "a,b\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others sharing the results, not mkstemp's 0600


def test_one_table_registry_serves_runner_and_report():
    from vlpt_lib.workbook import runner
    for name, table in results.TABLES.items():
        assert (paths.REPO_ROOT / "notebooks" / f"{table.notebook}.ipynb").exists(), name
        assert runner.resolve([name], runner.available())[-2] == table.notebook


def test_seed_column_is_written_as_integers(results_root):
    rows = [{"method": "CoOp", "dataset": "EuroSAT", "split": s, "seed": 1, "metric": "acc", "value": 80.0}
            for s in ("base", "new")]
    text = results.save_table("cocoop_base2new", rows, "mini").read_text().splitlines()
    assert text[1].split(",")[4] == "1" and text[2].split(",")[4] == "1"
