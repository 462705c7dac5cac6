"""The serve tests' fixtures: the model, a gallery folder and a client of the application (see serving.py)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import GALLERY, make_client, serve_model
from starlette.testclient import TestClient

from zoo import write_images


@pytest.fixture
def model():
    return serve_model()


@pytest.fixture
def gallery_dir(tmp_path: Path) -> Path:
    write_images(tmp_path / "gallery", GALLERY, hw=(48, 64))
    return tmp_path / "gallery"


@pytest.fixture
def client(model, gallery_dir: Path) -> Iterator[TestClient]:
    with make_client(model, gallery_dir) as test_client:
        yield test_client
