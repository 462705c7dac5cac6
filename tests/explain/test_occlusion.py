"""Occlusion for captions against Captum's `Occlusion`, one target word at a time."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from PIL import Image

from captionlens.explain import explain
from captionlens.explain.maps import upsample
from captionlens.explain.occlusion import OcclusionSettings
from captionlens.explain.scoring import batched_word_scores, caption_tensor


@pytest.mark.parametrize("model_name, fill", [("show_tell_model", "mean"), ("attention_model", 0)])
def test_words_equal_captum_occlusion(request, vocab, image, caption, model_name, fill) -> None:
    model = request.getfixturevalue(model_name)
    result = explain(model, image, methods=("occlusion",), caption=caption, vocab=vocab,
                     settings={"occlusion": {"window": 20, "stride": 12, "fill": fill}})
    ours = result["occlusion"]
    x = model.preprocessing.transform(Image.fromarray(image))[None]
    captions = caption_tensor(result.token_ids, vocab)
    colour = image.reshape(-1, 3).mean(0) if fill == "mean" else np.zeros(3)
    baseline = (torch.tensor(colour / 255, dtype=torch.float32) - torch.tensor([0.485, 0.456, 0.406])) \
        / torch.tensor([0.229, 0.224, 0.225])
    baseline = baseline.view(1, 3, 1, 1).expand_as(x).contiguous()
    captum = Occlusion(lambda images: batched_word_scores(model, images, captions))
    assert np.abs(ours.raw).max() > 1e-4                 # the scores do respond to the patch
    num_words = len(result.token_ids)
    for t in (0, num_words // 2, num_words - 1):         # Captum needs a full set of passes per word
        expected = captum.attribute(x, sliding_window_shapes=(3, 20, 20), strides=(3, 12, 12), baselines=baseline,
                                    target=t, perturbations_per_eval=64)
        np.testing.assert_allclose(ours.raw[t], expected[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.maps, upsample(ours.raw, image.shape[:2]), atol=1e-6)
    assert ours.maps.shape == (num_words, *image.shape[:2])


def test_all_words_from_one_set_of_passes(show_tell_model, vocab, image, caption) -> None:
    scored = []
    encode = show_tell_model.encode
    show_tell_model.encode = lambda images: scored.append(len(images)) or encode(images)
    result = explain(show_tell_model, image, methods=("occlusion",), caption=caption, vocab=vocab,
                     settings={"occlusion": {"window": 16, "stride": 10}})["occlusion"]
    patches = (int(np.ceil((64 - 16) / 10)) + 1) ** 2      # Captum's shift counts per axis, squared
    # batch_size: on the CPU as many 64x64 images as 8 at 224x224 hold pixels, 8 * 224**2 // 64**2 = 98
    assert sum(scored) == patches + 1 == int(result.extras["num_forward_passes"])
    assert result.settings == OcclusionSettings(window=16, stride=10, fill="mean", blur_sigma=8.0, batch_size=98)


@pytest.mark.parametrize("settings, match", [({"window": 100}, "occlusion: need stride <= window <= 64"),
                                             ({"window": 8, "stride": 9}, "occlusion: need stride <= window"),
                                             ({"window": 8, "stride": 0}, "occlusion: stride must be an integer >= 1")])
def test_bad_window_raises_one_clear_error(show_tell_model, vocab, image, caption, settings, match) -> None:
    with pytest.raises(ValueError, match=match):
        explain(show_tell_model, image, methods=("occlusion",), caption=caption, vocab=vocab,
                settings={"occlusion": settings})
