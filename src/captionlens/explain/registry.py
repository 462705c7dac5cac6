"""The explanation methods by name: one `Method` entry per method is the only home of every fact about it
(label, display order, signed or not, whether it needs attention, its settings and their defaults, the
cheaper settings for runs over many images, its per-word statistics, its command-line options and its
function); figures, the report, the demo, the evaluation, the CLI and `check_methods` read them from here.
A method is one module that defines its settings dataclass and its function and registers both with
`@register_method`; registering a name twice is an error naming both places.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from captionlens.models.protocol import Captioner
from captionlens.registries import Registry, origin_of

if TYPE_CHECKING:  # the method modules import this one; the entry only names these types
    from captionlens.explain.context import ExplainContext
    from captionlens.explain.result import MethodMaps

SettingsType = TypeVar("SettingsType", bound="MethodSettings")


@dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """A method's options: a frozen dataclass whose `__post_init__` checks each value. `for_input`
    fills defaults that depend on the model's input size and checks options against it."""

    def for_input(self: SettingsType, input_size: int) -> SettingsType:
        return self

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls: type[SettingsType], data: Mapping[str, Any]) -> SettingsType:
        """The settings `to_json` wrote; keys that are not fields (what earlier versions recorded beside
        the settings: the layer, the score, ...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names})


@dataclass(frozen=True, kw_only=True)
class RecordedSettings(MethodSettings):
    """The settings an explanation file recorded for a method this installation has not registered: kept
    as they were written, so that the file loads and saves again unchanged."""

    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.values)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordedSettings:
        return cls(values=dict(data))


def _plain(value: Any) -> Any:
    """JSON-ready: tuples as lists, numpy scalars as Python numbers (settings hold nothing else)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class CliOption:
    """A command-line shortcut a method adds to `captionlens explain` / `evaluate-explanations`: `--flag`
    sets the method's setting `setting` (any setting is also reachable as `--setting method.name=value`)."""

    flag: str
    setting: str
    help: str


# run(contexts, settings) -> one MethodMaps per context, in order: every image of a batch in one call
MethodRun = Callable[[Sequence["ExplainContext"], Any], "list[MethodMaps]"]
# statistic name -> per-word values (T,) read off a method's result (e.g. LIME's fit R^2)
WordStatistic = Callable[["MethodMaps"], np.ndarray]


@dataclass(frozen=True)
class Method:
    name: str
    label: str                    # how figures and the report name it
    order: int                    # display order (figures' columns, the report's buttons)
    signed: bool                  # maps carry a sign (raise vs lower the word's score)
    needs_attention: bool
    summary: str                  # one line: what it explains and what it costs
    settings: type[MethodSettings]
    run: MethodRun
    # cheaper settings for runs over many images (the evaluation, the demo's report), by model input size
    quick_settings: Callable[[int], Mapping[str, Any]] | None = None
    statistics: Mapping[str, WordStatistic] = dataclasses.field(default_factory=dict)
    cli_options: tuple[CliOption, ...] = ()

    def explain(self, contexts: Sequence[ExplainContext], settings: MethodSettings) -> list[MethodMaps]:
        """The method's maps for each context, from one call over all of them."""
        maps = list(self.run(contexts, settings))
        if len(maps) != len(contexts):
            raise RuntimeError(f"method {self.name!r} returned {len(maps)} results for {len(contexts)} images")
        return maps

    def quick(self, input_size: int) -> dict[str, Any]:
        """`quick_settings` for a model input of `input_size` pixels ({} when the method has none)."""
        return dict(self.quick_settings(input_size)) if self.quick_settings else {}


METHODS: Registry[str, Method] = Registry("method")
Run = TypeVar("Run", bound=Callable[..., Any])


def register_method(name: str, *, label: str, order: int, signed: bool, summary: str,
                    settings: type[MethodSettings], needs_attention: bool = False,
                    quick_settings: Callable[[int], Mapping[str, Any]] | None = None,
                    statistics: Mapping[str, WordStatistic] | None = None,
                    cli_options: tuple[CliOption, ...] = ()) -> Callable[[Run], Run]:
    """Decorator: make `run(contexts, settings) -> [MethodMaps]` available as `methods=(name, ...)`."""
    def wrap(run: Run) -> Run:
        METHODS.add(name, Method(name, label, order, signed, needs_attention, summary, settings, run,
                                 quick_settings, dict(statistics or {}), cli_options), origin_of(run))
        return run
    return wrap


def ordered_methods(names: Iterable[str]) -> list[str]:
    """Method names in display order; names no method has follow, alphabetically."""
    names = list(dict.fromkeys(names))
    known = sorted((n for n in names if n in METHODS), key=lambda n: METHODS[n].order)
    return known + sorted(n for n in names if n not in METHODS)


def runnable_methods(model: Captioner) -> list[str]:
    """Every registered method `model` can run, in display order."""
    return [n for n in ordered_methods(METHODS) if model.has_attention or not METHODS[n].needs_attention]


def method_label(name: str) -> str:
    """How figures and the report name a method (its registered label, else the name itself)."""
    return METHODS[name].label if name in METHODS else name


def is_signed(name: str, maps: Any = None) -> bool:
    """Whether a method's maps carry a sign: its registered fact, or (a name no method has, from a
    saved file) whether `maps` has negative values."""
    if name in METHODS:
        return METHODS[name].signed
    return maps is not None and bool(np.any(np.asarray(maps) < 0))


def method_statistics() -> list[str]:
    """The names of every registered method's own per-word statistics."""
    return sorted({s for method in METHODS.values() for s in method.statistics})


def settings_from_json(name: str, data: Mapping[str, Any]) -> MethodSettings:
    """The settings a file recorded for method `name`: its settings dataclass, or as recorded when no
    method of that name is registered."""
    if name not in METHODS:
        return RecordedSettings.from_json(data)
    return METHODS[name].settings.from_json(data)


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


def quick_settings(methods: Iterable[str], input_size: int,
                   settings: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Each method's `quick_settings` for this input size, overridden by `settings` (given names win)."""
    given = settings or {}
    out = {name: {**METHODS[name].quick(input_size), **given.get(name, {})} for name in methods if name in METHODS}
    out.update({name: dict(options) for name, options in given.items() if name not in out})
    return {name: options for name, options in out.items() if options}


def require(condition: bool, message: str) -> None:
    """Settings checks: raise ValueError(message) unless `condition`."""
    if not condition:
        raise ValueError(message)
