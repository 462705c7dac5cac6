"""The explanation methods by name: one `Method` entry per method carries every fact about it (label,
display order, signed or not, whether it needs attention, its settings and their defaults), and viz,
the report, the demo, the CLI and `check_methods` read them from here. A method is one module that
defines its settings dataclass and its function and registers both with `@register_method`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from captionlens.models.protocol import Captioner


@dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """A method's options: a frozen dataclass whose `__post_init__` checks each value. `for_input`
    fills defaults that depend on the model's input size and checks options against it."""

    def for_input(self, input_size: int) -> MethodSettings:
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Method:
    name: str
    label: str                    # how figures and the report name it
    order: int                    # display order (figures' columns, the report's buttons)
    signed: bool                  # maps carry a sign (raise vs lower the word's score)
    needs_attention: bool
    summary: str                  # one line: what it explains and what it costs
    settings: type[MethodSettings]
    run: Callable[..., Any]       # run(ctx, settings) -> MethodMaps, or run(contexts, settings) -> list when batched
    batched: bool = False         # run takes every image's context at once (one pass across images)

    def explain(self, contexts: Sequence[Any], settings: MethodSettings) -> list[Any]:
        """The method's maps for each context (ExplainContext), in one call when it is batched."""
        if self.batched:
            return list(self.run(contexts, settings))
        return [self.run(ctx, settings) for ctx in contexts]


METHODS: dict[str, Method] = {}
Run = TypeVar("Run", bound=Callable[..., Any])


def register_method(name: str, *, label: str, order: int, signed: bool, summary: str,
                    settings: type[MethodSettings], needs_attention: bool = False,
                    batched: bool = False) -> Callable[[Run], Run]:
    """Decorator: make `run(ctx, settings) -> MethodMaps` available as `methods=(name, ...)`; with
    `batched`, `run(contexts, settings) -> [MethodMaps]` explains every image of a batch in one call."""
    def wrap(run: Run) -> Run:
        METHODS[name] = Method(name, label, order, signed, needs_attention, summary, settings, run, batched)
        return run
    return wrap


def ordered_methods(names: Iterable[str]) -> list[str]:
    """Method names in display order; names no method has follow, alphabetically."""
    names = list(dict.fromkeys(names))
    known = sorted((n for n in names if n in METHODS), key=lambda n: METHODS[n].order)
    return known + sorted(n for n in names if n not in METHODS)


def method_label(name: str) -> str:
    """How figures and the report name a method (its registered label, else the name itself)."""
    return METHODS[name].label if name in METHODS else name


def is_signed(name: str, maps: Any = None) -> bool:
    """Whether a method's maps carry a sign: its registered fact, or (a name no method has, from a
    saved file) whether `maps` has negative values."""
    if name in METHODS:
        return METHODS[name].signed
    return maps is not None and bool(np.any(np.asarray(maps) < 0))


def check_methods(model: Captioner, names: Sequence[str]) -> None:
    """One ValueError for a method name that does not exist or that `model` cannot run."""
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(ordered_methods(METHODS))}")
    for name in names:
        if METHODS[name].needs_attention and not model.has_attention:
            raise ValueError(f"'{name}' needs a model with attention; {type(model).__name__} has none")


def method_settings(name: str, options: Mapping[str, Any] | None, input_size: int) -> MethodSettings:
    """Method `name`'s settings from `options`, checked by name and by value (one ValueError naming the
    method and the option) and completed for a model input of `input_size` pixels."""
    method = METHODS[name]
    allowed = [f.name for f in dataclasses.fields(method.settings)]
    unknown = sorted(set(options or {}) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown setting(s) {', '.join(unknown)}; {name} takes {', '.join(allowed)}")
    try:
        return method.settings(**(options or {})).for_input(input_size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def resolve_settings(model: Captioner, methods: Sequence[str],
                     settings: Mapping[str, Mapping[str, Any]] | None) -> dict[str, MethodSettings]:
    """Every requested method's checked settings, before any image is touched: unknown methods or
    methods the model cannot run, settings under a name no method has, bad names or values all raise.
    (Settings of a method not requested now are ignored, so that one settings dict can serve many calls.)"""
    check_methods(model, methods)
    unknown = sorted(set(settings or {}) - set(METHODS))
    if unknown:
        raise ValueError(f"settings given for {', '.join(unknown)}, which is not a method; methods are "
                         f"{', '.join(ordered_methods(METHODS))}")
    size = model.preprocessing.image_size
    return {name: method_settings(name, (settings or {}).get(name), size) for name in methods}


def require(condition: bool, message: str) -> None:
    """Settings checks: raise ValueError(message) unless `condition`."""
    if not condition:
        raise ValueError(message)
