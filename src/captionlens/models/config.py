"""Model configurations (a frozen dataclass per architecture) and the registry that builds a model from one.

Each architecture's module defines its config (a subclass of `CaptionerConfig`) next to its model and
registers the model with `@register_architecture` (a second class under the same architecture name is
refused, naming both). A config is what a checkpoint stores as JSON; it carries the model's input
preprocessing too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from captionlens.data.images import Preprocessing
from captionlens.registries import Registry, origin_of

if TYPE_CHECKING:  # the models import this module; the registry only names their type
    from captionlens.models.base import CaptionModel


@dataclass(frozen=True, kw_only=True)
class CaptionerConfig:
    """Sizes shared by both architectures; subclasses add their own."""

    architecture: ClassVar[str]
    vocab_size: int
    embed_size: int = 256
    hidden_size: int = 512
    backbone: str = "resnet50"
    dropout: float = 0.3
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout <= 1:  # NaN is refused too
            raise ValueError(f"dropout must be a number in 0..1, got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the architecture name, every field, the preprocessing as a dict."""
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        return {"architecture": self.architecture, **data}

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> CaptionerConfig:
        """This config from `to_dict()`'s fields (without "architecture"); a version-1 checkpoint's
        flat `image_size` becomes the default preprocessing at that size."""
        data = dict(data)
        if "image_size" in data:
            data.setdefault("preprocessing", {"image_size": data.pop("image_size")})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.architecture} config field(s) {sorted(unknown)}")
        if isinstance(data.get("preprocessing"), dict):
            data["preprocessing"] = Preprocessing.from_dict(data["preprocessing"])
        return cls(**data)


ARCHITECTURES: Registry[str, type[CaptionModel]] = Registry("architecture")
ModelClass = TypeVar("ModelClass", bound="type[CaptionModel]")


def register_architecture(model_class: ModelClass) -> ModelClass:
    """Class decorator: checkpoints of `model_class.config_class.architecture` build this class. A name
    already registered is a ValueError naming both classes' places."""
    ARCHITECTURES.add(model_class.config_class.architecture, model_class, origin_of(model_class))
    return model_class


def config_from_dict(data: dict[str, Any]) -> CaptionerConfig:
    """The config a checkpoint's JSON describes; ValueError naming what is wrong."""
    data = dict(data)
    architecture = data.pop("architecture", None)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[architecture].config_class.from_fields(data)
    except TypeError as exc:
        raise ValueError(f"bad {architecture} config ({exc})") from None


def build_model(config: CaptionerConfig, *, pretrained: bool = False) -> CaptionModel:
    """A model of `config`'s architecture and sizes (random weights, or ImageNet ones for the trunk)."""
    return ARCHITECTURES[config.architecture](config, pretrained=pretrained)
