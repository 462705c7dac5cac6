"""Tiny random captioning models for the model tests (the zoo's, tests/zoo.py): a 24-word vocabulary,
16/32-wide decoders, sharpened."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.base import CaptionModel
from zoo import NUMBERED_WORDS, tiny_captioner


@pytest.fixture(params=["show-tell", "show-attend-tell"])
def kind(request) -> str:
    """Every test that takes `kind` runs once per model architecture."""
    return request.param


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(NUMBERED_WORDS)


@pytest.fixture
def make_model(vocab: Vocabulary) -> Callable[..., CaptionModel]:
    """`make_model(kind, seed=0, sharpen=1.5, end_bias=0.0, **config)`: a random tiny model in eval mode
    (`config` overrides fields of its config, e.g. head="linear-batchnorm", attention_activation="relu").

    `sharpen` scales the decoder weights so that next-word distributions are peaked and depend on
    the image features (random captions then differ between images); `end_bias` is added to the
    <END> logit so that more captions end before max_length.
    """
    def build(kind: str, seed: int = 0, sharpen: float = 1.5, end_bias: float = 0.0, **config) -> CaptionModel:
        model = tiny_captioner(kind, vocab=vocab, hidden_size=32, grid_size=3, seed=seed, calibrate=False,
                               attach_vocab=False, **config)
        torch.manual_seed(seed)  # the decoder's weights must not depend on how many the encoder drew
        for module in model.decoder.modules():
            if module is not model.decoder and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        with torch.no_grad():
            for p in model.decoder.parameters():
                p.mul_(sharpen)
            model.decoder.fc.bias[vocab.end_idx] += end_bias
        return model.eval()
    return build


@pytest.fixture
def features() -> Callable[..., torch.Tensor]:
    """`features(model, batch, seed=1)`: encoder-shaped features spread wide enough that every
    image's caption differs (a random conv trunk maps noise images to nearly equal features)."""
    def build(model: CaptionModel, batch: int, seed: int = 1) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        shape = ((batch, 9, model.encoder.channels) if model.has_attention
                 else (batch, model.config.embed_size))
        return torch.randn(shape, generator=generator) * 2
    return build
