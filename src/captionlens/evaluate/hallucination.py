"""Hallucinated words: which generated content words no object supports, and whether explanations tell.

On the synthetic shapes every generated shape noun, colour and size adjective is known to be supported
or not (`evaluate.words.shapes_support`). Each statistic of `explain.statistics` (per method: the map's
entropy, its peak, LIME's fit; and the word's log-prob, the baseline to beat, as Sun et al. 2022 do)
is scored by the ROC AUC with which it separates unsupported words (positives) from supported ones;
an AUC below 0.5 means the statistic is lower for unsupported words. The suspect-word rule is chosen
on one half of the images (even indices: the statistic and direction with the best AUC, its threshold
at Youden's J) and reported on the other half, so its rates are not measured on the words it was fit to.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from captionlens.evaluate.words import CONTENT_CLASSES
from captionlens.explain.statistics import SuspectRule


def _auc(labels: np.ndarray, values: np.ndarray) -> float:
    if len(set(labels.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(labels, values))


def hallucination_report(supported: Sequence[bool | None], classes: Sequence[str], images: Sequence[int],
                         statistics: Mapping[str, Mapping[str, np.ndarray]], log_prob: np.ndarray,
                         seed: int = 0) -> dict[str, Any]:
    """The JSON section: counts per word class, AUC per method and statistic (with intervals for the
    log-prob baseline), and the chosen rule with its held-out rates. Arrays are per word, all words."""
    rows = np.asarray([s is not None and c in CONTENT_CLASSES for s, c in zip(supported, classes)])
    labels = np.asarray([s is False for s in supported])[rows].astype(int)
    image_index = np.asarray(images)[rows]
    log_prob = np.asarray(log_prob)[rows]
    by_class = {c: {"words": int(sum(1 for k, s in zip(classes, supported) if k == c and s is not None)),
                    "unsupported": int(sum(1 for k, s in zip(classes, supported) if k == c and s is False))}
                for c in CONTENT_CLASSES}
    candidates: dict[tuple[str | None, str], np.ndarray] = {(None, "log_prob"): log_prob}
    auc: dict[str, dict[str, float]] = {}
    for method, stats in statistics.items():
        auc[method] = {}
        for name, values in stats.items():
            values = np.asarray(values)[rows]
            candidates[(method, name)] = values
            auc[method][name] = _auc(labels, values)
    report: dict[str, Any] = {"words": int(rows.sum()), "unsupported": int(labels.sum()), "by_class": by_class,
                              "log_prob_auc": _auc(labels, log_prob),
                              "log_prob_auc_interval": list(_auc_interval(labels, log_prob, seed)), "auc": auc}
    report.update(_chosen_rule(labels, image_index, candidates))
    return report


def _auc_interval(labels: np.ndarray, values: np.ndarray, seed: int, resamples: int = 1000,
                  level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC over words (resamples with one class only are skipped)."""
    if len(set(labels.tolist())) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(resamples, len(labels)))
    aucs = np.asarray([_auc(labels[d], values[d]) for d in draws])
    aucs = aucs[~np.isnan(aucs)]
    tail = (1 - level) / 2
    low, high = np.quantile(aucs, [tail, 1 - tail])
    return float(low), float(high)


def _chosen_rule(labels: np.ndarray, images: np.ndarray,
                 candidates: Mapping[tuple[str | None, str], np.ndarray]) -> dict[str, Any]:
    """Choose (statistic, direction, threshold) on even images, report it on odd ones."""
    choose, test = images % 2 == 0, images % 2 == 1
    if len(set(labels[choose].tolist())) < 2 or len(set(labels[test].tolist())) < 2:
        return {"rule": None, "rule_reason": "too few unsupported or supported words in one half to choose a rule"}
    best: tuple[float, tuple[str | None, str], str] | None = None
    for key, values in candidates.items():
        if np.isnan(values).any():
            continue
        auc = _auc(labels[choose], values[choose])
        for direction, oriented in (("above", auc), ("below", 1 - auc)):
            if best is None or oriented > best[0]:
                best = (oriented, key, direction)
    assert best is not None
    oriented, (method, statistic), direction = best
    values = candidates[(method, statistic)]
    sign = 1.0 if direction == "above" else -1.0
    fpr, tpr, thresholds = roc_curve(labels[choose], sign * values[choose])
    cut = int(np.argmax(tpr - fpr))
    threshold = float(sign * thresholds[cut]) if np.isfinite(thresholds[cut]) else float(sign * values[choose].max())
    rule = SuspectRule(statistic=statistic, direction=direction, threshold=threshold, method=method)
    flagged = rule.flagged(values[test])            # inclusive, as roc_curve's thresholds are
    positives, negatives = labels[test] == 1, labels[test] == 0
    return {"rule": {**rule.to_dict(), "describe": rule.describe(), "chosen_on": "even-indexed images",
                     "selection_auc": oriented},
            "held_out": {"words": int(test.sum()), "auc": _auc(labels[test], sign * values[test]),
                         "true_positive_rate": float(flagged[positives].mean()),
                         "false_positive_rate": float(flagged[negatives].mean()),
                         "precision": float(flagged[positives].sum() / max(flagged.sum(), 1))}}
