"""Synthetic `CaptionExplanation`s for the viz tests, independent of the explanation methods:
a Gaussian blob at a different, known place for every word."""
from __future__ import annotations

import numpy as np

from captionlens.explain.maps import Drawing
from captionlens.explain.registry import METHODS
from captionlens.explain.result import CaptionExplanation, MethodMaps

WORDS = ("a", "red", "circle", "above", "the", "blue", "square", "and", "green", "triangle", "left", "of", "it")
GRID = 4  # LIME superpixels: a GRID x GRID chequerboard of blocks, labelled row-major 0..GRID*GRID-1


def blob_centre(word: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Where word `word`'s blob peaks: walks the LIME blocks so each word's top superpixel differs."""
    block = word % (GRID * GRID)
    h, w = shape
    return int((block // GRID + 0.5) * h / GRID), int((block % GRID + 0.5) * w / GRID)


def blobs(n_words: int, shape: tuple[int, int]) -> np.ndarray:
    """(T, H, W) float32 Gaussian blobs, peak 1 at blob_centre(t)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    sigma = max(2.0, min(shape) / 8)
    return np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
                     for cy, cx in (blob_centre(t, shape) for t in range(n_words))]).astype(np.float32)


def lime_segments(shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy * GRID // shape[0]) * GRID + xx * GRID // shape[1]


def make(n_words: int = 7, shape: tuple[int, int] = (48, 64),
         methods: tuple[str, ...] = ("gradcam", "attention", "lime", "occlusion")) -> CaptionExplanation:
    """An explanation with blobs as maps; gradcam/attention >= 0 (in different units), lime/occlusion signed."""
    rng = np.random.default_rng(n_words)
    image = rng.integers(60, 200, size=(*shape, 3), dtype=np.uint8)
    heat = blobs(n_words, shape)
    segments = lime_segments(shape)
    weights = np.full((n_words, GRID * GRID), -0.05, np.float32)
    for t in range(n_words):
        weights[t, t % (GRID * GRID)] = 0.8
        weights[t, (t + 1) % (GRID * GRID)] = 0.3
    maps = {"gradcam": 5.0 * heat, "gradcam++": 3.0 * heat ** 2, "attention": 0.01 + 0.02 * heat,
            "lime": weights[:, segments], "occlusion": heat - 0.5 * heat[:, ::-1, ::-1]}
    results = {m: MethodMaps(method=m, maps=maps[m].astype(np.float32), raw=maps[m][:, ::8, ::8].astype(np.float32),
                             settings=METHODS[m].settings()) for m in methods if m != "lime"}
    if "lime" in methods:                   # LIME's maps are its weights painted on the superpixels, as it draws them
        results["lime"] = MethodMaps(method="lime", raw=weights, drawing=Drawing("segments", shape, segments=segments),
                                     settings=METHODS["lime"].settings(),
                                     extras={"r2": np.full(n_words, 0.5, np.float32)})
    return CaptionExplanation(
        image=image, tokens=list((WORDS * 2)[:n_words]), token_ids=list(range(4, 4 + n_words)),
        log_probs=-np.linspace(0.1, 3.0, n_words).astype(np.float32), methods=results)
