"""The prompt methods: one module each, found through this registry.

    from vlpt_lib.methods import prompt as methods
    cls = methods.get("CoOp")                            # the method class (a PromptCLIP)
    cfg = methods.validate({"method": "CoOp", "data_root": "/data", "epochs": 5})   # its Recipe, resolved
    model = methods.build(cfg, clip_model, tokenizer)    # ready on CLIP, classes set later

Every module of this package registers its method on import (`@register`); a user's method is one file
named in $VLPT_PLUGINS (paths or module names, os.pathsep-separated), imported here and in every job
process, so the prompt job, the notebooks, the tables and the figures find it without another change.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..plugins import load_plugins, source_outside_package
from .base import DasslRecipe, PromptMethod, PromptRun

_REGISTRY: dict[str, type[PromptMethod]] = {}


def register(cls: type[PromptMethod]) -> type[PromptMethod]:
    """Class decorator: make a method known under `cls.name` (its Recipe must fix `method` to that name)."""
    field = cls.Recipe.model_fields.get("method")
    if field is None or getattr(field.annotation, "__args__", None) != (cls.name,):
        raise TypeError(f"{cls.__name__}.Recipe must declare method: Literal[{cls.name!r}]")
    if cls.name in _REGISTRY and _REGISTRY[cls.name].__qualname__ != cls.__qualname__:
        raise ValueError(f"two prompt methods named {cls.name!r}: {_REGISTRY[cls.name]} and {cls}")
    _REGISTRY[cls.name] = cls
    return cls


_BUILT_IN_LOADED = False


def _discover() -> None:
    """Import the package's method modules (once) and the plug-ins named in $VLPT_PLUGINS (each file once)."""
    global _BUILT_IN_LOADED
    if not _BUILT_IN_LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        _BUILT_IN_LOADED = True
    load_plugins()


def names() -> tuple[str, ...]:
    """Registered methods: the built-in ones in the order they were published, then plug-ins."""
    _discover()
    return tuple(sorted(_REGISTRY, key=lambda n: _REGISTRY[n].order))


def get(name: str) -> type[PromptMethod]:
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown prompt method {name!r}; registered: {', '.join(names())} "
                         "(a method of your own: one file named in $VLPT_PLUGINS, see README 'Add your own method')")
    return _REGISTRY[name]


def validate(cfg) -> PromptRun:
    """A prompt job cfg (a dict, or a resolved Recipe) -> its method's Recipe, validated and with defaults: the
    union of the registered Recipes, discriminated by `method` (an error names the offending key as it is)."""
    if isinstance(cfg, PromptRun):
        cfg = cfg.model_dump()
    method = cfg.get("method") if isinstance(cfg, dict) else None
    if method is None:
        raise ValueError("a prompt job cfg needs `method` (one of: " + ", ".join(names()) + ")")
    return get(method).Recipe.model_validate(cfg)


def input_paths(name: str) -> list[str]:
    """The source file of a plug-in method outside vlpt_lib (the run cache's code hash covers the package
    only, so a run of a user's method is keyed by its file too: editing it re-runs its runs)."""
    return source_outside_package(get(name).__module__)


def build(cfg: PromptRun, clip_model, tokenizer, text_chunk: int = 2048) -> PromptMethod:
    """The method of a resolved cfg on a frozen CLIP."""
    cls = get(cfg.method)
    return cls(clip_model, tokenizer, text_chunk=text_chunk, **cls.model_kwargs(cfg))


__all__ = ["DasslRecipe", "PromptMethod", "PromptRun", "build", "get", "input_paths", "names", "register",
           "validate"]
