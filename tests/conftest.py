"""Suite-wide settings (two CPU threads, headless matplotlib) and the one trained model tests share."""
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool (see Makefile)

import matplotlib  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

matplotlib.use("Agg")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory):
    """The embedded default, trained once per test session exactly as `captionlens demo` trains it:
    synthetic shapes at the demo's full size and the tiny Show-Attend-Tell recipe. Returns
    (checkpoint, data folder). About a minute and a half on two cores."""
    from captionlens.data.shapes import generate_shapes
    from captionlens.demo import DEMO_SIZES, demo_config
    from captionlens.training import train

    root: Path = tmp_path_factory.mktemp("demo")
    n_train, n_val, n_test = DEMO_SIZES["full"]
    data = generate_shapes(root / "data", n_train=n_train, n_val=n_val, n_test=n_test, image_size=96)
    trained = train(demo_config(data, root / "train"))
    return trained.best_checkpoint, data
