"""Attention maps: the decoder's own alphas (checked against greedy decoding and a step-by-step loop)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from captionlens.explain.api import explain
from captionlens.models import greedy
from zoo import tiny_captioner


def encode(model, image):
    with torch.no_grad():
        return model.encode(model.preprocessing.transform(Image.fromarray(image)).unsqueeze(0))


def test_alphas_sum_to_one_on_the_grid(attention_model, image, caption):
    maps = explain(attention_model, image, methods=("attention",), caption=caption)["attention"]
    n_words = len(caption.split())
    assert maps.raw.shape == (n_words, 4, 4)
    assert maps.maps.shape == (n_words, 64, 80)
    np.testing.assert_allclose(maps.raw.sum((1, 2)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(maps.extras["alphas"], maps.raw.reshape(n_words, 16))


def test_alphas_equal_greedy_decoding(attention_model, image):
    decoded = greedy(attention_model, encode(attention_model, image), attention_model.vocab, max_length=8)[0]
    result = explain(attention_model, image, methods=("attention",), beam_size=1, max_length=8)
    assert result.token_ids == decoded.token_ids and decoded.token_ids
    np.testing.assert_allclose(result["attention"].extras["alphas"], decoded.alphas.numpy(), atol=1e-6)


def test_alphas_equal_a_hand_rolled_step_loop(attention_model, vocab, image, caption):
    ids = vocab.encode(caption, add_special=False)
    state = attention_model.init_state(encode(attention_model, image))
    expected = []
    with torch.no_grad():
        for token in [vocab.start_idx, *ids[:-1]]:
            _, state, alpha = attention_model.step(torch.tensor([token]), state)
            expected.append(alpha[0].numpy())
    alphas = explain(attention_model, image, methods=("attention",), caption=caption)["attention"].extras["alphas"]
    np.testing.assert_allclose(alphas, np.stack(expected), atol=1e-6)


def test_native_grid_when_grid_size_is_none(vocab, image, caption):
    model = tiny_captioner("show-attend-tell", vocab=vocab, image_size=64, attention_dim=8, grid_size=None, seed=2,
                           calibrate=False, attach_vocab=False)
    maps = explain(model, image, methods=("attention",), caption=caption, vocab=vocab)["attention"]
    assert maps.raw.shape == (len(caption.split()), 8, 8)  # the tiny trunk's stride 8 at 64 px
    assert maps.raw.shape[1:] == (8, 8)
    np.testing.assert_allclose(maps.raw.sum((1, 2)), 1.0, atol=1e-6)


def _bilinear(grid: np.ndarray, r: float, c: float) -> float:
    r0, c0 = min(int(r), grid.shape[0] - 2), min(int(c), grid.shape[1] - 2)
    fr, fc = r - r0, c - c0
    return float((1 - fr) * ((1 - fc) * grid[r0, c0] + fc * grid[r0, c0 + 1])
                 + fr * ((1 - fc) * grid[r0 + 1, c0] + fc * grid[r0 + 1, c0 + 1]))


def test_smoothing(attention_model, image, caption):
    plain = explain(attention_model, image, methods=("attention",), caption=caption,
                    settings={"attention": {"sigma": 0}})["attention"]
    # Each 4x4 cell sits at its receptive field's centre: the tiny trunk (stride 8) puts its 8x8 cells at
    # 8j + 0.5 model pixels, the grid pool averages pairs: 16i + 4.5, of a 64 px input stretched to 64 x 80.
    centres = 16 * np.arange(4) + 4.5
    rows = np.interp((np.arange(64) + 0.5) * 64 / 64, centres, np.arange(4))
    cols = np.interp((np.arange(80) + 0.5) * 64 / 80, centres, np.arange(4))
    by_hand = np.stack([[[_bilinear(m, r, c) for c in cols] for r in rows] for m in plain.raw])
    np.testing.assert_allclose(plain.maps, by_hand, atol=1e-6)
    assert plain.drawing.placement == "receptive fields"
    smooth = explain(attention_model, image, methods=("attention",), caption=caption)["attention"]
    assert smooth.settings.sigma == 0.5
    np.testing.assert_array_equal(smooth.raw, plain.raw)
    assert (smooth.maps >= 0).all()
    variation = lambda m: np.abs(np.diff(m, axis=1)).sum() + np.abs(np.diff(m, axis=2)).sum()  # noqa: E731
    assert variation(smooth.maps) < variation(plain.maps)
    np.testing.assert_allclose(smooth.maps.mean((1, 2)), plain.maps.mean((1, 2)), rtol=0.05)


def test_negative_sigma_is_refused(attention_model, image, caption):
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        explain(attention_model, image, methods=("attention",), caption=caption, settings={"attention": {"sigma": -1}})


def test_show_tell_has_no_attention(show_tell_model, image, caption):
    with pytest.raises(ValueError, match=r"^'attention' needs a model with attention; CNNLSTMModel has none$"):
        explain(show_tell_model, image, methods=("attention",), caption=caption)
