"""How well does an explanation map sit on the object a word refers to? Localisation metrics against a mask.

A map is an (H, W) float array (signed for LIME and occlusion, non-negative for Grad-CAM and attention);
a mask is an (H, W) bool array: the object's pixels, or the union of its boxes. Four metrics:

- pointing: the map's maximum lies in the mask; when several pixels share the maximum (the plateaus of
  occlusion's patches and LIME's superpixels), the share of them inside the mask, which is the hit
  rate under random tie-breaking (taking the first one in row-major order would favour the top left);
- mass: the share of the map's positive mass inside the mask (Kohlbrenner et al.'s Relevance Mass
  Accuracy, on the positive part so that negative evidence is not counted as mass);
- rank: of the K = |mask| highest-valued pixels, the fraction inside the mask (Relevance Rank Accuracy);
  pixels tied at the K-th value share the remaining places, so the score is its expectation under
  random tie-breaking (Grad-CAM maps have large plateaus of zeros, where any fixed order is arbitrary);
- auc: ROC AUC of the map's values as a score for "pixel is in the mask", ties counted one half.

`localisation_scores` computes all four for a stack of (map, mask) pairs in a few array passes (the
tests hold it against direct per-map definitions and Quantus). `random_map_expectation` and
`centre_map` give the baselines.
"""
from __future__ import annotations

import numpy as np

METRICS = ("pointing", "mass", "rank", "auc")
_CHUNK_ELEMENTS = 1 << 22   # pixels sorted at once by `localisation_scores`: bounds its temporaries


def peak_position(heatmap: np.ndarray) -> tuple[float, float]:
    """(row, column) of the map's maximum, in pixel coordinates (a pixel's centre is at index + 0.5):
    the mean position of the pixels that share the maximum."""
    rows, cols = np.nonzero(np.asarray(heatmap) == np.max(heatmap))
    return float(rows.mean()) + 0.5, float(cols.mean()) + 0.5


def _tie_groups(sorted_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of each entry's run of equal values, in rows sorted ascending."""
    n = sorted_rows.shape[1]
    positions = np.broadcast_to(np.arange(n), sorted_rows.shape)
    changes = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    edge = np.ones((len(sorted_rows), 1), dtype=bool)
    starts_run = np.concatenate([edge, changes], axis=1)
    ends_run = np.concatenate([changes, edge], axis=1)
    first = np.maximum.accumulate(np.where(starts_run, positions, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends_run, positions, n)[:, ::-1], axis=1)[:, ::-1]
    return first, last


def _scores_chunk(values: np.ndarray, inside: np.ndarray) -> dict[str, np.ndarray]:
    """The four metrics for rows of flattened maps `values` (N, P) and masks `inside` (N, P)."""
    rows, n = values.shape
    row_index = np.arange(rows)[:, None]
    n_in = inside.sum(axis=1)
    n_out = n - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        peak = values == values.max(axis=1, keepdims=True)
        pointing = (peak & inside).sum(axis=1) / peak.sum(axis=1)

        positive = np.clip(values.astype(np.float64), 0.0, None)
        total = positive.sum(axis=1)
        mass = np.where(total > 0, (positive * inside).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0)

        order = np.argsort(values, axis=1)
        inside_sorted = inside[row_index, order]
        first, last = _tie_groups(values[row_index, order])

        top_start = (n - n_in)[:, None]          # the K highest values fill sorted positions n-K .. n-1
        share = np.clip(last - np.maximum(first, top_start) + 1, 0, None) / (last - first + 1)
        rank = np.where(n_in > 0, (share * inside_sorted).sum(axis=1) / n_in, np.nan)

        mid_ranks = (first + last) / 2.0 + 1.0
        rank_sum = (mid_ranks * inside_sorted).sum(axis=1)
        auc = (rank_sum - n_in * (n_in + 1) / 2.0) / (n_in * n_out)
        auc = np.where((n_in > 0) & (n_out > 0), auc, np.nan)
    return {"pointing": pointing, "mass": mass, "rank": rank, "auc": auc}


def localisation_scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """The four metrics for each (map, mask) pair of `maps` (N, H, W) and `masks` (N, H, W).

    Returns {"pointing", "mass", "rank", "auc"}, each a float array of length N (pointing is 1.0 for a
    hit), with the definitions, ties and nan cases of the module doc. Rows are processed in
    chunks so that memory stays bounded for thousands of full-resolution maps.
    """
    values = np.asarray(maps)
    inside = np.asarray(masks, dtype=bool)
    if values.ndim != 3 or values.shape != inside.shape:
        raise ValueError(f"expected maps and masks of the same (N, H, W) shape, got {values.shape} and {inside.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("the maps have non-finite values")
    count = len(values)
    values, inside = values.reshape(count, -1), inside.reshape(count, -1)
    out = {name: np.empty(count, dtype=np.float64) for name in METRICS}
    step = max(1, _CHUNK_ELEMENTS // max(1, values.shape[1]))
    for start in range(0, count, step):
        chunk = _scores_chunk(values[start:start + step], inside[start:start + step])
        for name in METRICS:
            out[name][start:start + step] = chunk[name]
    return out


def random_map_expectation(mask: np.ndarray) -> dict[str, float]:
    """Exact expected value of each metric for a map of i.i.d. continuous random values, given the mask.

    With f = |mask| / (H * W): the maximum is at a uniformly random pixel, so pointing = f; the top K
    pixels are a uniformly random K-subset, so rank = f; a mask pixel outscores a background pixel with
    chance one half, so auc = 0.5 (nan for an empty or full mask, as in `localisation_scores`). Mass is f in
    expectation by exchangeability: every pixel carries the same expected share of the positive mass
    and the shares sum to 1, so the mask's pixels carry f of it. That holds whenever the map has some
    positive mass almost surely; for signed values the all-non-positive map (chance F(0) ** (H * W))
    scores 0, which lowers the expectation by that negligible chance.
    """
    inside = np.asarray(mask, dtype=bool)
    k, n = int(inside.sum()), inside.size
    fraction = k / n
    return {"pointing": fraction, "mass": fraction, "rank": fraction if k else float("nan"),
            "auc": 0.5 if 0 < k < n else float("nan")}


def centre_map(height: int, width: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """A Gaussian bump at the image centre, sigma = `sigma_fraction` of each side: the "centre bias" baseline.

    Photographers centre their subjects, so a map that ignores the image and just looks at the middle
    already scores well; an explanation method is only informative to the extent it beats this map.
    Score it like any other map.
    """
    if height < 1 or width < 1 or sigma_fraction <= 0:
        raise ValueError(f"need positive sizes and sigma_fraction, got {height}x{width}, {sigma_fraction}")
    rows = (np.arange(height) - (height - 1) / 2.0) / (sigma_fraction * height)
    cols = (np.arange(width) - (width - 1) / 2.0) / (sigma_fraction * width)
    return np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2))
