"""The one place that turns a profile into what jobs need: a data root and CLIP weights.

    world = profiles.resolve("mini")          # names the data root and the CLIP: nothing is generated or read
    world.data_root, world.clip               # Path (None: paper without a root yet), {"model_name", ...}
    profiles.prepare(world)                   # generates the mini world and trains its CLIP once (cached)

Jobs receive these explicit paths and never know which profile they serve:
- smoke / mini: a procedurally generated world (vlpt_lib.worlds.mini_world) under
  results/<profile>/world, and a small CLIP trained on its captions by the `clip_train` job;
- paper: the user's datasets (`data_root` or $VLPT_DATA_ROOT) and OpenAI's CLIP ViT-B/16 (an open_clip
  tag already in the local cache, or a local weights file), always with QuickGELU as OpenAI's CLIP is
  built (quick_gelu=True unless the caller says otherwise, or names a tag trained without it);
- the paper profile's dry run (`reproduce --profile paper --dry-run`): the same paper notebooks and jobs
  on a synthetic data root shaped exactly like the real one (vlpt_lib.worlds.paper_world) and ViT-B/16
  with random weights (`clip_pretrained: random`), handed over as the paper profile's own parameters.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.check import data_requirements as check
from ..worlds.mini_world import config_hash, ensure_world, world_config
from ..worlds.paper_world import ensure_paper_world
from ..jobs.launch import CODE_CHANGE_ENV, run_dir_for, run_job
from ..models.clip import RANDOM_WEIGHTS, _is_path, tag_quick_gelu
from . import paths

PAPER_CLIP = ("ViT-B-16", "openai")

# The mini CLIP's recipe per generated world (the `clip_train` job's cfg on top of its defaults).
MINI_CLIP = {
    "smoke": {"epochs": 2, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.1, "warmup_steps": 3},
    # mini: 4 x 93 steps of batch 128: 64 s per epoch on 2 pinned Intel cores, 103 s on 2 AMD EPYC cores
    # (5 epochs: 516 s there), so that every table fits make reproduce's 30 min. Longer helps (7 epochs:
    # ImageNet 48 -> 55 %, DTD 46 -> 63 %; 12 epochs: ImageNet 65 %) but does not fit.
    "mini": {"epochs": 4, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 100},
}


# Notebooks `reproduce` runs side by side (each once its upstream has run). mini: the MVP tables (10-12) and the
# CoCoOp tables (20-22) are independent after the mini CLIP; side by side they fill the core a notebook leaves
# idle (an odd job out, plotting, process start-up), on a CPU where every job runs at one thread.
NOTEBOOKS_AT_ONCE = {"smoke": 1, "mini": 2, "paper": 1}


def notebooks_at_once(profile: str) -> int:
    return NOTEBOOKS_AT_ONCE.get(profile, 1)


# Notebooks a profile does not run: the paper profile has no generated world (its data are the user's).
NOTEBOOKS_SKIPPED = {"paper": ("01_mini_world",)}


def notebooks_skipped(profile: str | None) -> tuple[str, ...]:
    return NOTEBOOKS_SKIPPED.get(profile, ())


def code_change_policy(profile: str) -> str:
    """What a job run made by other code gets (jobs.launch, $VLPT_CODE_CHANGE): recomputed on the generated
    worlds (minutes); on the paper profile never discarded unasked (a GPU-day): the run stops and says so."""
    return "stop" if profile == "paper" else "recompute"


@dataclass
class Resolved:
    profile: str
    data_root: Path | None  # None: the paper profile before `data_root` / $VLPT_DATA_ROOT is set
    clip: dict = field(default_factory=dict)  # {"model_name", "pretrained", "quick_gelu"}; {} when not needed


def mini_clip_name(profile: str) -> str:
    return f"vlpt-{profile}-clip"


def mini_clip_cfg(profile: str) -> dict:
    """The clip_train job's cfg for a generated world (its hash keys the cached run)."""
    if profile not in MINI_CLIP:
        raise ValueError(f"the mini CLIP is trained for profiles {tuple(MINI_CLIP)}, not {profile!r}")
    # The world's config hash is part of the key: a regenerated world retrains its CLIP.
    return {"model_name": mini_clip_name(profile), "world_root": str(paths.world_dir(profile)),
            "world_hash": config_hash(world_config(profile)), "seed": 0, **MINI_CLIP[profile]}


def mini_clip_weights(profile: str) -> Path:
    """Where the trained mini CLIP of `profile` lives (whether or not it was trained yet)."""
    return run_dir_for("clip_train", mini_clip_cfg(profile), paths.runs_dir(profile)) / "mini_clip.pt"


