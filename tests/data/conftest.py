"""Helpers shared by the data tests: tiny image files made on the fly."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from PIL import Image


def write_images(folder: Path, names: Iterable[str], size: tuple[int, int] = (12, 10)) -> None:
    """Small distinct RGB images (each its own colour), in any format the suffix names."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.new("RGB", size, (20 * k % 256, 100, 200)).save(folder / name)


@pytest.fixture
def make_images() -> Callable[..., None]:
    return write_images
