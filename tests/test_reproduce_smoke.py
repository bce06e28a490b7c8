"""The whole workbook on the smoke profile, exactly as `python -m vlpt_lib reproduce --profile smoke`.

It writes to results/smoke/ (which `make test` clears first), so the notebook tests that nbval runs
afterwards on the same smoke defaults reuse its cached runs instead of training twice.
"""
import os
import subprocess
import sys

import pandas as pd

from vlpt_lib.workbook import runner
from vlpt_lib.workbook.paths import REPO_ROOT
from vlpt_lib.workbook.tables import TABLES


def test_reproduce_smoke_profile_end_to_end():
    env = {k: v for k, v in os.environ.items() if k != "VLPT_RESULTS_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "vlpt_lib", "reproduce", "--profile", "smoke"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    smoke = REPO_ROOT / "results" / "smoke"
    notebooks = runner.available()
    for name in notebooks:
        assert (smoke / "notebooks" / f"{name}.ipynb").exists(), name
        assert (smoke / "report" / f"{name}.html").exists(), name
    index = (smoke / "report" / "index.html").read_text()
    assert all(f'href="{name}.html"' in index or f"href='{name}.html'" in index for name in notebooks)
    # every table whose notebook exists was written, with tidy columns and real numbers
    for table, spec in TABLES.items():
        if spec.notebook in notebooks:
            df = pd.read_csv(smoke / "tables" / f"{table}.csv")
            assert len(df) and df["value"].notna().all() and set(df["profile"]) == {"smoke"}, table
