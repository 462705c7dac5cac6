"""Contrastive targets ("why this word and not the foil?"): the score is log p(word) - log p(foil), equal to
the logit difference; every gradient route of every model variant equals plain autograd of that difference
word by word (the Show-Attend-Tell written-out backward included); Grad-CAM and occlusion equal Captum's
on the difference; every registered method equals itself run on a model whose logits have the foil's
subtracted (an oracle that never sees a contrast); the contrast is recorded in explanation files, files
without it still load; bad contrasts are refused naming the position or word; long methods report
progress and stop when the progress callback raises."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam, Occlusion
from PIL import Image
from torch import nn

from captionlens.explain import explain, explain_batch
from captionlens.explain.attention_backward import attention_feature_grads
from captionlens.explain.contrast import Foil
from captionlens.explain.gradients import gradient_route, word_gradients
from captionlens.explain.registry import runnable_methods
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.scoring import NO_FOIL, caption_tensor, padded_captions, scores_from_features
from captionlens.explain.target import TargetLayer
from zoo import GRADIENT_VARIANTS, VARIANT_VOCAB, autograd_word_grads, gradient_variant

CAPTIONS = [[5, 9, 7, 11, 6], [8, 4], [13, 13, 10]]
FOILS = [[17, NO_FOIL, 4, NO_FOIL, 19], [NO_FOIL, 12], [NO_FOIL, NO_FOIL, NO_FOIL]]   # mixed; image 2 has none
MODELS = ("show_tell_model", "attention_model")
CAPTION = "a red circle above the blue square"


def _pairs(captions, foils) -> torch.Tensor:
    """(B, max T, 2) (word, foil) targets, padded as `padded_targets` pads them."""
    width = max(len(c) for c in captions)
    return torch.tensor([[[w, f] for w, f in zip(c, fs)] + [[VARIANT_VOCAB.pad_idx, NO_FOIL]] * (width - len(c))
                         for c, fs in zip(captions, foils)])


def _difference(log_probs: torch.Tensor, word: int, foil: int) -> torch.Tensor:
    return log_probs[word] - (log_probs[foil] if foil != NO_FOIL else 0.0)


def test_the_score_is_the_log_prob_difference_which_is_the_logit_difference():
    model = gradient_variant("show-attend-tell, tanh")
    torch.manual_seed(1)
    features = model.encode(torch.randn(3, 3, 32, 32, dtype=torch.float64))
    captions, pairs = padded_captions(CAPTIONS, VARIANT_VOCAB), _pairs(CAPTIONS, FOILS)
    with torch.no_grad():
        by_log_prob = scores_from_features(model, features, captions, "log_prob", pairs)
        by_logit = scores_from_features(model, features, captions, "logit", pairs)
        own = scores_from_features(model, features, captions, "log_prob")
        hidden, _ = model.teacher_forced_hidden(features, captions)
        logits = model.output_logits(hidden)
    for b, (caption, foils) in enumerate(zip(CAPTIONS, FOILS)):
        for t, (word, foil) in enumerate(zip(caption, foils)):
            log_probs = logits[b, t].log_softmax(-1)
            expected = _difference(log_probs, word, foil)
            assert by_log_prob[b, t] == pytest.approx(float(expected), abs=1e-12)
            if foil == NO_FOIL:                           # no foil: the word's own score, untouched
                assert by_log_prob[b, t] == pytest.approx(float(own[b, t]), abs=1e-12)
            else:                                         # the normaliser cancels: the logits' difference
                assert by_logit[b, t] == pytest.approx(float(logits[b, t, word] - logits[b, t, foil]), abs=1e-12)
                assert by_logit[b, t] == pytest.approx(float(by_log_prob[b, t]), abs=1e-10)
                assert abs(float(expected - log_probs[word])) > 1e-3      # and it is not the word's own score


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS)
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_every_route_equals_autograd_of_the_difference(variant, score):
    model = gradient_variant(variant)
    target = TargetLayer(model)
    torch.manual_seed(2)
    with torch.no_grad():
        activations = target.lower(torch.randn(3, 3, 32, 32, dtype=torch.float64))
    captions, pairs = padded_captions(CAPTIONS, VARIANT_VOCAB), _pairs(CAPTIONS, FOILS)
    lengths = [len(c) for c in CAPTIONS]
    expected = autograd_word_grads(model, target, activations, captions, lengths, score, foils=pairs[..., 1])
    own = torch.cat([g.expand_as(a) for a, g in word_gradients(model, target, activations, captions, lengths, score)])
    contrasted = [r for r, (b, t) in enumerate((b, t) for b, n in enumerate(lengths) for t in range(n))
                  if FOILS[b][t] != NO_FOIL]
    assert (expected[contrasted] - own[contrasted]).abs().amax((1, 2, 3)).min() > 1e-6   # the foil changes them
    preferred = gradient_route(model, target)
    for route in {preferred, "replicated"}:
        chunks = word_gradients(model, target, activations, captions, lengths, score, max_batch=4,
                                shortcut=route != "replicated", targets=pairs)
        grads = torch.cat([g.expand_as(a) for a, g in chunks])
        torch.testing.assert_close(grads, expected, rtol=1e-9, atol=1e-12, msg=f"{variant}, route {route}")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_the_written_out_backward_takes_the_foil_at_its_output(activation, score):
    """Show-Attend-Tell's reverse sweep: the output cotangent at a contrasted position is
    fc.weight[word] - fc.weight[foil]; d score_t / d annotations equals autograd word by word."""
    model = gradient_variant(f"show-attend-tell, {activation}")
    torch.manual_seed(0)
    features = torch.randn(3, 9, model.encoder.channels, dtype=torch.float64)
    captions, pairs = padded_captions(CAPTIONS, VARIANT_VOCAB), _pairs(CAPTIONS, FOILS)
    lengths = [len(c) for c in CAPTIONS]
    grads = attention_feature_grads(model, features, captions, lengths, score, pairs)
    for b, n in enumerate(lengths):
        for t in range(n):
            leaf = features[b:b + 1].clone().requires_grad_()
            hidden, _ = model.teacher_forced_hidden(leaf, captions[b:b + 1])
            logits = model.output_logits(hidden)[0, t]
            word, foil = (int(v) for v in pairs[b, t])
            value = (_difference(logits.log_softmax(-1), word, foil) if score == "log_prob" or foil != NO_FOIL
                     else logits[word])
            torch.testing.assert_close(grads[b, t], torch.autograd.grad(value, leaf)[0][0], rtol=1e-9, atol=1e-12)


class DifferenceScores(nn.Module):
    """Image tensor -> (B, T) log p(word_t) - log p(foil_t) of one caption, written out independently."""

    def __init__(self, model: nn.Module, captions: torch.Tensor, foils: dict[int, int]) -> None:
        super().__init__()
        self.model, self.captions, self.foils = model, captions, foils

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captions = self.captions.expand(len(x), -1)
        hidden, _ = self.model.teacher_forced_hidden(self.model.encode(x), captions)
        log_probs = self.model.output_logits(hidden).log_softmax(-1)[:, :-1]
        own = log_probs.gather(-1, captions[:, 1:-1, None])[..., 0]
        return torch.stack([own[:, t] - log_probs[:, t, self.foils[t]] if t in self.foils else own[:, t]
                            for t in range(own.size(1))], 1)


def _setup(model, vocab, image):
    x = model.preprocessing.transform(Image.fromarray(image)).unsqueeze(0)
    captions = caption_tensor(vocab.encode(CAPTION, add_special=False), vocab)
    return x, captions


@pytest.mark.parametrize("model_name", MODELS)
def test_gradcam_equals_captums_layer_gradcam_on_the_difference(model_name, request, vocab, image):
    model = request.getfixturevalue(model_name)
    contrast = {1: "blue", 5: "red", 6: "triangle"}
    expl = explain(model, image, ("gradcam",), caption=CAPTION, contrast=contrast)
    plain = explain(model, image, ("gradcam",), caption=CAPTION)
    x, captions = _setup(model, vocab, image)
    captum = LayerGradCam(DifferenceScores(model, captions, {t: vocab(w) for t, w in contrast.items()}),
                          model.encoder.resnet[-2])
    for t in range(len(expl.tokens)):
        expected = captum.attribute(x, target=t, relu_attributions=True)[0, 0].detach().numpy()
        assert np.abs(expected).max() > 0
        assert np.abs(expl["gradcam"].raw[t] - expected).max() <= 1e-4 * np.abs(expected).max()
        changed = not np.allclose(expl["gradcam"].raw[t], plain["gradcam"].raw[t], rtol=1e-3, atol=1e-7)
        assert changed == (t in contrast), t


@pytest.mark.parametrize("model_name", MODELS)
def test_occlusion_equals_captums_occlusion_on_the_difference(model_name, request, vocab, image):
    model = request.getfixturevalue(model_name)
    contrast = {2: "square", 4: "a"}
    expl = explain(model, image, ("occlusion",), caption=CAPTION, contrast=contrast,
                   settings={"occlusion": {"window": 20, "stride": 12, "fill": 0}})
    x, captions = _setup(model, vocab, image)
    baseline = ((torch.zeros(3) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    baseline = baseline.view(1, 3, 1, 1).expand_as(x).contiguous()
    captum = Occlusion(DifferenceScores(model, captions, {t: vocab(w) for t, w in contrast.items()}))
    for t in (1, 2, 4):
        expected = captum.attribute(x, sliding_window_shapes=(3, 20, 20), strides=(3, 12, 12), baselines=baseline,
                                    target=t, perturbations_per_eval=64)
        assert float(expected.abs().max()) > 1e-4
        np.testing.assert_allclose(expl["occlusion"].raw[t], expected[0, 0].numpy(), atol=2e-5)


def _foil_subtracted(model: nn.Module, foil: int) -> nn.Module:
    """The same model whose logits have the foil's logit subtracted: its raw logit of any word is
    logit(word) - logit(foil), with no contrast anywhere in the code that explains it."""
    class FoilSubtracted(type(model)):
        def output_logits(self, hidden):
            logits = super().output_logits(hidden)
            return logits - logits[..., foil:foil + 1]

    shifted = copy.deepcopy(model)
    shifted.__class__ = FoilSubtracted
    return shifted


@pytest.mark.parametrize("model_name", MODELS)
def test_every_method_explains_the_difference(model_name, request, vocab, image):
    """Every registered method the model runs, with the same foil at every position, equals that method
    on the model whose logits have the foil's subtracted, explaining raw logits without a contrast."""
    model = request.getfixturevalue(model_name)
    foil = "green"                                   # in no position of the caption
    methods = runnable_methods(model)
    settings = {"lime": {"num_samples": 64}, "occlusion": {"window": 16, "stride": 16}}
    contrast = {t: foil for t in range(len(CAPTION.split()))}
    ours = explain(model, image, methods, caption=CAPTION, contrast=contrast, settings=settings)
    oracle = explain(_foil_subtracted(model, vocab(foil)), image, methods, caption=CAPTION, score="logit",
                     settings=settings)
    for name in methods:
        expected = oracle[name].raw
        assert np.abs(ours[name].raw - expected).max() <= 1e-3 * max(np.abs(expected).max(), 1e-6), name


