"""explain(): the per-word log-probabilities it reports are the teacher-forced ones, for the model's own
caption (taken from decoding) and for a given caption alike."""
import numpy as np
import pytest
import torch
from PIL import Image

from captionlens.explain import explain, explain_batch
from captionlens.explain.scoring import caption_tensor


def _teacher_forced(model, image, ids):
    tensor = model.preprocessing.transform(Image.fromarray(image)).unsqueeze(0)
    captions = caption_tensor(ids, model.vocab)
    with torch.no_grad():
        hidden, _ = model.teacher_forced_hidden(model.encode(tensor), captions)
        log_probs = model.output_logits(hidden).log_softmax(-1)[0].gather(-1, captions[0, 1:, None])[:, 0]
    return log_probs[:-1].numpy()  # the <END> position is not a word


@pytest.mark.parametrize("model_name", ["show_tell_model", "attention_model"])
@pytest.mark.parametrize("given", [False, True])
def test_reported_log_probs_equal_teacher_forcing(request, model_name, given, image, caption):
    model = request.getfixturevalue(model_name)
    expl = explain(model, image, methods=(), caption=caption if given else None, beam_size=3, max_length=8)
    assert expl.tokens, "the caption explained must have words"
    np.testing.assert_allclose(expl.log_probs, _teacher_forced(model, image, expl.token_ids), atol=1e-4)
    if given:
        assert expl.caption == caption


def test_one_batched_pass_across_images_equals_each_image_alone(attention_model, image):
    rng = np.random.default_rng(5)
    images = [image, *(rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in ((40, 56), (64, 64)))]
    captions = ["a red circle above the blue square", "left", "the small green triangle"]   # padded to the longest
    methods = ("gradcam", "gradcam++", "attention")
    together = explain_batch(attention_model, images, methods, captions=captions,
                             settings={"gradcam": {"max_batch": 4}})
    for img, caption, batched in zip(images, captions, together):
        alone = explain(attention_model, img, methods, caption=caption)
        for name in methods:
            np.testing.assert_allclose(batched[name].raw, alone[name].raw, rtol=1e-4, atol=1e-7)
            np.testing.assert_allclose(batched[name].maps, alone[name].maps, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("model_name", ["show_tell_model", "attention_model"])
@pytest.mark.parametrize("method", ["gradcam", "hirescam", "integrated-gradients", "occlusion", "lime"])
def test_a_target_word_is_explained_as_the_last_word_of_its_prefix(model_name, method, request, image, caption):
    """targets: position t explains another word after the caption's own words before t, which is what
    explaining the caption cut at t, with that word last, gives at its last position."""
    model = request.getfixturevalue(model_name)
    words = caption.split()
    targets = list(words)
    targets[2], targets[5] = "square", "red"
    settings = {"lime": {"num_samples": 30}, "occlusion": {"window": 16, "stride": 8}}
    swapped = explain_batch(model, [image], (method,), captions=[caption], targets=[targets], settings=settings)[0]
    assert swapped.targets == targets and swapped.tokens == words
    for t in (2, 5):
        cut = explain(model, image, (method,), caption=" ".join(words[:t] + [targets[t]]), settings=settings)
        np.testing.assert_allclose(swapped[method].raw[t], cut[method].raw[t], rtol=1e-4,
                                   atol=1e-5 * np.abs(cut[method].raw[t]).max() + 1e-9)
    same = explain(model, image, (method,), caption=caption, settings=settings)
    np.testing.assert_allclose(swapped[method].raw[0], same[method].raw[0], rtol=1e-4, atol=1e-7)  # own word kept
    with pytest.raises(ValueError, match="target words not in the model's vocabulary: zebra"):
        explain_batch(model, [image], (method,), captions=[caption], targets=[["zebra"] * len(words)])