def ensure_world_of(profile: str, force: bool = False) -> Path:
    return ensure_world(paths.world_dir(profile), world_config(profile), force=force)


def ensure_mini_clip(profile: str) -> dict:
    """Train (once, cached by config) the small CLIP of a generated world; return the job's result."""
    ensure_world_of(profile)
    return run_job("clip_train", mini_clip_cfg(profile), paths.runs_dir(profile))


def clip_of(profile: str, clip_model: str | None = None, clip_pretrained: str | None = None,
            clip_quick_gelu: bool | None = None) -> dict:
    """The CLIP a profile's jobs load, {"model_name", "pretrained", "quick_gelu"}, without preparing anything.

    paper: OpenAI's ViT-B/16, always with QuickGELU as OpenAI's CLIP is built: quick_gelu=True unless the
    caller says otherwise (a local file is taken to hold OpenAI's weights; a tag follows its open_clip
    pretrained cfg, True for "openai"). smoke/mini: the mini CLIP's weights (trained by ensure_mini_clip)."""
    if profile == "paper":
        name, pretrained = clip_model or PAPER_CLIP[0], clip_pretrained or PAPER_CLIP[1]
        if clip_quick_gelu is None:  # a local file or random weights: built as OpenAI's CLIP is
            clip_quick_gelu = (True if _is_path(str(pretrained)) or pretrained == RANDOM_WEIGHTS
                               else tag_quick_gelu(name, pretrained))
    else:
        name = clip_model or mini_clip_name(profile)
        pretrained = clip_pretrained or str(mini_clip_weights(profile))
    return {"model_name": name, "pretrained": str(pretrained), "quick_gelu": clip_quick_gelu}


def resolve(profile: str, data_root=None, clip_model: str | None = None, clip_pretrained: str | None = None,
            clip_quick_gelu: bool | None = None, need_clip: bool = True) -> Resolved:
    """Data root (absolute) and CLIP of a profile; explicit values (a notebook's parameters) win over the
    profile's. Pure: it names paths, generates and reads nothing (the recipe card, `reproduce --status` and the
    run all see the same values); `prepare` makes them exist."""
    if profile == "paper":
        root = data_root or os.environ.get("VLPT_DATA_ROOT") or None
    else:
        root = data_root or paths.world_dir(profile)
    root = Path(os.path.abspath(Path(root).expanduser())) if root else None
    clip = clip_of(profile, clip_model, clip_pretrained, clip_quick_gelu) if need_clip else {}
    return Resolved(profile, root, clip)


def prepare(world: Resolved) -> Resolved:
    """Make a resolved profile ready for its jobs: smoke/mini generate their world and train their mini CLIP
    (once, cached); paper needs its data root set (FileNotFoundError saying how). This process's jobs then follow
    the profile's rule for runs made by other code (code_change_policy; `reproduce` sets it for its kernels)."""
    os.environ.setdefault(CODE_CHANGE_ENV, code_change_policy(world.profile))
    if world.profile == "paper":
        paths.paper_data_root(world.data_root)  # raises naming data_root / $VLPT_DATA_ROOT when neither is set
        return world
    if world.data_root == Path(os.path.abspath(paths.world_dir(world.profile))):
        ensure_world_of(world.profile)
    if world.clip and world.clip["pretrained"] == str(mini_clip_weights(world.profile)):
        ensure_mini_clip(world.profile)
    return world


def ensure_dry_run_world(force: bool = False) -> Path:
    """The paper-shaped synthetic data root of the dry run (generated once, under results/dry-run/world)."""
    return ensure_paper_world(paths.dry_run_dir() / "world", force=force)


def dry_run_params(force_world: bool = False) -> dict:
    """What the dry run gives every paper notebook on top of its parameters: the synthetic data root and
    random CLIP weights (the paper's architecture, ViT-B-16 with QuickGELU)."""
    return {"data_root": str(ensure_dry_run_world(force_world)), "clip_pretrained": RANDOM_WEIGHTS}


def data_requirements(profile: str, data_root=None, allow_folder_split: bool = False, needs=None) -> list[dict]:
    """What the profile's tables read, where, and whether it is there (notebook 00_setup shows it).
    allow_folder_split: as the prompt job's flag (a class-folder dataset may lack its split file).
    needs: the datasets the selected notebooks read (the runner's `data_needs`); only their rows are required
    (None: every table's)."""
    if profile == "paper":
        return check(data_root or os.environ.get("VLPT_DATA_ROOT"), allow_folder_split=allow_folder_split,
                     needs=needs)
    return check(Path(data_root) if data_root else paths.world_dir(profile), config_hash(world_config(profile)),
                 allow_folder_split=allow_folder_split, needs=needs)
