"""Suite-wide settings (two CPU threads, headless matplotlib), the tiny seeded models, image and caption the
explanation and evaluation tests share, and the shipped reference model with its held-out scenes."""
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool (see Makefile)

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captionlens.data.images import Preprocessing  # noqa: E402
from captionlens.data.vocabulary import Vocabulary  # noqa: E402
from captionlens.models import CNNLSTMModel, ShowAttendTellConfig, ShowAttendTellModel, ShowTellConfig  # noqa: E402
from tiny_captioner import calibrate_batchnorm  # noqa: E402  (tests/ is on sys.path: rootdir conftest)

matplotlib.use("Agg")
torch.set_num_threads(2)

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


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the shipped reference checkpoint, a folder with its held-out val and test scenes)."""
    from captionlens.reference import REFERENCE_CHECKPOINT, reference_data

    return REFERENCE_CHECKPOINT, reference_data(tmp_path_factory.mktemp("reference") / "data")
