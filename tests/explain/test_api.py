"""explain(): the per-word log-probabilities it reports are the teacher-forced ones, for the model's own
caption (taken from decoding) and for a given caption alike."""
import numpy as np
import pytest
import torch
from PIL import Image

from captionlens.explain import explain
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
