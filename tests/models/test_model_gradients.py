"""Gradients of a word's score reach the encoder with the model in eval mode (what every gradient
explanation needs), and they are the true derivative: checked against a finite difference."""
from __future__ import annotations

import torch

from captionlens.models.rnn import EvalGradLSTM


def _word_score(model, images, caption, position):
    hidden, _ = model.teacher_forced_hidden(model.encode(images), caption)
    return model.output_logits(hidden)[0, position].log_softmax(-1)[caption[0, position + 1]]


def test_word_score_gradient_reaches_the_last_conv_block_in_eval_mode(kind, make_model, vocab):
    model = make_model(kind)
    assert not model.training
    caption = torch.tensor([[vocab.start_idx, 5, 9, 7, vocab.end_idx]])
    _word_score(model, torch.randn(1, 3, 32, 32), caption, 2).backward()
    last_block = model.encoder.resnet[-2]
    grads = [p.grad for p in last_block.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert model.decoder.embed.weight.grad[9].abs().sum() > 0   # the word before the scored one


def test_eval_mode_gradient_equals_finite_difference(kind, make_model, vocab):
    model = make_model(kind).double()
    caption = torch.tensor([[vocab.start_idx, 5, 9, 7, vocab.end_idx]])
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    _word_score(model, images, caption, 3).backward()
    direction = torch.randn_like(images)
    eps = 1e-6
    with torch.no_grad():
        numeric = (_word_score(model, images + eps * direction, caption, 3)
                   - _word_score(model, images - eps * direction, caption, 3)) / (2 * eps)
    analytic = (images.grad * direction).sum()
    assert float(numeric) != 0.0
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-8)


def test_show_tell_lstm_is_the_eval_differentiable_one(make_model):
    """On CUDA plain nn.LSTM cannot backward in eval mode (cuDNN); EvalGradLSTM switches cuDNN off
    for those graphs. On CPU both run the same kernel, so here we check the model uses it at all."""
    assert isinstance(make_model("show-tell").decoder.lstm, EvalGradLSTM)
