"""The Show-Attend-Tell decoder's backward written out: d score_t / d annotations for every word of a
caption from one forward per image and one reverse sweep (the "bptt" gradient route).

On a CPU the generic replicated route runs the attention decoder's forward once per word plus an
(R, N, C) context gradient at every step, which costs more than a ResNet-50 trunk; here the
teacher-forced forward runs once per image, then one reverse sweep carries a cotangent row per word,
row t joining at step t, where word t is scored. The annotations' gradient through the contexts,
sum_s alpha_s (x) dcontext_s, is formed once at the end instead of as a (B, T, N, C) term per step.

The forward is the model's own step, `ShowAttendTellModel.advance`, which returns the step's attention
intermediates; the backward only hands it a `RecordingLSTMCell`, the LSTM cell's equations on the same
weights, which keeps the gates the sweep needs.

Registered for `ShowAttendTellModel` itself (not subclasses, which may change the forward) with tanh
or ReLU attention; the tests check it against autograd word by word for both.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from captionlens.explain.gradients import register_feature_gradients
from captionlens.explain.scoring import NO_FOIL, Score, check_score
from captionlens.models.protocol import Captioner
from captionlens.models.show_attend_tell import ShowAttendTellModel, StepTrace

# d f / d x from the activated value y = f(x), for each attention nonlinearity the backward covers.
ACTIVATION_SLOPES = {"tanh": lambda y: 1 - y ** 2, "relu": lambda y: (y > 0).to(y.dtype)}


class LSTMGates(NamedTuple):
    """One LSTM cell call's input cell state, gates and outputs (all (B, H))."""

    c_prev: torch.Tensor
    i: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    o: torch.Tensor
    tanh_c: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor


