import numpy as np
import pytest
from localisation_reference import mask_auc, pointing_hit, relevance_mass, relevance_rank
from sklearn.metrics import roc_auc_score

from captionlens.evaluate import localisation, stats
from captionlens.evaluate.localisation import centre_map, localisation_scores, peak_position, random_map_expectation
from captionlens.evaluate.stats import Rate, bootstrap_interval, rate_with_interval

PER_MAP = {"pointing": pointing_hit, "mass": relevance_mass, "rank": relevance_rank, "auc": mask_auc}


@pytest.fixture(scope="module")
def quantus():
    return pytest.importorskip("quantus")


def _quantus_scores(quantus, metric_cls, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Quantus's plain metric (no abs, no normalisation) on (N, 1, H, W) batches of precomputed maps."""
    a_batch = maps[:, None].astype(np.float64)
    metric = metric_cls(abs=False, normalise=False, disable_warnings=True)
    scores = metric(model=None, x_batch=np.zeros_like(a_batch), y_batch=np.zeros(len(maps), int),
                    a_batch=a_batch, s_batch=masks[:, None].astype(np.float64))
    return np.asarray(scores, dtype=np.float64)


def _masks(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Non-empty, non-full masks: unions of one or two boxes, or scattered pixels."""
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if i % 3 == 2:
            masks[i] = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        else:
            for _ in range(1 + i % 2):
                y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
                masks[i, y0:rng.integers(y0 + 1, h), x0:rng.integers(x0 + 1, w)] = True
        masks[i].flat[rng.integers(h * w)] = True
        if masks[i].all():
            masks[i, 0, 0] = False
    return masks


def _mixed_maps(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Signed continuous maps, Grad-CAM-like maps with plateaus of zeros, and quantised maps full of ties."""
    maps = rng.normal(size=(n, h, w))
    maps[1::4] = np.maximum(maps[1::4], 0.8)
    maps[2::4] = np.maximum(maps[2::4], 0.0)
    maps[3::4] = rng.integers(0, 3, size=maps[3::4].shape)
    return maps


# --- Quantus as the oracle -------------------------------------------------------------------------

def test_pointing_matches_quantus_without_ties(quantus):
    rng = np.random.default_rng(0)
    maps, masks = rng.normal(size=(40, 9, 11)), _masks(rng, 40, 9, 11)   # continuous: one maximum per map
    expected = _quantus_scores(quantus, quantus.PointingGame, maps, masks)
    ours = np.array([pointing_hit(m, s) for m, s in zip(maps, masks)], dtype=np.float64)
    assert 0 < ours.sum() < len(ours)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(localisation_scores(maps, masks)["pointing"], expected)


def test_a_shared_maximum_scores_the_share_inside_where_quantus_takes_any(quantus):
    heatmap = np.zeros((3, 4))
    heatmap[0, 1] = heatmap[2, 3] = heatmap[0, 0] = 1.0   # three maxima, one of them in the mask
    mask = np.zeros((3, 4), dtype=bool)
    mask[2, 2:] = True
    assert pointing_hit(heatmap, mask) == pytest.approx(1 / 3)        # a hit in 1 of 3 random tie-breaks
    assert localisation_scores(heatmap[None], mask[None])["pointing"][0] == pytest.approx(1 / 3)
    assert _quantus_scores(quantus, quantus.PointingGame, heatmap[None], mask[None])[0] == 1.0
    assert peak_position(heatmap) == pytest.approx((1 / 3 * 2 + 0.5, (1 + 3 + 0) / 3 + 0.5))


def test_relevance_mass_matches_quantus_on_non_negative_maps(quantus):
    rng = np.random.default_rng(1)
    maps = np.maximum(rng.normal(size=(40, 8, 10)), 0.0)   # non-negative: the positive part is the map itself
    maps[:, 0, 0] += 0.1                                  # and every map has some mass
    masks = _masks(rng, 40, 8, 10)
    expected = _quantus_scores(quantus, quantus.RelevanceMassAccuracy, maps, masks)
    np.testing.assert_allclose([relevance_mass(m, s) for m, s in zip(maps, masks)], expected, rtol=1e-12)
    np.testing.assert_allclose(localisation_scores(maps, masks)["mass"], expected, rtol=1e-12)


def test_relevance_mass_counts_only_positive_mass_where_quantus_sums_signed_values(quantus):
    heatmap = np.array([[2.0, -1.0], [1.0, 0.0]])
    mask = np.array([[True, True], [False, False]])
    assert relevance_mass(heatmap, mask) == pytest.approx(2 / 3)             # positive part: 2 of 2 + 1
    assert _quantus_scores(quantus, quantus.RelevanceMassAccuracy, heatmap[None], mask[None])[0] == \
        pytest.approx(0.5)                                                   # signed: (2 - 1) / (2 - 1 + 1 + 0)
    assert relevance_mass(-np.ones((2, 2)), mask) == 0.0                     # no positive mass: none in the mask
    assert relevance_mass(np.zeros((2, 2)), mask) == 0.0
    balanced = np.array([[[1.0, 0.0], [-1.0, 0.0]]])                       # signed mass sums to zero
    assert relevance_mass(balanced[0], mask) == 1.0                          # all the positive mass is inside
    with np.errstate(divide="ignore"):
        assert np.isinf(_quantus_scores(quantus, quantus.RelevanceMassAccuracy, balanced, mask[None])[0])


def test_relevance_rank_matches_quantus_without_ties(quantus):
    rng = np.random.default_rng(2)
    maps, masks = rng.normal(size=(40, 8, 10)), _masks(rng, 40, 8, 10)
    expected = _quantus_scores(quantus, quantus.RelevanceRankAccuracy, maps, masks)
    np.testing.assert_allclose([relevance_rank(m, s) for m, s in zip(maps, masks)], expected, rtol=1e-12)
    np.testing.assert_allclose(localisation_scores(maps, masks)["rank"], expected, rtol=1e-12)


def test_relevance_rank_shares_tied_places_where_quantus_takes_sort_order():
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 1.0                       # one clear top pixel, then a plateau of 15 zeros
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, :4] = True                        # K = 4: the top pixel (inside) and 3 of the 15 tied zeros (3 inside)
    expected = (1 + 3 * 3 / 15) / 4
    assert relevance_rank(heatmap, mask) == pytest.approx(expected)
    assert localisation_scores(heatmap[None], mask[None])["rank"][0] == pytest.approx(expected)
    assert np.isnan(relevance_rank(heatmap, np.zeros((4, 4), dtype=bool)))   # K = 0: no top set to score


def test_mask_auc_matches_quantus_including_ties(quantus):
    rng = np.random.default_rng(3)
    maps, masks = _mixed_maps(rng, 40, 7, 9), _masks(rng, 40, 7, 9)
    expected = _quantus_scores(quantus, quantus.AUC, maps, masks)
    np.testing.assert_allclose([mask_auc(m, s) for m, s in zip(maps, masks)], expected, rtol=1e-12)
    np.testing.assert_allclose(localisation_scores(maps, masks)["auc"], expected, rtol=1e-12)


# --- scikit-learn and hand-computed cases -----------------------------------------------------------

def test_mask_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(4)
    maps, masks = _mixed_maps(rng, 24, 6, 8), _masks(rng, 24, 6, 8)
    expected = [roc_auc_score(s.ravel(), m.ravel()) for m, s in zip(maps, masks)]
    assert any(len(np.unique(m)) < m.size for m in maps)
    np.testing.assert_allclose([mask_auc(m, s) for m, s in zip(maps, masks)], expected, rtol=1e-12)
    np.testing.assert_allclose(localisation_scores(maps, masks)["auc"], expected, rtol=1e-12)


def test_mask_auc_hand_computed_and_undefined_cases():
    heatmap = np.array([[3.0, 1.0], [1.0, 0.0]])
    mask = np.array([[True, True], [False, False]])
    assert mask_auc(heatmap, mask) == pytest.approx(3.5 / 4)   # in {3, 1} vs out {1, 0}: the 1-1 tie counts half
    assert np.isnan(mask_auc(heatmap, np.zeros((2, 2), bool)))
    assert np.isnan(mask_auc(heatmap, np.ones((2, 2), bool)))


def test_metrics_reject_misaligned_or_non_finite_inputs():
    with pytest.raises(ValueError, match="shape"):
        relevance_mass(np.zeros((2, 3)), np.zeros((3, 2), bool))
    with pytest.raises(ValueError, match="non-finite"):
        pointing_hit(np.array([[np.nan, 1.0]]), np.array([[True, False]]))
    with pytest.raises(ValueError, match="non-finite"):
        localisation_scores(np.array([[[np.nan, 1.0]]]), np.array([[[True, False]]]))
    with pytest.raises(ValueError, match="shape"):
        localisation_scores(np.zeros((2, 3, 3)), np.zeros((2, 3, 4), bool))


# --- the vectorised entry point against the per-map functions ---------------------------------------

def test_localisation_scores_match_per_map_functions(monkeypatch):
    rng = np.random.default_rng(5)
    maps, masks = _mixed_maps(rng, 60, 6, 7), _masks(rng, 60, 6, 7)
    masks[0] = False                          # empty mask: no hit, no mass, rank and auc undefined
    masks[1] = True                           # full mask: auc undefined
    masks[2] = False
    masks[2, 3, 4] = True                     # a single pixel
    maps[3] = 0.0                             # no positive mass at all
    maps[4] = -np.abs(maps[4])
    scores = localisation_scores(maps, masks)
    for name, metric in PER_MAP.items():
        expected = np.array([metric(m, s) for m, s in zip(maps, masks)], dtype=np.float64)
        np.testing.assert_allclose(scores[name], expected, rtol=1e-12, atol=1e-15, err_msg=name)
    monkeypatch.setattr(localisation, "_CHUNK_ELEMENTS", 5 * 6 * 7)   # 12 chunks of 5 rows
    chunked = localisation_scores(maps, masks)
    for name in PER_MAP:
        np.testing.assert_array_equal(chunked[name], scores[name], err_msg=name)


# --- baselines ---------------------------------------------------------------------------------------

def test_random_map_expectation_exact_values():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True
    assert random_map_expectation(mask) == {"pointing": 0.25, "mass": 0.25, "rank": 0.25, "auc": 0.5}
    empty = random_map_expectation(np.zeros((6, 8), bool))
    assert (empty["pointing"], empty["mass"]) == (0.0, 0.0) and np.isnan(empty["rank"]) and np.isnan(empty["auc"])
    full = random_map_expectation(np.ones((6, 8), bool))
    assert (full["pointing"], full["mass"], full["rank"]) == (1.0, 1.0, 1.0) and np.isnan(full["auc"])


@pytest.mark.parametrize("signed", [False, True])
def test_random_map_expectation_matches_monte_carlo(signed):
    rng = np.random.default_rng(6)
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True
    mask[5, 7] = True                          # area fraction 13 / 48
    n = 4000
    maps = rng.normal(size=(n, 6, 8)) if signed else rng.random((n, 6, 8))
    scores = localisation_scores(maps, np.broadcast_to(mask, maps.shape))
    expected = random_map_expectation(mask)
    for name, tolerance in {"pointing": 0.03, "mass": 0.01, "rank": 0.015, "auc": 0.01}.items():
        assert scores[name].mean() == pytest.approx(expected[name], abs=tolerance), name


def test_centre_map_is_a_centred_gaussian():
    bump = centre_map(9, 13, sigma_fraction=1 / 9)              # sigma: 1 row, 13/9 columns
    assert bump.shape == (9, 13)
    assert np.unravel_index(np.argmax(bump), bump.shape) == (4, 6) and bump[4, 6] == pytest.approx(1.0)
    assert bump[5, 6] == pytest.approx(np.exp(-0.5))
    assert bump[4, 7] == pytest.approx(np.exp(-0.5 * (9 / 13) ** 2))
    np.testing.assert_allclose(bump, bump[::-1, ::-1])
    centre = np.zeros((9, 13), dtype=bool)
    centre[3:6, 5:8] = True
    assert pointing_hit(bump, centre) and mask_auc(bump, centre) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        centre_map(0, 5)


# --- bootstrap ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_bootstrap_interval_matches_a_brute_force_loop(statistic, monkeypatch):
    values = np.random.default_rng(7).exponential(size=37)
    values[[3, 20]] = np.nan
    items = values[~np.isnan(values)]
    rng = np.random.default_rng(11)
    resampled = [statistic(items[rng.integers(0, items.size, size=items.size)]) for _ in range(300)]
    expected = tuple(np.quantile(resampled, [0.05, 0.95]))
    ours = bootstrap_interval(values, n_resamples=300, level=0.9, seed=11, statistic=statistic)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    monkeypatch.setattr(stats, "_MAX_DRAWS", 7 * items.size)        # resamples drawn 7 at a time
    np.testing.assert_allclose(bootstrap_interval(values, 300, 0.9, 11, statistic), expected, rtol=1e-12)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_bootstrap_interval_covers_the_true_mean_about_as_often_as_its_level(level):
    rng = np.random.default_rng(8)
    covered = []
    for seed in range(400):
        low, high = bootstrap_interval(rng.normal(size=100), n_resamples=400, level=level, seed=seed)
        covered.append(low <= 0.0 <= high)
    assert np.mean(covered) == pytest.approx(level, abs=0.06)   # the percentile bootstrap runs a little short


def test_bootstrap_interval_edge_cases():
    assert all(np.isnan(bootstrap_interval([])))
    assert all(np.isnan(bootstrap_interval([np.nan, np.nan])))
    assert bootstrap_interval([0.3]) == (0.3, 0.3)
    wide, narrow = bootstrap_interval(np.arange(50.0)), bootstrap_interval(np.arange(50.0), level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        bootstrap_interval([1.0, 2.0], level=1.0)


def test_rate_with_interval():
    hits = np.array([1, 0, 1, 1, np.nan, 0, 1, 1])
    result = rate_with_interval(hits, seed=3)
    assert result.n == 7 and result.value == pytest.approx(5 / 7)
    assert (result.low, result.high) == bootstrap_interval(hits, seed=3)
    assert result.low < result.value < result.high
    assert rate_with_interval([np.nan]) == Rate(None, None, None, 0)       # nothing measured: None, not NaN
