"""Missing pretrained weights (no cache, no network) raise one error that says where to put the file."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from captionlens.models import CNNLSTMModel, PretrainedWeightsMissing, ShowTellConfig


def test_missing_pretrained_weights_name_the_cache_path(monkeypatch, tmp_path):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsMissing) as info:
        CNNLSTMModel(ShowTellConfig(vocab_size=10, embed_size=8, hidden_size=8, backbone="resnet18"), pretrained=True)
    message = str(info.value)
    expected = tmp_path / "hub" / "checkpoints" / Path(torchvision_url("resnet18")).name
    assert str(expected) in message and "URLError" in message and "pretrained=False" in message
    assert not expected.exists()


def torchvision_url(name: str) -> str:
    from torchvision import models

    return models.get_model_weights(name).DEFAULT.url
