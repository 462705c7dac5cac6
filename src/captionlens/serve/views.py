"""What the live page is sent, as types with one `to_json` each: an image, a caption with every word's
probability and the words the model could have written instead, and one method's maps of a caption."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from captionlens.explain.contrast import Foil
from captionlens.explain.suspect import SuspectFlag


@dataclass(frozen=True)
class ImageView:
    """An image the server holds: `id` names it in every later request."""

    id: str
    name: str
    width: int
    height: int
    heat_size: tuple[int, int]          # (w, h) of each word's heatmap in a sprite

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.width, "height": self.height,
                "heat_size": list(self.heat_size), "url": f"/api/image/{self.id}"}


@dataclass(frozen=True)
class Alternative:
    """A word the model could write at a position, and its log-probability there."""

    word: str
    log_prob: float

    def to_json(self) -> dict[str, Any]:
        return {"word": self.word, "log_prob": round(self.log_prob, 5)}


@dataclass(frozen=True)
class CaptionView:
    """A caption of an image: the model's own (`source` "generated", with its beam size and the prefix it
    was asked to continue) or typed (`source` "given", teacher-forced; `unknown`: typed words the
    vocabulary lacks, read as <UNK>). `alternatives[t]` are the top-k words after words_<t (t = T: after
    the whole caption, <END> among them), `end_log_prob` that of <END> after the last word."""

    image: str
    tokens: tuple[str, ...]
    log_probs: tuple[float, ...]
    alternatives: tuple[tuple[Alternative, ...], ...]
    end_log_prob: float
    source: str
    beam_size: int | None = None
    prefix: int = 0
    unknown: tuple[str, ...] = ()
    suspect: tuple[SuspectFlag, ...] | None = None
    suspect_rule: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "tokens": list(self.tokens), "log_probs": [round(x, 5) for x in self.log_probs],
                "alternatives": [[a.to_json() for a in row] for row in self.alternatives],
                "end_log_prob": round(self.end_log_prob, 5), "source": self.source, "beam_size": self.beam_size,
                "prefix": self.prefix, "unknown": list(self.unknown),
                "suspect": None if self.suspect is None else [f.to_json() for f in self.suspect],
                "suspect_rule": self.suspect_rule}


@dataclass(frozen=True)
class MapsView:
    """One method's maps of every word of a caption, as the viewer draws them: `sprite` (a PNG data URL,
    every word's map stacked, 0..255 = colour-scale position, `viz.page.heat_sprite`), each word's value
    range (`ranges`, in the method's units), the contrast they were computed with and, per foil, its
    log-probability at its position (`foil_log_probs`)."""

    image: str
    tokens: tuple[str, ...]
    method: str
    signed: bool
    sprite: str
    heat_size: tuple[int, int]
    ranges: tuple[tuple[float, float], ...]
    contrast: tuple[Foil, ...] = ()
    foil_log_probs: tuple[float, ...] = ()
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "tokens": list(self.tokens), "method": self.method, "signed": self.signed,
                "sprite": self.sprite, "heat_size": list(self.heat_size),
                "ranges": [[lo, hi] for lo, hi in self.ranges],
                "contrast": [{**f.to_json(), "log_prob": round(lp, 5)}
                             for f, lp in zip(self.contrast, self.foil_log_probs)],
                "seconds": round(self.seconds, 4)}
