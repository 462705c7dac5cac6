"""LIME for captions against scikit-learn's Ridge, the lime package's kernel and explainer, and brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from lime.lime_image import LimeImageExplainer
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge
from sklearn.metrics import pairwise_distances
from torch import nn

from captionlens.data.images import Preprocessing
from captionlens.explain import ExplainContext, explain
from captionlens.explain.lime import (
    LimeSettings,
    cosine_distance_to_ones,
    fill_tensor,
    fit_lime,
    lime,
    lime_kernel,
    sample_masks,
    segment,
)
from captionlens.explain.registry import method_settings
from captionlens.explain.result import MethodMaps

SIZE = 64
# Word t's known region (rows, cols) in model-input pixels.
REGIONS = ((slice(8, 18), slice(8, 18)), (slice(40, 52), slice(10, 22)), (slice(20, 32), slice(44, 56)))


class RegionScorer(nn.Module):
    """A stand-in caption model whose "word t" logit is the mean of region R_t of the input, plus a weak
    per-word ramp over the whole image so that every superpixel has a distinct, known effect."""

    preprocessing = Preprocessing(image_size=SIZE)

    def __init__(self, constant: bool = False) -> None:
        super().__init__()
        ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE
        weights = np.zeros((len(REGIONS), SIZE, SIZE))
        for t, (rows, cols) in enumerate(REGIONS):
            weights[t][rows, cols] = 1.0 / weights[t][rows, cols].size
            weights[t] += 0.3 * (0.5 + (ys, xs, 1 - ys)[t]) / SIZE ** 2
        self.weights = torch.tensor(0 * weights if constant else weights, dtype=torch.float32)
        self.images_scored = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.images_scored += len(images)
        return torch.einsum("bchw,thw->bt", images, self.weights)

    def teacher_forced_hidden(self, features: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The "hidden state" is the logits already (`output_logits` is the identity)."""
        logits = torch.zeros(*captions[:, 1:].shape, int(captions.max()) + 1)
        values = torch.cat([features, torch.zeros(len(features), 1)], 1)
        return logits.scatter(2, captions[:, 1:, None], values[..., None]), None

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


@pytest.fixture
def flat_image() -> np.ndarray:
    """Grey with mild noise: SLIC gives compact superpixels, and black fill contrasts evenly everywhere."""
    noise = np.random.default_rng(3).integers(-15, 16, size=(SIZE, 80, 3))
    return (150 + noise).astype(np.uint8)


def at_model_pixels(labels: np.ndarray) -> np.ndarray:
    """The original-resolution label under each model-input pixel centre (independent of lime.py's resize)."""
    rows = ((np.arange(SIZE) + 0.5) * labels.shape[0] / SIZE).astype(int)
    cols = ((np.arange(SIZE) + 0.5) * labels.shape[1] / SIZE).astype(int)
    return labels[np.ix_(rows, cols)]


def region_context(image: np.ndarray, scorer: RegionScorer) -> ExplainContext:
    tensor = scorer.preprocessing.transform(Image.fromarray(image))[None]
    return ExplainContext(model=scorer, vocab=None, image=image, image_tensor=tensor,
                          captions=torch.tensor([[1, 4, 5, 6, 2]]), token_ids=[4, 5, 6], target=None,
                          activations=None, score="logit")


def run_lime(ctx: ExplainContext, **settings) -> MethodMaps:
    return lime([ctx], LimeSettings(**settings))[0]


def test_fit_lime_equals_sklearn_ridge_word_by_word() -> None:
    rng = np.random.default_rng(0)
    masks = sample_masks(150, 12, seed=1)
    scores = masks @ rng.normal(size=(12, 4)) + 0.3 * rng.normal(size=(150, 4))
    weights, intercepts, r2 = fit_lime(masks, scores, kernel_width=0.25, alpha=1.0)
    kernel = np.sqrt(np.exp(-pairwise_distances(masks, masks[:1], metric="cosine").ravel() ** 2 / 0.25 ** 2))
    for t in range(4):
        ridge = Ridge(alpha=1.0, fit_intercept=True).fit(masks, scores[:, t], sample_weight=kernel)
        np.testing.assert_allclose(weights[t], ridge.coef_, atol=1e-6)
        np.testing.assert_allclose(intercepts[t], ridge.intercept_, atol=1e-6)
        np.testing.assert_allclose(r2[t], ridge.score(masks, scores[:, t], sample_weight=kernel), atol=1e-6)


