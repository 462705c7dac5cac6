"""Every gradient route on every model variant against plain autograd, word by word: Show-and-Tell with
and without a BatchNorm head, Show-Attend-Tell with tanh and with ReLU attention, and a captioner written
from scratch (examples/custom_captioner.py). Also the written-out attention backward and its recording
step on their own, and which route each model is given."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.explain.attention_backward import attention_feature_grads, recorded_step
from captionlens.explain.gradients import gradient_route, word_gradients
from captionlens.explain.scoring import padded_captions
from captionlens.explain.target import TargetLayer
from captionlens.models import CNNLSTMModel, ShowAttendTellConfig, ShowAttendTellModel, ShowTellConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from custom_captioner import GRUCaptioner  # noqa: E402

VOCAB = Vocabulary([f"w{i}" for i in range(20)])
COMMON = {"vocab_size": len(VOCAB), "embed_size": 12, "hidden_size": 16, "backbone": "tiny",
          "preprocessing": Preprocessing(image_size=32)}
VARIANTS = {
    "show-tell": lambda: CNNLSTMModel(ShowTellConfig(**COMMON)),
    "show-tell, batch-norm head": lambda: CNNLSTMModel(ShowTellConfig(**COMMON, head="linear-batchnorm")),
    "show-attend-tell, tanh": lambda: ShowAttendTellModel(ShowAttendTellConfig(**COMMON, attention_dim=8, grid_size=3)),
    "show-attend-tell, relu": lambda: ShowAttendTellModel(ShowAttendTellConfig(**COMMON, attention_dim=8, grid_size=3,
                                                                               attention_activation="relu")),
    "custom GRU captioner": lambda: GRUCaptioner(VOCAB, channels=8, hidden=12, image_size=32),
}
CAPTIONS = [[5, 9, 7, 11, 6], [8, 4], [13, 13, 10]]


def _model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = VARIANTS[variant]().double()
    model.train()
    with torch.no_grad():  # batch-norm statistics from noise, so that activations and gradients are not tiny
        model.encode(torch.randn(8, 3, 32, 32, dtype=torch.float64))
        for name, p in model.named_parameters():
            if not name.startswith(("encoder.resnet", "stages")):
                p.mul_(2.0)
    return model.eval()


def autograd_word_grads(model, target: TargetLayer, activations, captions, lengths, score):
    """The oracle: for each image and word, d score / dA by one plain autograd call through the model's own
    teacher-forced forward (no replication, no written-out backward)."""
    grads = []
    for b, n in enumerate(lengths):
        for t in range(n):
            leaf = activations[b:b + 1].clone().requires_grad_()
            hidden, _ = model.teacher_forced_hidden(target.upper(leaf), captions[b:b + 1])
            logits = model.output_logits(hidden)[0, t]
            value = logits.log_softmax(-1) if score == "log_prob" else logits
            grads.append(torch.autograd.grad(value[captions[b, t + 1]], leaf)[0][0])
    return torch.stack(grads)


def _routes(model, target) -> list[str]:
    preferred = gradient_route(model, target)
    return [preferred] if preferred == "replicated" else [preferred, "replicated"]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_every_route_equals_autograd_per_word(variant, score):
    model = _model(variant)
    target = TargetLayer(model)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        activations = target.lower(images)
    captions = padded_captions(CAPTIONS, VOCAB)
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
        model = _model(variant)
        assert gradient_route(model, TargetLayer(model)) == route, variant
    show_tell = _model("show-tell")
    assert gradient_route(show_tell, TargetLayer(show_tell, "layer2")) == "replicated"  # layer3 lies between


def test_a_subclass_does_not_inherit_the_written_out_backward():
    """A subclass may change the forward (another attention, say): only the exact class is covered."""
    class ScaledAttention(ShowAttendTellModel):
        def attend(self, h, features, projected):
            activated, alpha, context, gate = super().attend(h, features, projected)
            return activated, alpha, 2 * context, gate

    torch.manual_seed(0)
    model = ScaledAttention(ShowAttendTellConfig(**COMMON, attention_dim=8, grid_size=3)).eval()
    assert gradient_route(model, TargetLayer(model)) == "replicated"


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("score", ["log_prob", "logit"])
def test_attention_feature_grads_equal_autograd_per_word(activation, score):
    model = _model(f"show-attend-tell, {activation}")
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
    model = _model("show-attend-tell, tanh")
    features, captions = torch.zeros(1, 9, model.encoder.channels, dtype=torch.float64), torch.zeros(1, 3).long()
    with pytest.raises(ValueError, match="score must be 'log_prob' or 'logit', got 'prob'"):
        attention_feature_grads(model, features, captions, [2], "prob")
    with pytest.raises(RuntimeError, match="needs the model in eval mode"):
        attention_feature_grads(model.train(), features, captions, [2])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_recorded_step_equals_the_step_training_and_decoding_take(activation):
    model = _model(f"show-attend-tell, {activation}").float()
    torch.manual_seed(1)
    state = model.init_state(torch.randn(2, 9, model.encoder.channels))
    tokens = torch.tensor([5, 7])
    parts = recorded_step(model, tokens, state)
    d = model.decoder
    cell_h, cell_c = d.lstm(torch.cat([d.embed(tokens), parts.gate * parts.context], 1), state[:2])
    torch.testing.assert_close(parts.h, cell_h)
    torch.testing.assert_close(parts.c, cell_c)
    (h, _, *_), alpha = model.advance(tokens, state)
    torch.testing.assert_close(parts.h, h)
    torch.testing.assert_close(parts.alpha, alpha)
    torch.testing.assert_close(parts.alpha.sum(1), torch.ones(2))
