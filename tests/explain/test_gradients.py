"""Every gradient route on every model variant against plain autograd, word by word: Show-and-Tell with
and without a BatchNorm head, Show-Attend-Tell with tanh and with ReLU attention, and a captioner written
from scratch (examples/custom_captioner.py). Also the written-out attention backward and its recording
cell on their own, which route each model is given, and that a class gets one written-out backward."""
from __future__ import annotations

import inspect

import pytest
import torch

from captionlens.explain.attention_backward import RecordingLSTMCell, attention_feature_grads
from captionlens.explain.gradients import _WRITTEN_OUT, gradient_route, register_feature_gradients, word_gradients
from captionlens.explain.scoring import padded_captions
from captionlens.explain.target import TargetLayer
from captionlens.models import ShowAttendTellModel
from captionlens.registries import origin_of
from zoo import GRADIENT_VARIANTS, VARIANT_VOCAB, autograd_word_grads, gradient_variant

CAPTIONS = [[5, 9, 7, 11, 6], [8, 4], [13, 13, 10]]


def _routes(model, target) -> list[str]:
    preferred = gradient_route(model, target)
    return [preferred] if preferred == "replicated" else [preferred, "replicated"]


@pytest.mark.parametrize("variant", GRADIENT_VARIANTS)
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_every_route_equals_autograd_per_word(variant, score):
    model = gradient_variant(variant)
    target = TargetLayer(model)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        activations = target.lower(images)
    captions = padded_captions(CAPTIONS, VARIANT_VOCAB)
    lengths = [len(c) for c in CAPTIONS]
    expected = autograd_word_grads(model, target, activations, captions, lengths, score)
    assert expected.abs().amax((1, 2, 3)).min() > 0          # every word's gradient is nonzero
    for route in _routes(model, target):
        chunks = word_gradients(model, target, activations, captions, lengths, score, max_batch=4,
                                shortcut=route != "replicated")
        grads = torch.cat([g.expand_as(a) for a, g in chunks])
        torch.testing.assert_close(grads, expected, rtol=1e-9, atol=1e-12, msg=f"{variant}, route {route}")


def test_each_variant_gets_the_route_it_supports():
    expected = {"show-tell": "pooled", "show-tell, batch-norm head": "pooled", "show-attend-tell, tanh": "bptt",
                "show-attend-tell, relu": "bptt", "custom GRU captioner": "replicated"}
    for variant, route in expected.items():
        model = gradient_variant(variant)
        assert gradient_route(model, TargetLayer(model)) == route, variant
    show_tell = gradient_variant("show-tell")
    assert gradient_route(show_tell, TargetLayer(show_tell, "layer2")) == "replicated"  # layer3 lies between


def test_a_subclass_does_not_inherit_the_written_out_backward():
    """A subclass may change the forward (another attention, say): only the exact class is covered."""
    class ScaledAttention(ShowAttendTellModel):
        def attend(self, h, features, projected):
            activated, alpha, context, gate = super().attend(h, features, projected)
            return activated, alpha, 2 * context, gate

    config = gradient_variant("show-attend-tell, tanh").config      # the zoo's sizes, the subclass's forward
    torch.manual_seed(0)
    model = ScaledAttention(config).eval()
    assert gradient_route(model, TargetLayer(model)) == "replicated"


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_attention_feature_grads_equal_autograd_per_word(activation, score):
    model = gradient_variant(f"show-attend-tell, {activation}")
    torch.manual_seed(0)
    features = torch.randn(3, 9, model.encoder.channels, dtype=torch.float64)
    captions = torch.randint(4, 24, (3, 8))
    lengths = [6, 2, 4]                                    # padded rows past each length must stay zero
    grads = attention_feature_grads(model, features, captions, lengths, score)
    assert grads.shape == (3, 6, 9, model.encoder.channels)
    for b, n in enumerate(lengths):
        for t in range(6):
            if t >= n:
                assert not grads[b, t].any()
                continue
            leaf = features[b:b + 1].clone().requires_grad_()
            hidden, _ = model.teacher_forced_hidden(leaf, captions[b:b + 1])
            logits = model.output_logits(hidden)[0, t]
            value = (logits.log_softmax(-1) if score == "log_prob" else logits)[captions[b, t + 1]]
            expected = torch.autograd.grad(value, leaf)[0][0]
            assert expected.abs().max() > 0
            torch.testing.assert_close(grads[b, t], expected, rtol=1e-9, atol=1e-12)


