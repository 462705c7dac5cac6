"""Grad-CAM / Grad-CAM++ per word against pytorch-grad-cam, Captum and a brute-force backward-per-word loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from captionlens.explain.api import explain, explain_batch
from captionlens.explain.gradcam import (
    GradCamSettings,
    gradcam_cam,
    gradcam_plus_plus_cam,
    hirescam_cam,
    layercam_cam,
    word_cams,
    xgradcam_cam,
)
from captionlens.explain.gradients import word_gradients
from captionlens.explain.maps import normalize_maps
from captionlens.explain.result import CaptionExplanation, Decoding
from captionlens.explain.scoring import caption_tensor, padded_captions, scores_from_features
from captionlens.explain.target import TargetLayer

MODELS = ("show_tell_model", "attention_model")
CAMS = {"gradcam": gradcam_cam, "gradcam++": gradcam_plus_plus_cam, "hirescam": hirescam_cam,
        "layercam": layercam_cam, "xgradcam": xgradcam_cam}
ORACLES = {"hirescam": HiResCAM, "layercam": LayerCAM, "xgradcam": XGradCAM}   # pytorch-grad-cam's classes
WORDS = (0, 3, 6)


class WordScores(nn.Module):
    """Image tensor -> (B, T) teacher-forced scores of one fixed caption: a 'classifier' over word positions."""

    def __init__(self, model: nn.Module, captions: torch.Tensor, score: str) -> None:
        super().__init__()
        self.model, self.captions, self.score = model, captions, score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scores_from_features(self.model, self.model.encode(x), self.captions, self.score)


def setup(model, vocab, image, caption):
    x = model.preprocessing.transform(Image.fromarray(image)).unsqueeze(0)
    ids = vocab.encode(caption, add_special=False)
    return x, ids, caption_tensor(ids, vocab)


def ours(model, x, captions, n_words, kind="gradcam", score="log_prob", shortcut=True) -> np.ndarray:
    target = TargetLayer(model)
    with torch.no_grad():
        activations = target.lower(x)
    return word_cams(model, target, activations, captions, [n_words], CAMS[kind], score,
                     shortcut=shortcut)[0].numpy()


def batch_cams(model, images, captions, vocab, kind="gradcam", max_batch=256) -> list[np.ndarray]:
    """Raw CAMs of several images' word-id captions from one `word_cams` pass across the images."""
    target = TargetLayer(model)
    with torch.no_grad():
        activations = target.lower(images)
    cams = word_cams(model, target, activations, padded_captions(captions, vocab), [len(c) for c in captions],
                     CAMS[kind], max_batch=max_batch)
    return [cam.numpy() for cam in cams]


