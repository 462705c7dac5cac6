"""Per-word statistics of an explanation that need no ground truth, and the flags a `SuspectRule` sets.

For each word of a caption and a method: `entropy` of the map's positive part as a distribution over
pixels, divided by log(number of pixels) (0: all mass on one pixel, 1: spread evenly), `peak` (the
map's largest value, in the method's units), `log_prob` (the word's own, method-independent), and each
statistic the method's registry entry adds (LIME: its fit, `lime_r2`). `evaluate.hallucination`
measures how well each separates words that no object supports from supported ones and picks a
`SuspectRule`; `explain(..., suspect_rule=...)` applies it with `flag_words`.
"""
from __future__ import annotations

import numpy as np

from captionlens.explain.registry import METHODS
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.suspect import SuspectFlag, SuspectRule


def map_entropy(maps: np.ndarray) -> np.ndarray:
    """(T, H, W) -> (T,) normalised entropy of each map's positive part; 1 for a map with no positive mass."""
    flat = np.clip(np.asarray(maps, np.float64).reshape(len(maps), -1), 0, None)
    total = flat.sum(1, keepdims=True)
    p = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    entropy = -(p * logs).sum(1) / np.log(flat.shape[1])
    return np.where(total[:, 0] > 0, entropy, 1.0)


def word_statistics(expl: CaptionExplanation, method: str) -> dict[str, np.ndarray]:
    """Every statistic that applies to `method`'s maps of `expl`, (T,) per word, by name."""
    result = expl[method]
    maps = result.maps
    stats = {"entropy": map_entropy(maps), "peak": np.asarray(maps, np.float64).reshape(len(maps), -1).max(1),
             "log_prob": np.asarray(expl.log_probs, np.float64)}
    if method in METHODS:
        stats.update({name: np.asarray(read(result), np.float64) for name, read in METHODS[method].statistics.items()})
    return stats


def rule_values(rule: SuspectRule, expl: CaptionExplanation) -> np.ndarray:
    """(T,) the statistic `rule` reads, for each word of `expl`."""
    if rule.statistic == "image_share":
        if expl.image_share is None:
            raise ValueError("the suspect rule reads the words' image share, which this explanation lacks")
        return np.asarray(expl.image_share, np.float64)
    if rule.method is None:
        return np.asarray(expl.log_probs, np.float64)
    return word_statistics(expl, rule.method)[rule.statistic]


def flag_words(rule: SuspectRule, expl: CaptionExplanation) -> list[SuspectFlag]:
    """Per word of `expl`: flagged or not by `rule`, and the value it read."""
    values = rule_values(rule, expl)
    return [SuspectFlag(bool(h), round(float(v), 4)) for h, v in zip(rule.flagged(values), values)]
