"""The whole workbook on the smoke profile, exactly as `python -m vlpt_lib reproduce --profile smoke`.

This is the suite's one execution of the notebooks (results/smoke/, which `make test` clears first). It checks
what the runner vouches for (an executed copy, a report page and the tables of each notebook) and what nbval
would check running each notebook by itself: every code cell ran, top to bottom, without an error output, on
the notebook's own defaults (the smoke params add nothing to them), so "Run All" in Lab runs the same.
`pytest --nbval-lax --nbval-current-env notebooks/` still runs them the nbval way, a second time.
"""
import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from vlpt_lib.workbook import runner
from vlpt_lib.workbook.params import notebook_defaults
from vlpt_lib.workbook.paths import REPO_ROOT
from vlpt_lib.workbook.tables import TABLES


SMOKE = REPO_ROOT / "results" / "smoke"


@pytest.fixture(scope="module")
def executed_smoke() -> dict[str, nbformat.NotebookNode]:
    """Run the smoke profile once; its executed notebooks by name."""
    env = {k: v for k, v in os.environ.items() if k != "VLPT_RESULTS_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "vlpt_lib", "reproduce", "--profile", "smoke"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {name: nbformat.read(SMOKE / "notebooks" / f"{name}.ipynb", as_version=4) for name in runner.available()}


def test_reproduce_smoke_profile_end_to_end(executed_smoke):
    notebooks = runner.available()
    assert sorted(executed_smoke) == sorted(notebooks)
    assert all((SMOKE / "report" / f"{name}.html").exists() for name in notebooks)
    index = (SMOKE / "report" / "index.html").read_text()
    assert all(f'href="{name}.html"' in index or f"href='{name}.html'" in index for name in notebooks)
    # every table whose notebook exists was written, with tidy columns and real numbers
    for table, spec in TABLES.items():
        if spec.notebook in notebooks:
            df = pd.read_csv(SMOKE / "tables" / f"{table}.csv")
            assert len(df) and df["value"].notna().all() and set(df["profile"]) == {"smoke"}, table


def test_each_notebook_ran_top_to_bottom_on_its_own_defaults(executed_smoke):
    for name, nb in executed_smoke.items():
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{name}: not every cell ran"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
        defaults = notebook_defaults(runner.notebooks_dir() / f"{name}.ipynb")
        injected = nb.metadata.papermill.parameters
        assert {k: v for k, v in injected.items() if defaults.get(k, ...) != v} == {}, name
