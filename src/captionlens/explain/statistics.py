"""Per-word statistics of an explanation that need no ground truth, and the rule that flags suspect words.

For each word of a caption and a method: `entropy` of the map's positive part as a distribution over
pixels, divided by log(number of pixels) (0: all mass on one pixel, 1: spread evenly), `peak` (the
map's largest value, in the method's units), `log_prob` (the word's own, method-independent), and for
LIME its fit `lime_r2`. `evaluate.hallucination` measures how well each separates words that no object
supports from supported ones and picks a `SuspectRule`; `explain(..., suspect_rule=...)` applies it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from captionlens.data.records import read_json
from captionlens.explain.result import CaptionExplanation

STATISTICS = ("entropy", "peak", "log_prob", "lime_r2")


def map_entropy(maps: np.ndarray) -> np.ndarray:
    """(T, H, W) -> (T,) normalised entropy of each map's positive part; 1 for a map with no positive mass."""
    flat = np.clip(np.asarray(maps, np.float64).reshape(len(maps), -1), 0, None)
    total = flat.sum(1, keepdims=True)
    p = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    entropy = -(p * logs).sum(1) / np.log(flat.shape[1])
    return np.where(total[:, 0] > 0, entropy, 1.0)


def word_statistics(expl: CaptionExplanation, method: str) -> dict[str, np.ndarray]:
    """Each statistic of `STATISTICS` that applies to `method` (lime_r2 to LIME only), (T,) per word."""
    maps = expl[method].maps
    stats = {"entropy": map_entropy(maps), "peak": np.asarray(maps, np.float64).reshape(len(maps), -1).max(1),
             "log_prob": np.asarray(expl.log_probs, np.float64)}
    if "r2" in expl[method].extras:
        stats["lime_r2"] = np.asarray(expl[method].extras["r2"], np.float64)
    return stats


@dataclass(frozen=True)
class SuspectRule:
    """Flag a word when `method`'s `statistic` is at or `direction` ("below" or "above") `threshold`
    (`method` None: a method-independent statistic, the log-prob)."""

    statistic: str
    direction: str
    threshold: float
    method: str | None = None

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {self.statistic!r}; choose one of {', '.join(STATISTICS)}")
        if self.direction not in ("below", "above"):
            raise ValueError(f"direction must be 'below' or 'above', got {self.direction!r}")
        if self.method is None and self.statistic != "log_prob":
            raise ValueError(f"statistic {self.statistic!r} is a method's: name the method")

    def values(self, expl: CaptionExplanation) -> np.ndarray:
        if self.method is None:
            return np.asarray(expl.log_probs, np.float64)
        return word_statistics(expl, self.method)[self.statistic]

    def flagged(self, values: np.ndarray) -> np.ndarray:
        """Which of the statistic's `values` the rule flags."""
        return values <= self.threshold if self.direction == "below" else values >= self.threshold

    def flags(self, expl: CaptionExplanation) -> list[dict[str, Any]]:
        """Per word: {"suspect", "value"} (the statistic the rule reads)."""
        values = self.values(expl)
        return [{"suspect": bool(h), "value": round(float(v), 4)} for h, v in zip(self.flagged(values), values)]

    def describe(self) -> str:
        source = f"{self.method} {self.statistic}" if self.method else self.statistic
        return f"{source} {self.direction} {self.threshold:.4g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuspectRule:
        return cls(statistic=data["statistic"], direction=data["direction"], threshold=float(data["threshold"]),
                   method=data.get("method"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SuspectRule:
        """The rule in a JSON file: an explanation evaluation's (its "hallucination" section) or a rule's own."""
        path = Path(path)
        data = read_json(path)
        if isinstance(data, dict) and "hallucination" in data:
            data = data["hallucination"].get("rule")
            if data is None:
                raise ValueError(f"{path}: the evaluation chose no suspect rule (too few unsupported words)")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a suspect rule ({exc})") from None