def test_the_contrast_is_recorded_saved_and_loaded(attention_model, image, tmp_path):
    expl = explain(attention_model, image, ("gradcam",), caption=CAPTION, contrast={1: "blue"})
    assert expl.contrast == (Foil(1, "blue", attention_model.vocab("blue")),)
    expl.save(tmp_path / "contrasted")
    assert CaptionExplanation.load(tmp_path / "contrasted").contrast == expl.contrast
    plain = explain(attention_model, image, ("gradcam",), caption=CAPTION)
    assert plain.contrast == ()
    plain.save(tmp_path / "plain")
    meta = json.loads((tmp_path / "plain.json").read_text())
    del meta["contrast"]                               # a file written before contrasts existed
    (tmp_path / "plain.json").write_text(json.dumps(meta))
    assert CaptionExplanation.load(tmp_path / "plain").contrast == ()


def test_a_generated_caption_takes_a_contrast_and_a_batch_one_per_image(attention_model, image):
    generated = explain(attention_model, image, ("gradcam",), beam_size=2, max_length=6)
    assert generated.tokens
    first = generated.tokens[0]
    foil = next(w for w in ("red", "blue") if w != first)
    contrasted = explain(attention_model, image, ("gradcam",), beam_size=2, max_length=6, contrast={0: foil})
    assert contrasted.tokens == generated.tokens and contrasted.contrast[0].word == foil
    batch = explain_batch(attention_model, [image, image], ("gradcam",), captions=[CAPTION, CAPTION],
                          contrasts=[None, {1: "blue"}])
    np.testing.assert_allclose(batch[0]["gradcam"].raw, explain(attention_model, image, ("gradcam",),
                                                                caption=CAPTION)["gradcam"].raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(batch[1]["gradcam"].raw, explain(attention_model, image, ("gradcam",), caption=CAPTION,
                                                                contrast={1: "blue"})["gradcam"].raw,
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("contrast, match", [
    ({7: "red"}, "contrast position 7 is past the caption's last word"),
    ({1: "yellow"}, "contrast foil 'yellow' .position 1. is not a word of the model's vocabulary"),
    ({1: "red"}, "contrast foil 'red' is the word at position 1 itself"),
    ({1: "<START>"}, "is not a word of the model's vocabulary"),
    ({-1: "red"}, "contrast position must be an integer >= 0"),
    ({"1": "red"}, "contrast position must be an integer >= 0"),
    ({1: 5}, "contrast foil at position 1 must be a word"),
    ([(1, "red")], "contrast must map word positions to foil words"),
])
def test_a_bad_contrast_is_refused_naming_what_is_wrong(attention_model, image, contrast, match):
    with pytest.raises(ValueError, match=match):
        explain(attention_model, image, ("gradcam",), caption=CAPTION, contrast=contrast)


def test_long_methods_report_progress_and_stop_when_it_raises(show_tell_model, image):
    seen = []
    explain(show_tell_model, image, ("gradcam", "lime", "occlusion"), caption=CAPTION,
            settings={"lime": {"num_samples": 120, "batch_size": 50}, "occlusion": {"window": 32, "stride": 16}},
            progress=lambda method, done, total: seen.append((method, done, total)))
    assert [s for s in seen if s[0] == "lime"] == [("lime", 50, 120), ("lime", 100, 120), ("lime", 120, 120)]
    occlusion = [s for s in seen if s[0] == "occlusion"]
    assert occlusion[-1] == ("occlusion", 9, 9) and {s[0] for s in seen} == {"lime", "occlusion"}

    class Stop(Exception):
        pass

    def stop(method, done, total):
        raise Stop(f"{method} {done}/{total}")

    with pytest.raises(Stop, match="lime 50/120"):
        explain(show_tell_model, image, ("lime",), caption=CAPTION, progress=stop,
                settings={"lime": {"num_samples": 120, "batch_size": 50}})
