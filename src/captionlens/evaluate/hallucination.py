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

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score, roc_curve

from captionlens.evaluate.result import ChosenRule, HallucinationMeasures, HeldOut, WordCounts, number
from captionlens.evaluate.stats import rate_with_interval, resampled
from captionlens.evaluate.words import CONTENT_CLASSES
from captionlens.explain.suspect import SuspectRule


def _auc(labels: np.ndarray, values: np.ndarray) -> float:
    if len(set(labels.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(labels, values))


def measure_hallucination(supported: Sequence[bool | None], classes: Sequence[str], images: Sequence[int],
                          statistics: Mapping[str, Mapping[str, np.ndarray]], log_prob: np.ndarray,
                          image_share: np.ndarray | None = None, seed: int = 0) -> HallucinationMeasures:
    """Counts per word class, the AUC of each method's statistics, of the log-prob and of the image share
    (`explain.image_share`), each with a bootstrap interval, and the chosen rule with its held-out rates
    and their intervals. Arrays are per word, all words."""
    rows = np.asarray([s is not None for s in supported])     # the words whose support is known
    labels = np.asarray([s is False for s in supported])[rows].astype(int)
    image_index = np.asarray(images)[rows]
    log_prob = np.asarray(log_prob)[rows]
    known = sorted({c for c, s in zip(classes, supported) if s is not None},
                   key=lambda c: (CONTENT_CLASSES.index(c) if c in CONTENT_CLASSES else len(CONTENT_CLASSES), c))
    by_class = {c: WordCounts(int(sum(1 for k, s in zip(classes, supported) if k == c and s is not None)),
                              int(sum(1 for k, s in zip(classes, supported) if k == c and s is False)))
                for c in known}
    candidates: dict[tuple[str | None, str], np.ndarray] = {(None, "log_prob"): log_prob}
    share = None if image_share is None else np.asarray(image_share, np.float64)[rows]
    if share is not None and not np.isnan(share).any():
        candidates[(None, "image_share")] = share
    auc: dict[str, dict[str, float | None]] = {}
    intervals: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    for method, stats in statistics.items():
        auc[method], intervals[method] = {}, {}
        for name, values in stats.items():
            values = np.asarray(values)[rows]
            candidates[(method, name)] = values
            auc[method][name] = number(_auc(labels, values))
            intervals[method][name] = _auc_interval(labels, values, seed)
    rule, reason, held_out = _chosen_rule(labels, image_index, candidates, seed)
    return HallucinationMeasures(words=int(rows.sum()), unsupported=int(labels.sum()), by_class=by_class,
                                 log_prob_auc=number(_auc(labels, log_prob)),
                                 log_prob_auc_interval=_auc_interval(labels, log_prob, seed), auc=auc,
                                 auc_intervals=intervals,
                                 image_share_auc=None if share is None else number(_auc(labels, share)),
                                 image_share_auc_interval=((None, None) if share is None else
                                                           _auc_interval(labels, share, seed)),
                                 rule=rule, rule_reason=reason, held_out=held_out)


def bootstrap_auc(labels: np.ndarray, values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The ROC AUC (ties count one half) of each resample of words, `draws` (resamples, n) indices, all
    at once by ranks (Mann-Whitney); nan for a resample with one class only."""
    y, x = labels[draws], values[draws]
    ranks = rankdata(x, axis=1)
    positives = y.sum(1)
    negatives = y.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def _auc_interval(labels: np.ndarray, values: np.ndarray, seed: int, resamples: int = 1000,
                  level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the AUC over words (resamples with one class only are skipped)."""
    if len(set(labels.tolist())) < 2 or np.isnan(values).any():
        return None, None
    aucs = resampled(len(labels), lambda draws: bootstrap_auc(labels, values, draws), resamples, seed)
    aucs = aucs[~np.isnan(aucs)]
    tail = (1 - level) / 2
    low, high = np.quantile(aucs, [tail, 1 - tail])
    return float(low), float(high)


def _chosen_rule(labels: np.ndarray, images: np.ndarray, candidates: Mapping[tuple[str | None, str], np.ndarray],
                 seed: int = 0) -> tuple[ChosenRule | None, str | None, HeldOut | None]:
    """Choose (statistic, direction, threshold) on even images, report it on odd ones: (the rule, why
    there is none, its held-out rates)."""
    choose, test = images % 2 == 0, images % 2 == 1
    if len(set(labels[choose].tolist())) < 2 or len(set(labels[test].tolist())) < 2:
        return None, "too few unsupported or supported words in one half to choose a rule", None
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
    held_out = HeldOut(int(test.sum()), number(_auc(labels[test], sign * values[test])),
                       number(flagged[positives].mean()), number(flagged[negatives].mean()),
                       number(flagged[positives].sum() / max(flagged.sum(), 1)),
                       _rate_interval(flagged[positives], seed), _rate_interval(flagged[negatives], seed))
    return ChosenRule(rule, "even-indexed images", float(oriented)), None, held_out


def _rate_interval(flags: np.ndarray, seed: int) -> tuple[float | None, float | None]:
    rate = rate_with_interval(flags.astype(float), seed=seed)
    return rate.low, rate.high
