"""Where things live: the repository, each profile's results, the generated mini world."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("smoke", "mini", "paper")


def results_root() -> Path:
    """Top of all results; VLPT_RESULTS_ROOT moves it (tests point it at a temp dir)."""
    return Path(os.environ.get("VLPT_RESULTS_ROOT", REPO_ROOT / "results"))


def results_dir(profile: str) -> Path:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    return results_root() / profile


def world_dir(profile: str) -> Path:
    """The procedurally generated world of the smoke and mini profiles (not committed)."""
    return results_dir(profile) / "world"


def reference_dir() -> Path:
    """The papers' numbers; always read from the repository, never from a moved results root."""
    return REPO_ROOT / "results" / "reference"


def dry_run_dir() -> Path:
    """The paper profile's dry run: its synthetic world, and its results in <this>/paper/ (never results/paper)."""
    return results_root() / "dry-run"


def bench_dir() -> Path:
    return results_root() / "bench"


def paper_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The user's own dataset root for the paper profile: the `data_root` parameter or $VLPT_DATA_ROOT."""
    root = data_root or os.environ.get("VLPT_DATA_ROOT")
    if not root:
        raise FileNotFoundError(
            "The paper profile needs the real datasets. Set the notebook parameter `data_root` "
            "(params/paper/*.yaml) or the environment variable VLPT_DATA_ROOT to the folder that holds "
            "imagenet/, caltech-101/, ADEChallengeData2016/, ... (see notebooks/00_setup.ipynb)."
        )
    return Path(root).expanduser()


def shown(path: str | os.PathLike) -> str:
    """A path as a page shows it: relative to the repository or to $VLPT_RESULTS_ROOT when it lies in one (an
    executed notebook or a report names no folder of the machine that made it); other paths (a user's data
    root) as they are."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    for base, name in ((results_root().resolve(), "$VLPT_RESULTS_ROOT" if "VLPT_RESULTS_ROOT" in os.environ
                        else "results"), (REPO_ROOT, ".")):
        if path.resolve().is_relative_to(base):
            return str(Path(name) / path.resolve().relative_to(base))
    return str(path)


def runs_dir(profile: str) -> Path:
    """The job runs of a profile, one folder per job and resolved config (vlpt_lib.jobs.launch)."""
    return results_dir(profile) / "runs"


def executed_dir(profile: str) -> Path:
    """Executed notebooks (and their .run.json records) of a profile."""
    return results_dir(profile) / "notebooks"
