"""The attention decoder's written-out backward (`word_feature_grads`) against autograd, one word at a
time, and its step (LSTM gates written out) against `nn.LSTMCell` itself."""
from __future__ import annotations

import pytest
import torch

from captionlens.models import ShowAttendTellModel


def _autograd_grad(model, features, captions, word, score):
    """d score_word / d features of one image by autograd through the model's teacher-forced pass."""
    leaf = features.clone().requires_grad_()
    logits, _ = model.teacher_forced(leaf, captions)
    if score == "log_prob":
        logits = logits.log_softmax(-1)
    return torch.autograd.grad(logits[0, word, captions[0, word + 1]], leaf)[0][0]


@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_word_feature_grads_equal_autograd_per_word(make_model, score):
    model = make_model("show-attend-tell").double()
    torch.manual_seed(0)
    features = torch.randn(3, 9, model.encoder.channels, dtype=torch.float64)
    captions = torch.randint(4, 24, (3, 8))
    lengths = [6, 2, 4]                                    # padded rows past each length must stay zero
    grads = model.word_feature_grads(features, captions, lengths, score)
    assert grads.shape == (3, 6, 9, model.encoder.channels)
    for b, n in enumerate(lengths):
        for t in range(6):
            if t >= n:
                assert not grads[b, t].any()
                continue
            expected = _autograd_grad(model, features[b:b + 1], captions[b:b + 1], t, score)
            assert expected.abs().max() > 0
            torch.testing.assert_close(grads[b, t], expected, rtol=1e-9, atol=1e-12)


def test_word_feature_grads_refuse_an_unknown_score(make_model):
    model = make_model("show-attend-tell")
    with pytest.raises(ValueError, match="score must be 'log_prob' or 'logit', got 'prob'"):
        model.word_feature_grads(torch.zeros(1, 9, model.encoder.channels), torch.zeros(1, 3, dtype=torch.long),
                                 [2], "prob")


def test_word_feature_grads_refuse_training_mode(make_model):
    model = make_model("show-attend-tell").train()
    with pytest.raises(RuntimeError, match="needs the model in eval mode"):
        model.word_feature_grads(torch.zeros(1, 9, model.encoder.channels), torch.zeros(1, 3, dtype=torch.long), [2])


def test_step_equals_lstm_cell(make_model):
    model: ShowAttendTellModel = make_model("show-attend-tell")
    torch.manual_seed(1)
    state = model.init_state(torch.randn(2, 9, model.encoder.channels))
    tokens = torch.tensor([5, 7])
    parts = model._step_parts(tokens, state)
    d = model.decoder
    cell_h, cell_c = d.lstm(torch.cat([d.embed(tokens), parts.gate * parts.context], 1), state[:2])
    torch.testing.assert_close(parts.h, cell_h)
    torch.testing.assert_close(parts.c, cell_c)
    (h, c, *_), alpha = model._advance(tokens, state)          # the step training and decoding take
    torch.testing.assert_close(parts.h, h)
    torch.testing.assert_close(parts.alpha, alpha)
    torch.testing.assert_close(parts.alpha.sum(1), torch.ones(2))
