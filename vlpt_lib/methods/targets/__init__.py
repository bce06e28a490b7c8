"""Masked-image-modelling targets as plug-ins: one module per target, found through this registry.

A target module registers a builder (the images -> per-patch targets map) with what the workbook needs to
know about it:

    from vlpt_lib.methods.targets import register

    @register("hog", label="HOG", color="tab:green", loss="mse")
    def build(patch, mean, std, clip_model=None, precision="auto"):
        return MyTarget(patch, mean, std)     # nn.Module: forward(images, grid) -> (B, N, D); .out_dim = D

- `build(patch, mean, std, clip_model, precision)`: `patch` the student's patch size in pixels, `mean`/`std`
  the student's input normalisation (images reach the target in [0, 1], as they reach the student),
  `clip_model` the loaded open_clip model when `needs_clip` (else None), `precision` the run's autocast
  setting. The module maps images (B, 3, H, W) to targets (B, N, D) on the student's patch grid (row-major,
  N = (H / patch) * (W / patch)), under no_grad, and says its width in `out_dim` (the student's head width).
- `loss`: "cosine" (mean of 1 - cosine) or "mse" (mean over the D target values of each masked patch, then
  over the masked patches), both `vlpt_lib.models.mvp.masked_loss`, or a callable `(pred, target) -> scalar`
  on the masked positions (M, D).
- `label`: the row of the downstream tables (notebooks 11 and 12) that starts from this target's student;
  `color`: its colour in plots (any matplotlib colour).
- `needs_clip`: the job loads the CLIP teacher for it, and its weights file joins the run's input fingerprint
  (`input_paths`).
- `claims`: comparisons the MVP tables check on our numbers, as (table, text, left, op, right) with row
  labels as sides (workbook.claims), e.g. ("imagenet_finetune", "...", "MVP", ">", "HOG").

Built-in targets are the modules of this package (pkgutil); a user's own module is named in $VLPT_PLUGINS
(a file path or module name; `vlpt_lib.methods.plugins`), so torchrun / SLURM ranks and papermill kernels
find it too. `get(name)` and `names()` import both on first use (plug-ins listed later are picked up on the
next call).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Union

import torch

from ...models.clip import _is_path  # a weights file, not an open_clip tag
from ...models.mvp import masked_loss
from ..plugins import load_plugins, source_outside_package

LOSSES = ("cosine", "mse")
Loss = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class Target:
    """One registered MIM target (see the module docstring for each field)."""
    name: str
    label: str
    color: str
    build: Callable[..., torch.nn.Module]
    loss: Loss = "mse"
    needs_clip: bool = False
    description: str = ""
    rank: int = 100
    claims: tuple = ()  # (table, text, left, op, right): findings on the MVP tables it asks to be checked
    module: str = field(default="", compare=False)

    @property
    def loss_name(self) -> str:
        """What the run records as its loss ("cosine", "mse", or the callable's name)."""
        return self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__", "custom")

    def masked_loss(self, pred: torch.Tensor, target: torch.Tensor, kind: str = "auto") -> torch.Tensor:
        """The loss on the masked positions (M, D); `kind` "cosine" / "mse" overrides the target's own."""
        if kind != "auto":
            return masked_loss(pred, target, kind)
        return masked_loss(pred, target, self.loss) if isinstance(self.loss, str) else self.loss(pred, target)

    def input_paths(self, clip_pretrained: str | None) -> list[str]:
        """Files the target reads beyond the images (the run cache's key and input fingerprint): the CLIP weights
        file when the target needs the teacher and the weights are a file (an open_clip tag is not), and the
        source file of a plug-in module outside vlpt_lib (whose code the package's code hash does not cover, so
        editing it re-runs its pre-training)."""
        paths = [clip_pretrained] if self.needs_clip and clip_pretrained and _is_path(clip_pretrained) else []
        return paths + source_outside_package(self.module)


_registry: dict[str, Target] = {}
_builtins_loaded = False


def register(name: str | Target, *, label: str | None = None, color: str = "tab:gray", loss: Loss = "mse",
             needs_clip: bool = False, description: str = "", rank: int = 100, claims: tuple = (),
             replace: bool = False):
    """Register a target: `register(Target(...))`, or as a decorator on the builder
    `@register("name", label=..., color=..., loss=..., needs_clip=...)`. A second target under a registered
    name is refused unless `replace=True` (the same module registering again, e.g. re-imported, replaces)."""
    if isinstance(name, Target):
        return _add(name, replace)
    if loss not in LOSSES and not callable(loss):
        raise ValueError(f"target {name!r}: loss must be one of {LOSSES} or a callable, got {loss!r}")

    def decorator(build: Callable[..., torch.nn.Module]):
        _add(Target(name=name, label=label or name, color=color, build=build, loss=loss, needs_clip=needs_clip,
                    description=description or (build.__doc__ or "").strip().split("\n")[0], rank=rank,
                    claims=tuple(claims), module=getattr(build, "__module__", "")), replace)
        return build
    return decorator


def _add(target: Target, replace: bool) -> Target:
    old = _registry.get(target.name)
    if old is not None and not replace and old.module != target.module:
        raise ValueError(f"MIM target {target.name!r} is already registered (by {old.module or 'an earlier call'})")
    labels = {t.label: n for n, t in _registry.items() if n != target.name}
    if target.label in labels or target.label == SCRATCH:
        raise ValueError(f"MIM target {target.name!r}: table label {target.label!r} is taken "
                         f"({labels.get(target.label, 'the no-pre-training row')})")
    _registry[target.name] = target
    return target


def unregister(name: str) -> None:
    """Remove a target (tests that register a toy one clean up with this)."""
    _registry.pop(name, None)


def _discover() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _builtins_loaded = True
    load_plugins()


def names() -> tuple[str, ...]:
    """Every registered target name, by `rank` (clip 0, pixel 10, hog 20, plug-ins 100 unless they say), then
    in registration order."""
    _discover()
    order = {n: i for i, n in enumerate(_registry)}
    return tuple(sorted(_registry, key=lambda n: (_registry[n].rank, order[n])))


def get(name: str) -> Target:
    """The registered target `name`; a ValueError lists the registered names otherwise."""
    _discover()
    if name not in _registry:
        raise ValueError(f"unknown MIM target {name!r}; registered: {', '.join(names())} (a plug-in module "
                         f"registers more: vlpt_lib.methods.targets.register, listed in $VLPT_PLUGINS)")
    return _registry[name]


def all_targets() -> tuple[Target, ...]:
    """Every registered target, in `names()` order."""
    return tuple(get(n) for n in names())


# ----- what the tables and plots of the MVP notebooks need ------------------------------------------------
SCRATCH = "Scratch"            # the table row without pre-training (random init)
SCRATCH_COLOR = "tab:gray"


def table_methods(targets=None) -> tuple[str, ...]:
    """The row labels of the MVP tables (notebooks 11 and 12): the label of each of `targets` (None: every
    registered target, in `names()` order), then "Scratch"."""
    return tuple(get(t).label for t in (names() if targets is None else targets)) + (SCRATCH,)


def method_targets() -> dict[str, str | None]:
    """Row label -> the target its student was pre-trained with (None: Scratch), for every registered target."""
    return {**{t.label: t.name for t in all_targets()}, SCRATCH: None}


def colors() -> dict[str, str]:
    """A plot colour per row label: each registered target's `color`, and Scratch's grey."""
    return {**{t.label: t.color for t in all_targets()}, SCRATCH: SCRATCH_COLOR}