def test_attention_feature_grads_refuse_training_mode_and_unknown_scores():
    model = gradient_variant("show-attend-tell, tanh")
    features, captions = torch.zeros(1, 9, model.encoder.channels, dtype=torch.float64), torch.zeros(1, 3).long()
    with pytest.raises(ValueError, match="score must be 'log_prob' or 'logit', got 'prob'"):
        attention_feature_grads(model, features, captions, [2], "prob")
    with pytest.raises(RuntimeError, match="needs the model in eval mode"):
        attention_feature_grads(model.train(), features, captions, [2])


def test_a_second_written_out_backward_for_a_class_is_refused():
    class Throwaway(ShowAttendTellModel):
        pass

    def first_grads(model, features, captions, lengths, score):
        raise NotImplementedError

    @torch.no_grad()                                     # named by where it is written, not by torch's wrapper
    def second_grads(model, features, captions, lengths, score):
        raise NotImplementedError

    register_feature_gradients(Throwaway, covers=lambda model: True)(first_grads)
    try:
        with pytest.raises(ValueError, match="registered twice") as error:
            register_feature_gradients(Throwaway, covers=lambda model: True)(second_grads)
        message = str(error.value)
        assert origin_of(first_grads) in message and origin_of(inspect.unwrap(second_grads)) in message
        assert message.count(__file__) == 2
        assert _WRITTEN_OUT[Throwaway][1] is first_grads                    # refused, not overwritten
    finally:
        del _WRITTEN_OUT[Throwaway]
    assert Throwaway not in _WRITTEN_OUT


def test_the_recording_cell_equals_the_lstm_cell_on_its_weights():
    torch.manual_seed(0)
    for bias in (True, False):
        lstm = torch.nn.LSTMCell(10, 6, bias=bias).double()
        inputs, h, c = torch.randn(3, 10).double(), torch.randn(3, 6).double(), torch.randn(3, 6).double()
        cell = RecordingLSTMCell(lstm)
        recorded_h, recorded_c = cell(inputs, (h, c))
        expected_h, expected_c = lstm(inputs, (h, c))
        torch.testing.assert_close(recorded_h, expected_h, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(recorded_c, expected_c, rtol=1e-12, atol=1e-14)
        (gates,) = cell.steps
        assert gates.c_prev is c and gates.h is recorded_h and gates.c is recorded_c


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_recorded_step_is_the_step_training_and_decoding_take(activation):
    """The written-out backward records `advance` through a `RecordingLSTMCell`; with the default cell
    (the model's `nn.LSTMCell`, which `step` and `teacher_forced_hidden` run) it is the same step."""
    model = gradient_variant(f"show-attend-tell, {activation}").float()
    torch.manual_seed(1)
    features = torch.randn(2, 9, model.encoder.channels)
    state = model.init_state(features)
    tokens = torch.tensor([5, 7])
    d = model.decoder
    calls = []
    hook = d.lstm.register_forward_hook(lambda *_: calls.append(1))
    try:
        cell = RecordingLSTMCell(d.lstm)
        recorded, recorded_trace = model.advance(tokens, state, cell)
        assert not calls                                        # the recording cell replaces the kernel
        plain, trace = model.advance(tokens, state)
        assert len(calls) == 1                                  # the default is the model's nn.LSTMCell
    finally:
        hook.remove()
    for name, value in trace._asdict().items():
        torch.testing.assert_close(getattr(recorded_trace, name), value, rtol=0, atol=0, msg=name)
    cell_h, cell_c = d.lstm(torch.cat([d.embed(tokens), trace.gate * trace.context], 1), state[:2])
    (gates,) = cell.steps
    torch.testing.assert_close(gates.h, cell_h)
    torch.testing.assert_close(gates.c, cell_c)
    torch.testing.assert_close(recorded[0], plain[0])
    torch.testing.assert_close(recorded[1], plain[1])
    assert recorded[0] is gates.h and recorded[1] is gates.c
    assert all(a is b for a, b in zip(recorded[2:], plain[2:], strict=True))  # annotations pass through
    logits, stepped, alpha = model.step(tokens, state)                  # decoding's step
    torch.testing.assert_close(stepped[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(alpha, trace.alpha, rtol=0, atol=0)
    torch.testing.assert_close(logits, model.output_logits(plain[0]), rtol=0, atol=0)
    torch.testing.assert_close(trace.alpha.sum(1), torch.ones(2))
    captions = torch.tensor([[5, 7, 9, 11], [7, 4, 4, 6]])             # training's teacher-forced pass
    hidden, alphas = model.teacher_forced_hidden(features, captions)
    cell, recorded = RecordingLSTMCell(d.lstm), state
    for t in range(captions.size(1) - 1):
        recorded, recorded_trace = model.advance(captions[:, t], recorded, cell)
        torch.testing.assert_close(recorded[0], hidden[:, t])
        torch.testing.assert_close(recorded_trace.alpha, alphas[:, t])
