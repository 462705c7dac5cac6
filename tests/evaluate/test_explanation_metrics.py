import numpy as np
import pytest
import torch

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.evaluate.explanation_metrics import box_fraction, deletion_scores, peak, pointing_game
from captionlens.explain.result import CaptionExplanation, MethodMaps
from captionlens.explain.scoring import caption_tensor, scores_from_features
from captionlens.models import CNNLSTMModel, ShowTellConfig


def _explanation(maps: np.ndarray) -> CaptionExplanation:
    t, h, w = maps.shape
    return CaptionExplanation(image=np.zeros((h, w, 3), np.uint8), tokens=[f"w{i}" for i in range(t)],
                              token_ids=list(range(t)), log_probs=np.zeros(t, np.float32),
                              methods={"m": MethodMaps(maps=maps, raw=maps)})


def test_pointing_game_hand_computed():
    maps = np.zeros((3, 10, 20), np.float32)
    maps[0, 2, 3] = 1.0    # inside box [0, 0, 5, 5]
    maps[1, 8, 15] = 1.0   # outside box [0, 0, 5, 5]
    maps[2, 8, 15] = 1.0   # word 2 has no box: not counted
    result = pointing_game([_explanation(maps)], [[[0, 0, 5, 5], [0, 0, 5, 5], None]])["m"]
    assert (result.hits, result.total) == (1, 2)
    assert result.rate == 0.5
    assert result.baseline_rate == pytest.approx(25 / 200)


def test_box_fraction_clips_to_image_and_peak_breaks_ties_first():
    assert box_fraction([-5, -5, 5, 5], (10, 10)) == pytest.approx(0.25)
    assert peak(np.ones((3, 4))) == (0, 0)


def test_pointing_game_rejects_misaligned_boxes():
    with pytest.raises(ValueError, match="2 boxes for a caption of 3 words"):
        pointing_game([_explanation(np.zeros((3, 4, 4), np.float32))], [[None, None]])


def _tiny_model(image_size: int, seed: int) -> CNNLSTMModel:
    torch.manual_seed(seed)
    vocab = Vocabulary("a red blue circle square".split())
    model = CNNLSTMModel(ShowTellConfig(vocab_size=len(vocab), embed_size=16, hidden_size=16, backbone="tiny",
                                        preprocessing=Preprocessing(image_size=image_size))).eval()
    model.vocab = vocab
    return model


def test_deletion_curve_endpoints_match_brute_force():
    model = _tiny_model(32, seed=0)
    vocab = model.vocab
    image = torch.randn(1, 3, 32, 32)
    ids = vocab.encode("a red circle", add_special=False)
    maps = np.random.default_rng(0).random((len(ids), 4, 4)).astype(np.float32)
    curves = deletion_scores(model, image, ids, maps, steps=4)
    captions = caption_tensor(ids, vocab)
    with torch.no_grad():
        intact = scores_from_features(model, model.encode(image), captions)[0].numpy()
        blank = scores_from_features(model, model.encode(torch.zeros_like(image)), captions)[0].numpy()
    assert curves.shape == (3, 5)
    np.testing.assert_allclose(curves[:, 0], intact, atol=1e-5)
    np.testing.assert_allclose(curves[:, -1], blank, atol=1e-5)


def test_deletion_midpoint_removes_the_most_salient_pixels_first():
    model = _tiny_model(8, seed=1)
    vocab = model.vocab
    image = torch.randn(1, 3, 8, 8)
    ids = vocab.encode("a blue square", add_special=False)
    maps = np.zeros((3, 8, 8), np.float32)
    maps[1, :4, :] = 1.0                      # word 1: top half is salient
    curves = deletion_scores(model, image, ids, maps, steps=2)
    manual = image.clone()
    manual[..., :4, :] = 0.0                  # half the pixels, the salient ones, filled
    with torch.no_grad():
        expected = scores_from_features(model, model.encode(manual), caption_tensor(ids, vocab))[0, 1].item()
    assert curves[1, 1] == pytest.approx(expected, abs=1e-5)