def pgc_scale(cam: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image min-max step (eps 1e-7), which its forward applies twice."""
    for _ in range(2):
        cam = cam - cam.min()
        cam = cam / (1e-7 + cam.max())
    return cam


def pgc_at_layer_resolution(cam_class, hw):
    """The pytorch-grad-cam class with its resize target set to the layer's own h x w. cv2.resize to the
    same size is an exact copy, so the output is the layer-resolution CAM after its min-max scaling only."""
    class AtLayer(cam_class):
        def get_target_width_height(self, input_tensor):
            return hw[1], hw[0]
    return AtLayer


def assert_close(actual: np.ndarray, expected: np.ndarray, rel: float = 1e-4) -> None:
    assert np.abs(expected).max() > 0
    assert np.abs(actual - expected).max() <= rel * np.abs(expected).max()


def brute_force_gradcam(model, x, captions, n_words, score="log_prob") -> np.ndarray:
    """The seed notebook's algorithm: a full forward and a backward per word, gradient hooked at the layer."""
    store = {}

    def hook(module, inputs, output):
        store["act"] = output.detach()
        output.register_hook(lambda grad: store.__setitem__("grad", grad))

    handle = model.encoder.resnet[-2].register_forward_hook(hook)
    cams = []
    try:
        for t in range(n_words):
            model.zero_grad()
            word_score = scores_from_features(model, model.encode(x), captions, score)[0, t]
            word_score.backward()
            weights = store["grad"].mean((2, 3), keepdim=True)
            cams.append((weights * store["act"]).sum(1).clamp(min=0)[0])
    finally:
        handle.remove()
    return torch.stack(cams).numpy()


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_gradcam_equals_pytorch_grad_cam_and_captum(model_name, score, request, vocab, image, caption):
    model = request.getfixturevalue(model_name)
    x, ids, captions = setup(model, vocab, image, caption)
    mine = ours(model, x, captions, len(ids), "gradcam", score)
    layer = model.encoder.resnet[-2]
    wrapper = WordScores(model, captions, score)
    captum = LayerGradCam(wrapper, layer)
    with pgc_at_layer_resolution(GradCAM, mine.shape[1:])(wrapper, [layer]) as cam:
        for t in WORDS:
            expected = captum.attribute(x, target=t, relu_attributions=True)[0, 0].detach().numpy()
            assert_close(mine[t], expected)
            assert_close(pgc_scale(mine[t]), cam(x, [ClassifierOutputTarget(t)])[0])


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize(("score", "gain"), [("log_prob", 1.0), ("logit", 1e3)])
def test_gradcam_plus_plus_equals_pytorch_grad_cam(model_name, score, gain, request, vocab, image, caption):
    """gain 1: gradients ~1e-5, so the closed form's eps (1e-6) dominates g^2; gain 1e3 scales the logits
    (and so the gradients) until the 2 g^2 and sum(A) g^3 terms dominate instead: both regimes checked."""
    model = request.getfixturevalue(model_name)
    with torch.no_grad():
        model.decoder.fc.weight.mul_(gain)
        model.decoder.fc.bias.mul_(gain)
    x, ids, captions = setup(model, vocab, image, caption)
    mine = ours(model, x, captions, len(ids), "gradcam++", score)
    layer = model.encoder.resnet[-2]
    with pgc_at_layer_resolution(GradCAMPlusPlus, mine.shape[1:])(WordScores(model, captions, score), [layer]) as cam:
        for t in WORDS:
            assert_close(pgc_scale(mine[t]), cam(x, [ClassifierOutputTarget(t)])[0])


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("kind", sorted(ORACLES))
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_element_wise_and_normalised_cams_equal_pytorch_grad_cam(model_name, kind, score, request, vocab, image,
                                                                  caption):
    model = request.getfixturevalue(model_name)
    x, ids, captions = setup(model, vocab, image, caption)
    mine = ours(model, x, captions, len(ids), kind, score)
    layer = model.encoder.resnet[-2]
    with pgc_at_layer_resolution(ORACLES[kind], mine.shape[1:])(WordScores(model, captions, score), [layer]) as cam:
        for t in WORDS:
            assert_close(pgc_scale(mine[t]), cam(x, [ClassifierOutputTarget(t)])[0])


@pytest.mark.parametrize("model_name", MODELS)
def test_eigencam_is_pytorch_grad_cams_and_the_same_map_for_every_word(model_name, request, vocab, image, caption):
    model = request.getfixturevalue(model_name)
    x, ids, captions = setup(model, vocab, image, caption)
    mine = explain(model, image, methods=("eigencam",), caption=caption)["eigencam"].raw
    assert mine.shape[0] == len(ids) and all(np.array_equal(m, mine[0]) for m in mine)   # word-independent
    layer = model.encoder.resnet[-2]
    with pgc_at_layer_resolution(EigenCAM, mine.shape[1:])(WordScores(model, captions, "log_prob"), [layer]) as cam:
        assert_close(pgc_scale(mine[0]), cam(x, [ClassifierOutputTarget(0)])[0])


@pytest.mark.parametrize("model_name", MODELS)
def test_one_pass_equals_backward_per_word(model_name, request, vocab, image, caption):
    model = request.getfixturevalue(model_name)
    x, ids, captions = setup(model, vocab, image, caption)
    expected = brute_force_gradcam(model, x, captions, len(ids))
    assert_close(ours(model, x, captions, len(ids)), expected)
    assert_close(ours(model, x, captions, len(ids), shortcut=False), expected)


@pytest.mark.parametrize("kind", sorted(CAMS))
def test_pooled_shortcut_equals_spatial_leaf(kind, show_tell_model, vocab, image, caption):
    x, ids, captions = setup(show_tell_model, vocab, image, caption)
    assert_close(ours(show_tell_model, x, captions, len(ids), kind, shortcut=True),
                 ours(show_tell_model, x, captions, len(ids), kind, shortcut=False))


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("kind", sorted(CAMS))
def test_batch_over_images_equals_per_image(model_name, kind, request, vocab):
    model = request.getfixturevalue(model_name)
    torch.manual_seed(3)
    images = torch.randn(3, 3, 64, 64)
    captions = [vocab.encode(c, add_special=False)
                for c in ("a red circle", "the small blue square above a green triangle", "left")]
    batched = batch_cams(model, images, captions, vocab, kind, max_batch=4)  # chunks split across images
    for i, ids in enumerate(captions):
        alone = ours(model, images[i:i + 1], caption_tensor(ids, vocab), len(ids), kind)
        assert batched[i].shape == (len(ids), 8, 8)
        assert_close(batched[i], alone)


def test_padded_captions_pad_after_end(vocab):
    rows = padded_captions([[5, 6, 7], [8]], vocab)
    assert rows.tolist() == [[vocab.start_idx, 5, 6, 7, vocab.end_idx],
                             [vocab.start_idx, 8, vocab.end_idx, vocab.pad_idx, vocab.pad_idx]]


@pytest.mark.parametrize("model_name", MODELS)
def test_gradient_flows_in_eval_mode(model_name, request, image, caption):
    model = request.getfixturevalue(model_name)
    result = explain(model, image, methods=("gradcam", "gradcam++"), caption=caption)
    assert not model.training
    for name in ("gradcam", "gradcam++"):
        assert (result[name].raw.reshape(len(result.tokens), -1).max(1) > 0).all()


@pytest.mark.parametrize("model_name", MODELS)
def test_zero_gradient_gives_zeros_not_nan(model_name, request, image, caption):
    model = request.getfixturevalue(model_name)
    with torch.no_grad():  # every logit 0: every word's score is constant in the image
        model.decoder.fc.weight.zero_()
        model.decoder.fc.bias.zero_()
    result = explain(model, image, methods=("gradcam", "gradcam++"), caption=caption)
    for name in ("gradcam", "gradcam++"):
        assert np.array_equal(result[name].maps, np.zeros_like(result[name].maps))
        assert np.array_equal(normalize_maps(result[name].maps), result[name].maps)


@pytest.mark.parametrize("model_name", MODELS)
def test_constant_image_is_finite(model_name, request, caption):
    model = request.getfixturevalue(model_name)
    result = explain(model, np.full((40, 50, 3), 128, np.uint8), methods=("gradcam", "gradcam++"), caption=caption)
    for name in ("gradcam", "gradcam++"):
        assert np.isfinite(normalize_maps(result[name].maps)).all()
        assert (result[name].maps >= 0).all()


def test_explain_end_to_end_save_load(attention_model, image, caption, tmp_path):
    result = explain(attention_model, image, methods=("gradcam", "gradcam++", "attention"), caption=caption)
    n_words = len(caption.split())
    assert result.tokens == caption.split()
    for name in ("gradcam", "gradcam++", "attention"):
        assert result[name].maps.shape == (n_words, 64, 80)
        assert result[name].maps.dtype == np.float32
    assert result["gradcam"].raw.shape == (n_words, 8, 8)
    gradcam = result["gradcam"]
    assert (gradcam.method, gradcam.settings, gradcam.gradient_route) == ("gradcam", GradCamSettings(), "bptt")
    assert gradcam.drawing.placement == "receptive fields" and result.decoding.target_layer == "layer3"
    result.save(tmp_path / "expl")
    loaded = CaptionExplanation.load(tmp_path / "expl")
    for name in ("gradcam", "gradcam++", "attention"):      # float16 raw maps: within 2^-11 of each map's peak
        bound = 2.0 ** -11 * np.abs(result[name].raw).reshape(n_words, -1).max(1)[:, None, None] + 1e-9
        assert (np.abs(loaded[name].maps - result[name].maps) <= bound).all()
        assert (np.abs(loaded[name].raw - result[name].raw) <= bound).all()
    assert np.array_equal(loaded["attention"].extras["alphas"], result["attention"].extras["alphas"])
    for name in ("gradcam", "gradcam++", "attention"):                  # settings and route come back typed
        assert (loaded[name].method, loaded[name].settings, loaded[name].gradient_route) == \
            (result[name].method, result[name].settings, result[name].gradient_route)
    assert loaded.decoding == result.decoding == Decoding("given", "log_prob", "layer3")


def test_settings_record_gradient_route_and_logit_score(show_tell_model, image, caption):
    result = explain(show_tell_model, image, methods=("gradcam",), caption=caption, score="logit",
                     settings={"gradcam": {"max_batch": 2}})
    gradcam = result["gradcam"]
    assert (gradcam.settings, gradcam.gradient_route) == (GradCamSettings(max_batch=2), "pooled")
    assert gradcam.drawing.placement == "receptive fields"
    assert (result.decoding.score, result.decoding.target_layer) == ("logit", "layer3")


def test_earlier_target_layer_equals_captum(show_tell_model, vocab, image, caption):
    """layer2 is followed by layer3 and the pool, so the pooled shortcut must not apply."""
    x, ids, captions = setup(show_tell_model, vocab, image, caption)
    result = explain(show_tell_model, image, methods=("gradcam",), caption=caption, target_layer="layer2")
    assert result.decoding.target_layer == "layer2"
    assert result["gradcam"].gradient_route == "replicated"
    captum = LayerGradCam(WordScores(show_tell_model, captions, "log_prob"), show_tell_model.encoder.resnet.layer2)
    for t in WORDS:
        expected = captum.attribute(x, target=t, relu_attributions=True)[0, 0].detach().numpy()
        assert_close(result["gradcam"].raw[t], expected)


def test_explaining_restores_training_mode(show_tell_model, image, caption):
    expected = explain_batch(show_tell_model, [image], ("gradcam",), captions=[caption])[0]
    show_tell_model.train()
    got = explain_batch(show_tell_model, [image], ("gradcam",), captions=[caption])[0]
    assert show_tell_model.training
    np.testing.assert_array_equal(got["gradcam"].raw, expected["gradcam"].raw)


def test_bad_batch_arguments_are_refused(show_tell_model, image, vocab):
    with pytest.raises(ValueError, match="1 captions given for 2 images"):
        explain_batch(show_tell_model, [image, image], ("gradcam",), captions=["a red circle"])
    target = TargetLayer(show_tell_model)
    with pytest.raises(ValueError, match="max_batch must be >= 1, got 0"):
        word_gradients(show_tell_model, target, torch.zeros(2, 32, 8, 8), padded_captions([[5], [6]], vocab), [1, 1],
                       max_batch=0)
