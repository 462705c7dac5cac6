"""Cascading model-parameter randomisation: the order of the steps, that the trained model is left as it
was, the similarity measures against scipy and scikit-image, and verdicts whose answers are known: a map
computed from the image alone must fail, maps of a method that reads the model must pass."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from captionlens.evaluate.sanity import PASS_BELOW, cascading_models, map_similarity, randomisation_steps, sanity_check
from captionlens.explain.registry import METHODS, Method, MethodSettings
from captionlens.explain.result import MethodMaps


def test_steps_go_from_the_decoder_down_the_trunk(attention_model):
    steps = randomisation_steps(attention_model)
    assert [label for label, _ in steps] == ["decoder and head", "trunk layer3", "trunk layer2", "trunk layer1",
                                             "trunk stem"]
    first = {id(m) for m in steps[0][1]}
    assert id(attention_model.decoder.fc) in first and id(attention_model.decoder.lstm) in first
    assert not first & {id(m) for m in attention_model.encoder.resnet.modules()}
    every = [id(m) for _, modules in steps for m in modules]
    owners = [m for m in attention_model.modules() if any(True for _ in m.parameters(recurse=False))]
    assert sorted(every) == sorted(id(m) for m in owners)               # each parameter once


def test_cascade_randomises_cumulatively_and_leaves_the_model_alone(show_tell_model):
    before = {k: v.clone() for k, v in show_tell_model.state_dict().items()}
    changed = []
    for _, randomised in cascading_models(show_tell_model, seed=0):
        state = randomised.state_dict()
        changed.append({k for k in before if k.endswith("weight") and not torch.equal(state[k], before[k])})
    assert all(a < b for a, b in zip(changed, changed[1:]))            # each step adds to the last
    assert "decoder.fc.weight" in changed[0] and "encoder.resnet.stem.1.weight" not in changed[0]
    assert "encoder.resnet.stem.1.weight" in changed[-1]
    for key, value in show_tell_model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_similarity_equals_scipy_and_skimage():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 32, 32)), rng.random((3, 32, 32))
    b[0] = a[0] * 2 + 1                                                # same ranks
    rho, ssim = map_similarity(a, b, size=32)
    for i in range(3):
        assert rho[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel()).statistic, abs=1e-6)
        na, nb = [(x - x.min()) / (x.max() - x.min()) for x in (a[i], b[i])]
        assert ssim[i] == pytest.approx(structural_similarity(na, nb, data_range=1.0), abs=1e-6)
    assert rho[0] == pytest.approx(1.0) and ssim[0] == pytest.approx(1.0)


@dataclass(frozen=True, kw_only=True)
class NoSettings(MethodSettings):
    pass


def image_only(contexts, settings) -> list[MethodMaps]:
    """A 'method' that never looks at the model: the image's brightness, for every word."""
    out = []
    for ctx in contexts:
        brightness = ctx.image.astype(np.float32).mean(2)
        maps = np.repeat(brightness[None], ctx.num_words, 0)
        out.append(MethodMaps(method="brightness", maps=maps, raw=maps, settings=settings))
    return out


def test_a_map_of_the_image_alone_fails_and_gradcam_passes(monkeypatch, attention_model, image, caption):
    monkeypatch.setitem(METHODS, "brightness", Method("brightness", "brightness", 9, False, False, "image only",
                                                      NoSettings, image_only))
    rng = np.random.default_rng(1)
    images = [image, rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)]
    result = sanity_check(attention_model, images, [caption, "a blue square"], ["brightness", "gradcam", "eigencam"])
    brightness = result["brightness"]
    assert [step.spearman for step in brightness.layers] == pytest.approx([1.0] * 5)
    assert [step.ssim for step in brightness.layers] == pytest.approx([1.0] * 5)
    assert brightness.verdict == "fail" and str(PASS_BELOW) in brightness.rule
    assert brightness.failed_at == "decoder and head"
    gradcam = result["gradcam"]
    assert gradcam.layers[-1].spearman < PASS_BELOW and gradcam.verdict == "pass" and gradcam.failed_at is None
    assert [step.required for step in gradcam.layers] == [True, False, False, False, True]


def test_a_map_of_the_trunk_alone_fails_at_the_decoder_step_though_the_trunk_changes_it(attention_model, image,
                                                                                          caption):
    """EigenCAM reads the trunk's activations only: randomising the decoder leaves it as it was (it cannot
    tell which word it explains), randomising the trunk changes it. The first required step fails it."""
    rng = np.random.default_rng(2)
    images = [image, rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)]
    eigencam = sanity_check(attention_model, images, [caption, "a blue square"], ["eigencam"])["eigencam"]
    assert eigencam.layers[0].spearman == pytest.approx(1.0)
    assert eigencam.layers[-1].spearman < 0.8                              # the trunk's randomisation changes it
    assert (eigencam.verdict, eigencam.failed_at) == ("fail", "decoder and head")
