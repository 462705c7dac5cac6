"""The training forward with `lengths`: the padding is skipped, and nothing inside a caption changes."""
from __future__ import annotations

import pytest
import torch

from zoo import NUMBERED_WORDS, tiny_captioner

CAPTIONS = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 9, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0], [1, 2, 0, 0, 0, 0]])  # 0 = <PAD>
LENGTHS = (CAPTIONS[:, 1:] != 0).sum(1)   # 5, 3, 2, 1: sorted longest first


@pytest.mark.parametrize("architecture", ["show-attend-tell", "show-tell"])
def test_lengths_give_the_padded_forward_inside_each_caption_and_zeros_past_it(architecture):
    model = tiny_captioner(architecture, vocab=NUMBERED_WORDS[:8], calibrate=False, attach_vocab=False).double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    owner = torch.tensor([0, 1, 1, 0])
    inside = torch.arange(CAPTIONS.size(1) - 1)[None, :] < LENGTHS[:, None]

    def run(lengths):
        model.zero_grad()
        logits, alphas = model(images, CAPTIONS, owner, lengths)
        (logits.log_softmax(-1).gather(-1, CAPTIONS[:, 1:, None]).squeeze(-1) * inside).sum().backward()
        return logits, alphas, [p.grad.clone() for p in model.parameters()]

    padded, skipped = run(None), run(LENGTHS)
    torch.testing.assert_close(skipped[0][inside], padded[0][inside])
    for grad_skipped, grad_padded in zip(skipped[2], padded[2]):
        torch.testing.assert_close(grad_skipped, grad_padded)
    hidden_past = model.output_logits(torch.zeros(1, model.config.hidden_size, dtype=torch.float64))
    torch.testing.assert_close(skipped[0][~inside], hidden_past.expand(int((~inside).sum()), -1))
    if architecture == "show-attend-tell":
        torch.testing.assert_close(skipped[1][inside], padded[1][inside])
        assert not skipped[1][~inside].any()
    # the control: rows not sorted longest first, or a length past the caption, are refused
    with pytest.raises(ValueError, match="non-increasing"):
        model(images, CAPTIONS.flip(0), owner, LENGTHS.flip(0))
    with pytest.raises(ValueError, match="lengths must be"):
        model(images, CAPTIONS, owner, LENGTHS + 1)
