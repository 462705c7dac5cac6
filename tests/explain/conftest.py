"""Tiny seeded models, an image and a caption shared by the explanation-method tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.models import CNNLSTMModel, ShowAttendTellConfig, ShowAttendTellModel, ShowTellConfig
from tiny_captioner import calibrate_batchnorm  # tests/ is on sys.path (its conftest.py puts it there)

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "above", "below", "left", "of", "right",
         "the", "and", "small", "large")
IMAGE_SIZE = 64


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(WORDS)


@pytest.fixture
def show_tell_model(vocab: Vocabulary) -> CNNLSTMModel:
    """Show-and-Tell, tiny trunk (64 px -> 8x8 at the target layer), calibrated, eval mode, vocab attached."""
    torch.manual_seed(0)
    model = CNNLSTMModel(ShowTellConfig(vocab_size=len(vocab), embed_size=16, hidden_size=32, backbone="tiny",
                                        preprocessing=Preprocessing(image_size=IMAGE_SIZE)))
    calibrate_batchnorm(model, IMAGE_SIZE)
    model.vocab = vocab
    return model


@pytest.fixture
def attention_model(vocab: Vocabulary) -> ShowAttendTellModel:
    """Show-Attend-Tell, tiny trunk pooled to a 4x4 grid, calibrated, eval mode, vocab attached."""
    torch.manual_seed(1)
    model = ShowAttendTellModel(ShowAttendTellConfig(vocab_size=len(vocab), embed_size=16, hidden_size=32,
                                                     attention_dim=16, backbone="tiny", grid_size=4,
                                                     preprocessing=Preprocessing(image_size=IMAGE_SIZE)))
    calibrate_batchnorm(model, IMAGE_SIZE)
    model.vocab = vocab
    return model


@pytest.fixture
def image() -> np.ndarray:
    """(64, 80, 3) uint8: not square, so maps must come back at the original aspect ratio."""
    return np.random.default_rng(0).integers(0, 256, size=(64, 80, 3), dtype=np.uint8)


@pytest.fixture
def caption() -> str:
    return "a red circle above the blue square"
