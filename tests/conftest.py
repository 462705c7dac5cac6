"""Suite-wide settings (two CPU threads, headless matplotlib), the tiny seeded models (from the zoo,
tests/zoo.py), image and caption the explanation and evaluation tests share, and the shipped reference
model with its held-out scenes."""
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool (see Makefile)

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captionlens.data.vocabulary import Vocabulary  # noqa: E402
from captionlens.models.base import CaptionModel  # noqa: E402
from zoo import EXPLAIN_IMAGE_SIZE, SHAPE_WORDS, tiny_captioner  # noqa: E402  (tests/ is on sys.path: rootdir conftest)

matplotlib.use("Agg")
torch.set_num_threads(2)


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(SHAPE_WORDS)


@pytest.fixture
def show_tell_model(vocab: Vocabulary) -> CaptionModel:
    """Show-and-Tell, tiny trunk (64 px -> 8x8 at the target layer), calibrated, eval mode, vocab attached."""
    return tiny_captioner("show-tell", vocab=vocab, image_size=EXPLAIN_IMAGE_SIZE, hidden_size=32)


@pytest.fixture
def attention_model(vocab: Vocabulary) -> CaptionModel:
    """Show-Attend-Tell, tiny trunk pooled to a 4x4 grid, calibrated, eval mode, vocab attached."""
    return tiny_captioner("show-attend-tell", vocab=vocab, image_size=EXPLAIN_IMAGE_SIZE, hidden_size=32,
                          grid_size=4, seed=1)


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
