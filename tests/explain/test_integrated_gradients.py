"""Integrated gradients at the target layer, every word from one pass per step, against Captum's
LayerIntegratedGradients word by word (same layer, same zero-input baseline, same Gauss-Legendre points)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerIntegratedGradients
from PIL import Image
from torch import nn

from captionlens.explain import explain
from captionlens.explain.integrated_gradients import quadrature
from captionlens.explain.scoring import caption_tensor, scores_from_features

MODELS = ("show_tell_model", "attention_model")


class WordScores(nn.Module):
    """Image tensor -> (B, T) teacher-forced scores of one fixed caption."""

    def __init__(self, model: nn.Module, captions: torch.Tensor) -> None:
        super().__init__()
        self.model, self.captions = model, captions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scores_from_features(self.model, self.model.encode(x), self.captions)


def test_quadrature_integrates_polynomials_exactly():
    points, weights = quadrature(4)
    assert weights.sum() == pytest.approx(1.0) and ((points > 0) & (points < 1)).all()
    for power in range(8):                              # 4 Gauss-Legendre points: exact up to degree 7
        assert (weights * points ** power).sum() == pytest.approx(1 / (power + 1))


@pytest.mark.parametrize("model_name", MODELS)
def test_every_word_equals_captums_layer_integrated_gradients(model_name, request, vocab, image, caption):
    model = request.getfixturevalue(model_name)
    steps = 6
    result = explain(model, image, methods=("integrated-gradients",), caption=caption,
                     settings={"integrated-gradients": {"steps": steps}})["integrated-gradients"]
    ids = vocab.encode(caption, add_special=False)
    x = model.preprocessing.transform(Image.fromarray(image)).unsqueeze(0)
    oracle = LayerIntegratedGradients(WordScores(model, caption_tensor(ids, vocab)), model.encoder.resnet[-2])
    for t in range(len(ids)):
        expected = oracle.attribute(x, target=t, n_steps=steps, method="gausslegendre")[0].sum(0).detach().numpy()
        np.testing.assert_allclose(result.raw[t], expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    assert result.raw.shape == (len(ids), 8, 8) and (result.raw < 0).any() and (result.raw > 0).any()  # signed


def test_completeness_the_attributions_add_up_to_the_score_difference(show_tell_model, vocab, image, caption):
    """With enough steps, a word's attributions sum to its score at the image minus at the baseline."""
    model = show_tell_model
    result = explain(model, image, methods=("integrated-gradients",), caption=caption,
                     settings={"integrated-gradients": {"steps": 32}})["integrated-gradients"]
    ids = vocab.encode(caption, add_special=False)
    x = model.preprocessing.transform(Image.fromarray(image)).unsqueeze(0)
    with torch.no_grad():
        scores = WordScores(model, caption_tensor(ids, vocab))(torch.cat([x, torch.zeros_like(x)]))
    np.testing.assert_allclose(result.raw.sum((1, 2)), (scores[0] - scores[1]).numpy(), rtol=2e-3, atol=1e-4)