def test_kernel_and_fit_equal_the_lime_package() -> None:
    rng = np.random.default_rng(1)
    masks = sample_masks(80, 9, seed=2)
    masks[5] = 0                                   # an all-hidden sample: distance 1 in sklearn's convention
    scores = rng.normal(size=(80, 3))
    distances = pairwise_distances(masks, masks[0].reshape(1, -1), metric="cosine").ravel()
    explainer = LimeImageExplainer(kernel_width=0.25, random_state=0)
    np.testing.assert_allclose(cosine_distance_to_ones(masks), distances, atol=1e-12)
    np.testing.assert_allclose(lime_kernel(distances, 0.25), explainer.base.kernel_fn(distances), atol=1e-12)
    weights, intercepts, r2 = fit_lime(masks, scores)
    for t in range(3):
        intercept, pairs, score, _ = explainer.base.explain_instance_with_data(
            masks, scores, distances, t, num_features=9, feature_selection="none")
        expected = np.zeros(9)
        expected[[f for f, _ in pairs]] = [w for _, w in pairs]
        np.testing.assert_allclose(weights[t], expected, atol=1e-6)
        np.testing.assert_allclose([intercepts[t], r2[t]], [intercept, score], atol=1e-6)


def test_constant_scores_give_zero_weights_and_r2_not_nan(flat_image: np.ndarray) -> None:
    masks = sample_masks(50, 7)
    weights, intercepts, r2 = fit_lime(masks, np.full((50, 2), -3.25))
    assert np.array_equal(weights, np.zeros((2, 7))) and np.array_equal(r2, np.zeros(2))
    np.testing.assert_allclose(intercepts, -3.25)
    result = run_lime(region_context(flat_image, RegionScorer(constant=True)), num_samples=30)
    assert np.array_equal(result.maps, np.zeros_like(result.maps)) and np.isfinite(result.extras["r2"]).all()


def test_weights_rank_like_lime_package_and_known_region_wins(flat_image: np.ndarray) -> None:
    n = 300
    ours = run_lime(region_context(flat_image, RegionScorer()), num_samples=n, n_segments=20, fill=0, batch_size=100)
    segments = ours.drawing.segments
    scorer = RegionScorer()
    transform = scorer.preprocessing.transform

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        batch = torch.stack([transform(Image.fromarray(img)) for img in images])
        return scorer.encode(batch).numpy()

    theirs = LimeImageExplainer(random_state=0).explain_instance(
        flat_image, classifier_fn, labels=range(3), top_labels=None, hide_color=0, num_samples=n,
        segmentation_fn=lambda _: segments)
    small = at_model_pixels(segments)
    for t, (r, c) in enumerate(REGIONS):
        expected = np.zeros(segments.max() + 1)
        for feature, weight in theirs.local_exp[t]:
            expected[feature] = weight
        assert spearmanr(ours.raw[t], expected).statistic >= 0.8
        assert ours.raw[t].argmax() == np.bincount(small[r, c].ravel()).argmax()


