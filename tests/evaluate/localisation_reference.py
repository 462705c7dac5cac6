"""The four localisation metrics written directly, one map at a time: the reference the vectorised
`captionlens.evaluate.localisation.localisation_scores` is tested against (definitions in its module doc)."""
from __future__ import annotations

import numpy as np


def _check_pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(heatmap)
    inside = np.asarray(mask, dtype=bool)
    if values.shape != inside.shape:
        raise ValueError(f"map of shape {values.shape} and mask of shape {inside.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("the map has non-finite values")
    return values.ravel(), inside.ravel()


def pointing_hit(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """1.0 when the map's maximum lies in the mask, else 0.0; for a maximum several pixels share, the
    share of them in the mask (the expected hit when the tie is broken at random)."""
    values, inside = _check_pair(heatmap, mask)
    peak = values == values.max()
    return float(inside[peak].mean())


def relevance_mass(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive mass that lies in the mask: sum(max(m, 0) in mask) / sum(max(m, 0)).

    Only the positive part counts, so a signed map cannot score above 1 or below 0 through negative
    values; a map with no positive mass puts none in the mask and scores 0.
    """
    values, inside = _check_pair(heatmap, mask)
    positive = np.clip(values.astype(np.float64), 0.0, None)
    total = positive.sum()
    return float(positive[inside].sum() / total) if total > 0 else 0.0


def relevance_rank(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Of the K = |mask| highest-valued pixels, the fraction inside the mask; nan for an empty mask.

    Pixels tied at the K-th highest value share the places left after the strictly higher ones, each
    in proportion, which is the expected score when ties are broken at random.
    """
    values, inside = _check_pair(heatmap, mask)
    k = int(inside.sum())
    if k == 0:
        return float("nan")
    threshold = np.sort(values)[-k]
    above, tied = values > threshold, values == threshold
    places_left = k - int(above.sum())
    return float((inside[above].sum() + places_left * inside[tied].sum() / tied.sum()) / k)


def mask_auc(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """ROC AUC of the map's values as a score for "pixel is in the mask", ties counted one half.

    It is the chance that a random mask pixel outscores a random background pixel, so it needs both
    kinds of pixel: nan when the mask is empty or covers the whole map.
    """
    values, inside = _check_pair(heatmap, mask)
    n_in = int(inside.sum())
    n_out = inside.size - n_in
    if n_in == 0 or n_out == 0:
        return float("nan")
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0          # 1-based average rank of each distinct value
    rank_sum = mid_ranks[group.ravel()][inside].sum()
    return float((rank_sum - n_in * (n_in + 1) / 2.0) / (n_in * n_out))
