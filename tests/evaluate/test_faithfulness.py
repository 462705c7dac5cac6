"""Deletion / insertion curves and word disappearance against brute-force loops that compose every
perturbed image by hand and score or caption it one at a time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from captionlens.evaluate.faithfulness import (
    cell_ranks,
    curve_area,
    deletion_selectivity,
    maps_at_input,
    perturbation_curves,
    random_ranks,
    salience_ranks,
    word_disappearance,
)
from captionlens.explain.scoring import caption_tensor, scores_from_features
from captionlens.models import decode
from captionlens.models.base import CaptionModel
from zoo import tiny_captioner

SIZE = 16


def _model(seed: int = 0) -> CaptionModel:
    model = tiny_captioner(vocab="a red blue circle square".split(), image_size=SIZE, seed=seed, calibrate=False)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)                      # peaked, image-dependent word distributions
    return model


def _score(model, image, ids, word):
    with torch.no_grad():
        return float(scores_from_features(model, model.encode(image), caption_tensor(ids, model.vocab))[0, word])


def test_curves_equal_a_brute_force_loop_over_hand_made_images():
    model = _model()
    image = torch.randn(1, 3, SIZE, SIZE)
    ids = model.vocab.encode("a red circle", add_special=False)
    maps = torch.rand(1, len(ids), SIZE, SIZE)
    ranks, shared = salience_ranks(maps), random_ranks(1, SIZE * SIZE, torch.Generator().manual_seed(0))
    steps = 4
    curves = perturbation_curves(model, image, ids, ranks, shared, steps=steps, batch_size=7)
    assert curves.deletion.shape == curves.insertion.shape == (2, len(ids), steps + 1)
    mean = image.mean((2, 3), keepdim=True)
    for t in range(len(ids)):
        orders = [torch.argsort(-maps[0, t].flatten(), stable=True), torch.argsort(shared[0])]
        for k, order in enumerate(orders):               # k = 1: one random order shared by every word
            for s in range(steps + 1):
                n = round(s / steps * SIZE * SIZE)
                hide = torch.zeros(SIZE * SIZE, dtype=torch.bool)
                hide[order[:n]] = True
                hide = hide.view(1, 1, SIZE, SIZE)
                deleted = torch.where(hide, mean, image)
                inserted = torch.where(hide, image, mean)
                assert curves.deletion[k, t, s] == pytest.approx(_score(model, deleted, ids, t), abs=1e-5)
                assert curves.insertion[k, t, s] == pytest.approx(_score(model, inserted, ids, t), abs=1e-5)
                for other in range(len(ids)):           # every word's score under word t's deletion
                    assert curves.deletion_all[k, t, other, s] == pytest.approx(
                        _score(model, deleted, ids, other), abs=1e-5)
    np.testing.assert_allclose(curves.deletion_auc, np.trapezoid(curves.deletion, dx=1 / steps, axis=-1), atol=1e-6)


def test_the_ends_of_the_curves_are_the_intact_and_the_blank_image():
    model = _model(1)
    image = torch.randn(1, 3, SIZE, SIZE)
    ids = model.vocab.encode("a blue square", add_special=False)
    curves = perturbation_curves(model, image, ids, salience_ranks(torch.rand(1, 3, SIZE, SIZE)), steps=3)
    blank = image.mean((2, 3), keepdim=True).expand_as(image)
    for t in range(3):
        assert curves.deletion[0, t, 0] == pytest.approx(_score(model, image, ids, t), abs=1e-5)
        assert curves.insertion[0, t, -1] == pytest.approx(_score(model, image, ids, t), abs=1e-5)
        assert curves.deletion[0, t, -1] == pytest.approx(_score(model, blank, ids, t), abs=1e-5)


def test_salience_ranks_put_the_largest_value_first_and_area_is_the_trapezoid():
    maps = torch.tensor([[[[0.1, 0.9], [0.5, 0.5]]]])
    assert salience_ranks(maps)[0, 0].tolist() == [3, 0, 1, 2]   # ties keep pixel order
    assert curve_area(np.array([0.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert maps_at_input(np.ones((2, 3, 5, 7), np.float32), 4).shape == (2, 3, 4, 4)


def test_word_disappearance_equals_captioning_each_hidden_image():
    model = _model(2)
    with torch.no_grad():
        model.decoder.fc.bias[model.vocab.end_idx] -= 2.0      # captions of a few words, not an empty one
    torch.manual_seed(3)
    image = torch.randn(1, 3, SIZE, SIZE) * 2
    ids = decode(model, image, model.vocab, max_length=6)[0].token_ids
    assert ids, "the model must caption the image with at least one word"
    grid, cells = 4, 5
    maps = torch.rand(1, len(ids), SIZE, SIZE)
    word_cells, shared = cell_ranks(maps, grid), random_ranks(1, grid * grid, torch.Generator().manual_seed(1))
    gone = word_disappearance(model, image, ids, word_cells, shared, grid=grid, cells=cells, max_length=6,
                              batch_size=3)
    assert gone.shape == (2, len(ids), len(ids))
    mean = image.mean((2, 3), keepdim=True)
    cell = SIZE // grid
    for t in range(len(ids)):
        # the oracle: the word map's `cells` highest cell means, hidden by hand
        means = maps[0, t].view(grid, cell, grid, cell).mean((1, 3)).flatten()
        for k, chosen in enumerate([torch.argsort(-means, stable=True)[:cells], torch.argsort(shared[0])[:cells]]):
            hide = torch.zeros(grid * grid, dtype=torch.bool)
            hide[chosen] = True
            hide = hide.view(grid, grid).repeat_interleave(cell, 0).repeat_interleave(cell, 1)
            caption = decode(model, torch.where(hide, mean, image), model.vocab, max_length=6)[0].token_ids
            for s, other in enumerate(ids):             # every word of the caption under word t's hiding
                assert gone[k, t, s] == (caption.count(other) < ids.count(other))


def test_selectivity_is_the_own_words_fall_beyond_the_others_by_hand():
    """Word 0's deletion lowers word 0 by 2 and the others by 1 at every point past the first: selectivity 1
    over the area (the first point is the intact image); a deletion that lowers every word alike: 0."""
    points = 5
    scores = np.zeros((1, 3, 3, points))
    scores[0, 0, :, 1:] = -1.0
    scores[0, 0, 0, 1:] = -2.0
    scores[0, 1, :, 1:] = -3.0                       # word 1's deletion hurts all words by 3: no selectivity
    scores[0, 2, 2, 1:] = 0.5                        # word 2's deletion raises it: negative selectivity
    selectivity = deletion_selectivity(scores)
    area = curve_area(np.r_[0.0, np.ones(points - 1)])
    np.testing.assert_allclose(selectivity[0], [area, 0.0, -0.5 * area])
    assert np.isnan(deletion_selectivity(np.zeros((1, 1, 1, points)))).all()   # one word: nothing to compare


def test_disappearance_refuses_more_cells_than_the_grid_has():
    model = _model()
    with pytest.raises(ValueError, match="cells must be in 1..4 for a 2x2 grid, got 5"):
        word_disappearance(model, torch.zeros(1, 3, SIZE, SIZE), [4], torch.zeros(1, 1, 4, dtype=torch.long),
                           grid=2, cells=5)