def test_perturbed_images_equal_brute_force_composition(flat_image: np.ndarray) -> None:
    ctx = region_context(flat_image, RegionScorer())
    ours = run_lime(ctx, num_samples=40, n_segments=12, fill="mean", batch_size=16, seed=5)
    small = at_model_pixels(ours.drawing.segments)
    masks = sample_masks(40, ours.raw.shape[1], seed=5)
    grey = torch.tensor(flat_image.reshape(-1, 3).mean(0) / 255, dtype=torch.float32)
    background = ((grey - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    images = ctx.image_tensor.repeat(40, 1, 1, 1)
    for i, mask in enumerate(masks):
        for s in np.flatnonzero(mask == 0):
            images[i][:, torch.as_tensor(small == s)] = background[:, None]
    weights, _, _ = fit_lime(masks, ctx.model.encode(images).double().numpy())
    np.testing.assert_allclose(ours.raw, weights, atol=1e-5)
    for s in range(ours.raw.shape[1]):               # each pixel carries its superpixel's weight
        assert np.array_equal(ours.maps[:, ours.drawing.segments == s].T[0], ours.raw[:, s])


def test_all_words_from_the_same_n_forward_passes(show_tell_model, vocab, image, caption) -> None:
    scored = []
    encode = show_tell_model.encode
    show_tell_model.encode = lambda images: scored.append(len(images)) or encode(images)
    result = explain(show_tell_model, image, methods=("lime",), caption=caption, vocab=vocab,
                     settings={"lime": {"num_samples": 40, "batch_size": 16, "n_segments": 15}})["lime"]
    num_words = len(caption.split())
    assert sum(scored) == 40 == int(result.extras["num_forward_passes"])   # per-word LIME would need 40 * T
    assert result.maps.shape == (num_words, *image.shape[:2]) and result.drawing.segments.shape == image.shape[:2]
    assert result.raw.shape == (num_words, result.drawing.segments.max() + 1)
    assert result.settings.num_samples == 40 and result.settings.batch_size == 16


@pytest.mark.parametrize("method", ["slic", "quickshift", "felzenszwalb"])
def test_segmentations_label_every_pixel_contiguously(image: np.ndarray, method: str) -> None:
    labels = segment(image, method, n_segments=10)
    assert labels.shape == image.shape[:2]
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_noise_image_still_gets_about_n_segments() -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(150, 200, 3), dtype=np.uint8)
    assert segment(noise, n_segments=30, slic_zero=False).max() == 0     # plain SLIC: one region
    assert 20 <= segment(noise, n_segments=30).max() + 1 <= 40              # SLICO, the default


def test_large_image_segmented_on_a_downscaled_copy() -> None:
    big = np.zeros((300, 600, 3), np.uint8)
    big[:, 300:] = 255
    labels = segment(big, n_segments=2, max_side=100)
    assert labels.shape == (300, 600)
    assert len(np.unique(labels[:, :290])) == 1 and len(np.unique(labels[:, 310:])) == 1
    assert labels[0, 0] != labels[0, -1]


def test_fill_colours_in_normalised_space(image: np.ndarray) -> None:
    ctx = region_context(image, RegionScorer())
    red = fill_tensor(ctx, (255, 0, 0)).expand(1, 3, 2, 2)[0]
    denormalize = ctx.model.preprocessing.denormalize
    assert (denormalize(red) == [255, 0, 0]).all()
    mean = denormalize(fill_tensor(ctx, "mean").expand(1, 3, 2, 2)[0])[0, 0]
    np.testing.assert_allclose(mean, image.reshape(-1, 3).mean(0), atol=0.51)
    blurred = gaussian_filter(ctx.image_tensor.numpy(), sigma=(0, 0, 3, 3), mode="mirror", truncate=3)
    np.testing.assert_allclose(fill_tensor(ctx, "blur", blur_sigma=3).numpy(), blurred, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [({"segmentation": "watershed"}, "lime: unknown segmentation 'watershed'"),
                                           ({"fill": "purple"}, "lime: fill must be .* got 'purple'"),
                                           ({"fill": 300}, "lime: fill must be .* got 300"),
                                           ({"fill": "blur", "blur_sigma": 0}, "lime: blur_sigma must be > 0"),
                                           ({"num_samples": 1}, "lime: num_samples must be an integer >= 2, got 1"),
                                           ({"num_samples": -5}, "lime: num_samples must be .* got -5"),
                                           ({"batch_size": 0}, "lime: batch_size must be"),
                                           ({"num_sample": 10}, "lime: unknown setting.* num_sample; lime takes")])
def test_bad_settings_raise_one_clear_error_naming_method_and_option(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        method_settings("lime", kwargs, SIZE)
