"""One entry point from (model name, pretrained tag or file) to a ready CLIP, through open_clip.

    bundle = load_clip("ViT-B-16", "openai", device)           # OpenAI's weights (a tag or a local file)
    bundle = load_clip("vlpt-mini-clip", "/runs/.../mini_clip.pt")  # the small CLIP of the mini world
    bundle = load_clip("ViT-B-16", "random", quick_gelu=True)  # the architecture, seeded random weights (dry run)

Both go through the same `open_clip.create_model_and_transforms` call, so the mini run exercises the
real loading path. OpenAI's CLIP uses QuickGELU: a tag whose open_clip pretrained cfg says quick_gelu
(e.g. "openai") always builds it, downloaded or cached; a local OpenAI file needs quick_gelu=True (the
paper profile passes it, `vlpt_lib.workbook.profiles.resolve`). Models never train: the mini CLIP is trained by the job `vlpt_lib.jobs.clip_train`;
which CLIP a profile uses is the workbook's business (`vlpt_lib.workbook.profiles`).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from huggingface_hub import hf_hub_download

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)  # registers vlpt-smoke-clip and vlpt-mini-clip


# `pretrained: random`: the architecture with seeded random weights, for the paper profile's dry run
# (`reproduce --profile paper --dry-run`), where OpenAI's weights are not needed to test every code path.
RANDOM_WEIGHTS = "random"
RANDOM_SEED = 0


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def random_init_expected():
    """open_clip warns "No pretrained weights loaded ... Model initialized randomly" for every model built without
    weights; where random weights are the intent (a CLIP about to be trained, the dry run's random CLIP) the
    warning only alarms."""
    quiet = _NoRandomInitWarning()
    root = logging.getLogger()  # open_clip logs through the root logger
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


class WeightsNotFoundError(FileNotFoundError):
    pass


@dataclass
class ClipBundle:
    model: torch.nn.Module
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable
    name: str
    pretrained: str | None


def _is_path(pretrained: str) -> bool:
    return any(ch in pretrained for ch in "/\\") or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def cached_weights(model_name: str, tag: str) -> Path | None:
    """The local file of an open_clip tag when it is already in the Hugging Face cache (no network)."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    repo = cfg.get("hf_hub", "").strip("/")
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if not repo:
            break
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=True))
        except Exception:
            continue
    return None


def tag_quick_gelu(model_name: str, tag: str | None) -> bool:
    """Whether the weights of an open_clip tag were trained with QuickGELU (OpenAI's are)."""
    if not tag or tag == RANDOM_WEIGHTS or _is_path(str(tag)):
        return False
    return bool((open_clip.get_pretrained_cfg(model_name, tag) or {}).get("quick_gelu", False))


def load_clip(model_name: str, pretrained: str | None, device: str | torch.device = "cpu",
              quick_gelu: bool | None = None) -> ClipBundle:
    """Build `model_name` with weights from an open_clip tag or a local file; eval mode, fp32.

    A tag already in the local cache loads without touching the network. QuickGELU (force_quick_gelu):
    quick_gelu=True, or quick_gelu=None and a tag whose weights were trained with it (OpenAI's), on
    every path: cached or downloaded (open_clip alone builds GELU for ViT-B-16 + "openai" and only
    warns). For a local OpenAI file pass quick_gelu=True (or use ViT-B-16-quickgelu).
    """
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown CLIP model {model_name!r}; open_clip knows e.g. ViT-B-16, ViT-B-32, vlpt-mini-clip")
    if pretrained and _is_path(str(pretrained)) and not Path(pretrained).expanduser().exists():
        raise WeightsNotFoundError(
            f"CLIP weights file not found: {pretrained}\n"
            f"Put the {model_name} checkpoint there, or set clip_pretrained to an open_clip tag "
            f"(one of {open_clip.list_pretrained_tags_by_model(model_name) or 'none for this model'})."
        )
    source = pretrained
    if quick_gelu is None:
        quick_gelu = tag_quick_gelu(model_name, pretrained)
    if pretrained and _is_path(str(pretrained)):
        source = str(Path(pretrained).expanduser())
    elif pretrained and (local := cached_weights(model_name, pretrained)) is not None:
        source = str(local)
    extra = {"force_quick_gelu": True} if quick_gelu else {}
    if pretrained == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]), random_init_expected():  # the same weights in every process and run
            torch.manual_seed(RANDOM_SEED)
            model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                model_name, pretrained=None, device="cpu", **extra)
        model.to(device).eval()
        return ClipBundle(model, preprocess_train, preprocess_val, open_clip.get_tokenizer(model_name),
                          model_name, RANDOM_WEIGHTS)
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            model_name, pretrained=source, device=device, **extra)
    except Exception as err:  # open_clip raises several kinds when a download is impossible
        if pretrained and not _is_path(str(pretrained)):
            raise WeightsNotFoundError(
                f"could not get CLIP weights {model_name}/{pretrained} ({type(err).__name__}: {err}).\n"
                "On a machine without internet, download them elsewhere and set clip_pretrained to the local "
                f"file, e.g. clip_pretrained: /data/weights/{model_name}-{pretrained}.pt (the OpenAI ViT-B/16 "
                "file open_clip caches as open_clip_pytorch_model.bin also works), or pre-fill the Hugging Face "
                "cache (HF_HOME) on a machine that has internet."
            ) from err
        raise
    model.eval()
    return ClipBundle(model, preprocess_train, preprocess_val, open_clip.get_tokenizer(model_name),
                      model_name, str(pretrained) if pretrained else None)
