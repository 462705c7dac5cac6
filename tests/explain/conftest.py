"""Tiny seeded models, an image and a caption shared by the explanation-method tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from captionlens.data.vocabulary import Vocabulary
from captionlens.models import CNNLSTMModel, ShowAttendTellModel

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "above", "below", "left", "of", "right",
         "the", "and", "small", "large")
IMAGE_SIZE = 64


def calibrate_batchnorm(model: nn.Module) -> nn.Module:
    """Set every BatchNorm's running statistics from a batch of random images, then eval mode.

    With fresh statistics (mean 0, variance 1) the tiny trunk's activations shrink layer by layer
    to ~1e-3, so word scores barely depend on the image; a trained model's statistics keep them at
    unit scale, and so do these."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch sets the statistics exactly
    model.train()
    with torch.no_grad():
        model.encode(torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(WORDS)


@pytest.fixture
def show_tell_model(vocab: Vocabulary) -> CNNLSTMModel:
    """Show-and-Tell, tiny trunk (64 px -> 8x8 at the target layer), calibrated, eval mode, vocab attached."""
    torch.manual_seed(0)
    model = CNNLSTMModel(len(vocab), embed_size=16, hidden_size=32, backbone="tiny", image_size=IMAGE_SIZE)
    calibrate_batchnorm(model)
    model.vocab = vocab
    return model


@pytest.fixture
def attention_model(vocab: Vocabulary) -> ShowAttendTellModel:
    """Show-Attend-Tell, tiny trunk pooled to a 4x4 grid, calibrated, eval mode, vocab attached."""
    torch.manual_seed(1)
    model = ShowAttendTellModel(len(vocab), embed_size=16, hidden_size=32, attention_dim=16, backbone="tiny",
                                grid_size=4, image_size=IMAGE_SIZE)
    calibrate_batchnorm(model)
    model.vocab = vocab
    return model


@pytest.fixture
def image() -> np.ndarray:
    """(64, 80, 3) uint8: not square, so maps must come back at the original aspect ratio."""
    return np.random.default_rng(0).integers(0, 256, size=(64, 80, 3), dtype=np.uint8)


@pytest.fixture
def caption() -> str:
    return "a red circle above the blue square"