class RecordingLSTMCell:
    """`nn.LSTMCell`'s equations on that cell's own weights (PyTorch's i, f, g, o gate order), called as
    the cell is, `(inputs, (h, c)) -> (h, c)`; every call's gates are kept in `steps`, in order. Passed to
    `ShowAttendTellModel.advance`, it records the step the model takes (tested equal to the cell)."""

    def __init__(self, lstm: nn.LSTMCell) -> None:
        self.lstm = lstm
        self.steps: list[LSTMGates] = []

    def __call__(self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        lstm = self.lstm
        gates = F.linear(inputs, lstm.weight_ih, lstm.bias_ih) + F.linear(h, lstm.weight_hh, lstm.bias_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c + i * g
        tanh_c = c_new.tanh()
        self.steps.append(LSTMGates(c, i, f, g, o, tanh_c, o * tanh_c, c_new))
        return self.steps[-1].h, c_new


def _covers(model: Captioner) -> bool:
    return isinstance(model, ShowAttendTellModel) and model.config.attention_activation in ACTIVATION_SLOPES


@register_feature_gradients(ShowAttendTellModel, covers=_covers)
@torch.no_grad()
def attention_feature_grads(model: Captioner, features: torch.Tensor, captions: torch.Tensor,
                            lengths: Sequence[int], score: Score = "log_prob",
                            targets: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, N, C): d score_t / d features of every word t < lengths[b] of every image b (0 past it).

    In eval mode (no dropout). `features` (B, N, C) are the annotations, `captions` (B, >= T + 1)
    `<START> words ..` rows; the score is the word's log-probability or raw logit, of the caption's own
    word at each position or of `targets` (B, >= T) (or, for a contrast, (B, >= T, 2) (word, foil) pairs:
    the output cotangent of a position with a foil is fc.weight[word] - fc.weight[foil]).
    """
    assert isinstance(model, ShowAttendTellModel)
    check_score(score)
    if model.training:
        raise RuntimeError("the written-out attention backward needs the model in eval mode (it assumes no "
                           "dropout): call model.eval() first")
    d = model.decoder
    slope = ACTIVATION_SLOPES[model.config.attention_activation]
    batch, regions, _ = features.shape
    steps = max(lengths, default=0)
    state = model.init_state(features)
    cell = RecordingLSTMCell(d.lstm)
    traces: list[StepTrace] = []              # each step's attention; cell.steps holds its LSTM gates
    for s in range(steps):
        state, trace = model.advance(captions[:, s], state, cell)
        traces.append(trace)
    if not traces:
        return features.new_zeros(batch, 0, *features.shape[1:])
    targets = captions[:, 1:steps + 1] if targets is None else targets[:, :steps]
    words = targets if targets.dim() == 2 else targets[..., 0]
    if score == "logit":
        d_out = d.fc.weight[words]                                                # (B, T, H)
    else:
        probs = model.output_logits(torch.stack([q.h for q in cell.steps], 1)).softmax(-1)
        d_out = (F.one_hot(words, probs.size(-1)).to(probs) - probs) @ d.fc.weight
    if targets.dim() == 3:              # (word, foil) pairs: logit(word) - logit(foil), for either score
        foils = targets[..., 1]
        d_contrast = d.fc.weight[words] - d.fc.weight[foils.clamp(min=0)]
        d_out = torch.where((foils == NO_FOIL).unsqueeze(2), d_out, d_contrast)
    lengths_t = torch.as_tensor(lengths, device=features.device)
    d_out = d_out * (torch.arange(steps, device=features.device) < lengths_t[:, None]).unsqueeze(2)

    def row(x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, 1, ...): one image's value, broadcast over its word rows."""
        return x.unsqueeze(1)

    embed_size = d.embed.embedding_dim
    full_att = d.attention.full_att.weight[0]
    dh = dc = d_out.new_zeros(batch, 0, d_out.size(2))
    d_projected = features.new_zeros(batch, steps, regions, full_att.numel())
    d_contexts = features.new_zeros(batch, steps, steps, features.size(2))      # [b, word t, step s]
    for s in reversed(range(steps)):
        p, q = traces[s], cell.steps[s]                                              # attention, LSTM cell
        dh = torch.cat([d_out[:, s:s + 1], dh], 1)                                  # word s joins
        dc = torch.cat([dc.new_zeros(batch, 1, dc.size(2)), dc], 1)
        dc = dc + dh * row(q.o * (1 - q.tanh_c ** 2))
        d_gates = torch.cat([dc * row(q.g * q.i * (1 - q.i)), dc * row(q.c_prev * q.f * (1 - q.f)),
                             dc * row(q.i * (1 - q.g ** 2)), dh * row(q.tanh_c * q.o * (1 - q.o))], 2)
        d_gated = d_gates @ d.lstm.weight_ih[:, embed_size:]                      # d (gate * context)
        d_context = d_gated * row(p.gate)
        d_contexts[:, s:, s] = d_context
        d_alpha = torch.bmm(d_context, features.transpose(1, 2))                    # (B, n, N)
        d_scores = row(p.alpha) * (d_alpha - (d_alpha * row(p.alpha)).sum(2, keepdim=True))
        d_pre = d_scores.unsqueeze(3) * full_att * row(slope(p.activated))          # (B, n, N, A)
        d_projected[:, s:] += d_pre
        d_gate_in = d_gated * row(p.context * p.gate * (1 - p.gate))                # before the sigmoid
        dh = (d_gates @ d.lstm.weight_hh + d_gate_in @ d.f_beta.weight
              + d_pre.sum(2) @ d.attention.decoder_att.weight)
        dc = dc * row(q.f)
    alphas = torch.stack([p.alpha for p in traces], 1)                                # (B, S, N)
    d_mean = dh @ d.init_h.weight + dc @ d.init_c.weight                             # (B, T, C)
    return (torch.einsum("bsn,btsc->btnc", alphas, d_contexts)
            + d_projected @ d.attention.encoder_att.weight + d_mean.unsqueeze(2) / regions)
