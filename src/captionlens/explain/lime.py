"""LIME for captions: every word of a caption explained from the same N perturbed images.

Each perturbed image hides a random subset of superpixels and is scored on all T words by one
teacher-forced decoder pass, so the N forward passes give a (N, T) score matrix. One multi-output
weighted ridge fit (closed form, all T columns at once) turns it into a (T, S) weight per word and
superpixel: T times fewer forward passes than running LIME once per word.

Superpixels are computed on the original image (what the user sees, aspect ratio intact, so the
maps come back at its resolution exactly); images whose longer side exceeds `segment_max_side`
(default 256) are segmented on a downscaled copy: the perturbations are composed at the model's input
resolution (224 px for the ResNets), so more pixels would only refine the superpixel borders drawn on
the full-size map, while SLIC's cost grows with them (87 ms at 375x500, 22 ms at 256 px on 2 cores).
Perturbations are composed at model input resolution, in normalised tensor space, on the model's
device (segmentation resized there by nearest neighbour): no per-sample pixel loop, and no resize
of N full-size images. A superpixel too small to survive that resize has no effect, weight ~0.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage.segmentation import felzenszwalb, quickshift, slic

from captionlens.explain.context import ExplainContext
from captionlens.explain.maps import Drawing
from captionlens.explain.perturbation import Fill, check_fill, fill_tensor, score_masked
from captionlens.explain.registry import CliOption, MethodSettings, register_method, require
from captionlens.explain.result import MethodMaps
from captionlens.explain.scoring import auto_batch_size

SEGMENT_MAX_SIDE = 256  # longest side superpixels are computed at (see the module docstring)

# Per-algorithm defaults. SLIC runs as SLICO (per-superpixel adaptive compactness): it gives about
# n_segments regions on textured or noisy images too, where plain SLIC at compactness 10 can collapse
# pure noise into a single region. quickshift's are the lime package's; felzenszwalb's give ~50 regions at ~300 px.
SEGMENTATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "slic": {"slic_zero": True},
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "felzenszwalb": {"scale": 100, "min_size": 50},
}


def segment(image: np.ndarray, segmentation: str = "slic", n_segments: int = 50, compactness: float = 10.0,
            sigma: float = 1.0, max_side: int = SEGMENT_MAX_SIDE, **kwargs: Any) -> np.ndarray:
    """(H, W) int64 superpixel labels 0..S-1 of an (H, W, 3) uint8 image.

    `n_segments`/`compactness` apply to SLIC, `sigma` (pre-smoothing) to all three algorithms,
    `kwargs` to the scikit-image function (e.g. quickshift's `kernel_size`, felzenszwalb's `scale`).
    """
    if segmentation not in SEGMENTATION_DEFAULTS:
        raise ValueError(f"unknown segmentation {segmentation!r}; choose one of {sorted(SEGMENTATION_DEFAULTS)}")
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    small = image
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    params = {**SEGMENTATION_DEFAULTS[segmentation], **kwargs}
    if segmentation == "slic":
        labels = slic(small, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0, **params)
    elif segmentation == "quickshift":
        labels = quickshift(small, sigma=sigma, **params)
    else:
        labels = felzenszwalb(small, sigma=sigma, **params)
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    return resize_labels(labels, (height, width))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map, sampling at pixel centres."""
    rows = ((np.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).astype(np.int64)
    return labels[rows[:, None], cols[None, :]]


def sample_masks(num_samples: int, num_segments: int, seed: int = 0) -> np.ndarray:
    """(N, S) uint8 random superpixel on/off masks; the first row is all ones (the image itself), as in lime."""
    masks = np.random.default_rng(seed).integers(0, 2, size=(num_samples, num_segments), dtype=np.uint8)
    masks[0] = 1
    return masks


def cosine_distance_to_ones(masks: np.ndarray) -> np.ndarray:
    """(N,) cosine distance of each mask to the all-ones mask, as lime_image computes it
    (sklearn's pairwise cosine distance, no x100 scaling: that is lime_text's); all-zero masks get 1."""
    x = np.asarray(masks, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1) * math.sqrt(x.shape[1])
    cosine = np.divide(x.sum(1), norms, out=np.zeros(len(x)), where=norms > 0)
    return np.clip(1.0 - cosine, 0.0, 2.0)


def lime_kernel(distances: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    """lime's exponential kernel: sample weight sqrt(exp(-d^2 / width^2))."""
    return np.sqrt(np.exp(-(np.asarray(distances, dtype=np.float64) ** 2) / kernel_width ** 2))


def fit_lime(masks: np.ndarray, scores: np.ndarray, kernel_width: float = 0.25,
             alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted ridge of every score column on the masks at once: (weights (T, S), intercepts (T,), r2 (T,)).

    Equals sklearn `Ridge(alpha, fit_intercept=True).fit(masks, scores[:, t], sample_weight=k)` per
    word, with k the lime kernel of the masks' distance to all ones; r2 is the weighted R^2 of
    `Ridge.score`, except that a word whose score never varies gets weights 0 and r2 0 (nothing to
    explain; sklearn would report 1.0).
    """
    x = np.asarray(masks, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"masks must be (N, S) and scores (N, T) with the same N, got {x.shape} and {y.shape}")
    if kernel_width <= 0 or alpha <= 0:
        raise ValueError(f"kernel_width and alpha must be > 0, got {kernel_width} and {alpha}")
    k = lime_kernel(cosine_distance_to_ones(x), kernel_width)
    x_mean, y_mean = k @ x / k.sum(), k @ y / k.sum()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (k[:, None] * xc) + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, xc.T @ (k[:, None] * yc))          # (S, T)
    ss_res = k @ (yc - xc @ coef) ** 2
    ss_tot = k @ yc ** 2
    flat = np.ptp(y[k > 0], axis=0) == 0
    coef[:, flat] = 0.0
    y_mean[flat] = y[0, flat]
    r2 = np.where(flat | (ss_tot <= 0), 0.0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0))
    return coef.T.copy(), y_mean - x_mean @ coef, r2


def _keep_batches(masks: torch.Tensor, pixel_segments: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """(B, S, S) keep-pixel masks of each batch of superpixel masks, by indexing (no pixel loop)."""
    for chunk in masks.split(batch_size):
        yield chunk[:, pixel_segments]


@dataclass(frozen=True, kw_only=True)
class LimeSettings(MethodSettings):
    """`num_samples` perturbed images (seeded by `seed`), `batch_size` per forward pass (None:
    `auto_batch_size`); superpixels by `segmentation` (slic, quickshift, felzenszwalb) with
    `n_segments`/`compactness` (SLIC), `sigma` (all three) and `segmentation_kwargs`, computed at most
    `segment_max_side` px on the longer side; hidden superpixels take `fill`; the fit is LIME's kernel
    of width `kernel_width` and a ridge of strength `alpha`."""

    num_samples: int = 1000
    batch_size: int | None = None
    seed: int = 0
    segmentation: str = "slic"
    n_segments: int = 50
    compactness: float = 10.0
    sigma: float = 1.0
    segment_max_side: int = SEGMENT_MAX_SIDE
    segmentation_kwargs: dict[str, Any] = field(default_factory=dict)
    fill: Fill = "mean"
    blur_sigma: float = 8.0
    kernel_width: float = 0.25
    alpha: float = 1.0

    def __post_init__(self) -> None:
        require(_is_int(self.num_samples) and self.num_samples >= 2,
                f"num_samples must be an integer >= 2, got {self.num_samples!r}")
        require(self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1),
                f"batch_size must be an integer >= 1 or None, got {self.batch_size!r}")
        require(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        require(self.segmentation in SEGMENTATION_DEFAULTS,
                f"unknown segmentation {self.segmentation!r}; choose one of {sorted(SEGMENTATION_DEFAULTS)}")
        require(_is_int(self.n_segments) and self.n_segments >= 1,
                f"n_segments must be an integer >= 1, got {self.n_segments!r}")
        for name in ("compactness", "kernel_width", "alpha"):
            value = getattr(self, name)
            require(isinstance(value, (int, float)) and value > 0, f"{name} must be > 0, got {value!r}")
        require(isinstance(self.sigma, (int, float)) and self.sigma >= 0, f"sigma must be >= 0, got {self.sigma!r}")
        require(_is_int(self.segment_max_side) and self.segment_max_side >= 8,
                f"segment_max_side must be an integer >= 8, got {self.segment_max_side!r}")
        require(isinstance(self.segmentation_kwargs, dict),
                f"segmentation_kwargs must be a dict, got {self.segmentation_kwargs!r}")
        check_fill(self.fill, self.blur_sigma)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


QUICK_SAMPLES = 300  # perturbed images per caption in runs over many images (the evaluation, the demo)


def _r2(maps: MethodMaps) -> np.ndarray:
    return np.asarray(maps.extras["r2"], np.float64)


@register_method("lime", label="LIME", order=3, signed=True, settings=LimeSettings,
                 summary="superpixels hidden at random, one ridge fit for all words; N forward passes for all",
                 quick_settings=lambda input_size: {"num_samples": QUICK_SAMPLES},
                 statistics={"lime_r2": _r2},
                 cli_options=(CliOption("--lime-samples", "num_samples", "Perturbed images per LIME run."),))
def lime(contexts: Sequence[ExplainContext], settings: LimeSettings) -> list[MethodMaps]:
    """Per-word LIME maps of each image: each pixel gets its superpixel's signed ridge weight for the word."""
    return [_lime(ctx, settings) for ctx in contexts]


def _lime(ctx: ExplainContext, settings: LimeSettings) -> MethodMaps:
    s = settings
    batch_size = auto_batch_size(ctx.image_tensor) if s.batch_size is None else s.batch_size
    seg_kwargs = {**SEGMENTATION_DEFAULTS[s.segmentation], **s.segmentation_kwargs}
    segments = segment(ctx.image, s.segmentation, s.n_segments, s.compactness, s.sigma, s.segment_max_side,
                       **seg_kwargs)
    masks = sample_masks(s.num_samples, int(segments.max()) + 1, s.seed)
    device = ctx.image_tensor.device
    height, width = ctx.image_tensor.shape[-2:]
    pixel_segments = torch.as_tensor(resize_labels(segments, (height, width)), device=device)
    keep = _keep_batches(torch.as_tensor(masks, dtype=torch.bool, device=device), pixel_segments, batch_size)
    scores = score_masked(ctx, keep, fill_tensor(ctx, s.fill, s.blur_sigma), len(masks)).double().cpu().numpy()
    weights, intercepts, r2 = fit_lime(masks, scores, s.kernel_width, s.alpha)
    extras = {"intercepts": intercepts.astype(np.float32), "r2": r2.astype(np.float32),
              "num_forward_passes": np.asarray(len(scores))}
    return MethodMaps(method="lime", raw=weights.astype(np.float32),
                      drawing=Drawing("segments", ctx.image_hw, segments=segments.astype(np.int32)),
                      settings=replace(s, batch_size=batch_size, segmentation_kwargs=seg_kwargs), extras=extras)
