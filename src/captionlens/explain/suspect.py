"""`SuspectRule`: the rule that flags a word as suspect (likely not supported by the image) from one
per-word statistic, and `SuspectFlag`, what it says of one word. Chosen by `captionlens
evaluate-explanations` (`evaluate.hallucination`), applied by `explain(..., suspect_rule=...)`
(`explain.statistics.flag_words`), recorded in every explanation it flagged."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from captionlens.explain.registry import method_statistics

MAP_STATISTICS = ("entropy", "peak")         # of any method's maps (`explain.statistics`)
WORD_STATISTICS = ("log_prob", "image_share")  # of the word itself, whatever the method (`explain.image_share`)


def known_statistics() -> list[str]:
    """Every statistic a rule may read: of the maps, of the word, and each method's own."""
    return [*MAP_STATISTICS, *WORD_STATISTICS, *method_statistics()]


@dataclass(frozen=True)
class SuspectRule:
    """Flag a word when `method`'s `statistic` is at or `direction` ("below" or "above") `threshold`
    (`method` None: a statistic of the word itself, its log-prob or its image share)."""

    statistic: str
    direction: str
    threshold: float
    method: str | None = None

    def __post_init__(self) -> None:
        if self.statistic not in known_statistics():
            raise ValueError(f"unknown statistic {self.statistic!r}; choose one of {', '.join(known_statistics())}")
        if self.direction not in ("below", "above"):
            raise ValueError(f"direction must be 'below' or 'above', got {self.direction!r}")
        if self.method is None and self.statistic not in WORD_STATISTICS:
            raise ValueError(f"statistic {self.statistic!r} is a method's: name the method")

    def flagged(self, values: np.ndarray) -> np.ndarray:
        """Which of the statistic's `values` the rule flags."""
        return values <= self.threshold if self.direction == "below" else values >= self.threshold

    def describe(self) -> str:
        source = f"{self.method} {self.statistic}" if self.method else self.statistic
        return f"{source} {self.direction} {self.threshold:.4g}"

    def to_json(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "direction": self.direction, "threshold": self.threshold,
                "method": self.method}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SuspectRule:
        return cls(statistic=data["statistic"], direction=data["direction"], threshold=float(data["threshold"]),
                   method=data.get("method"))


@dataclass(frozen=True)
class SuspectFlag:
    """One word under a rule: whether it is flagged, and the value of the statistic the rule read."""

    suspect: bool
    value: float

    def to_json(self) -> dict[str, Any]:
        return {"suspect": self.suspect, "value": self.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SuspectFlag:
        return cls(bool(data["suspect"]), float(data["value"]))
