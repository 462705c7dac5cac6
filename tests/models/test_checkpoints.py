"""Checkpoints: safetensors round trip, legacy `.pth` files read with weights_only=True, a malicious
pickle that must run nothing, and one clear error naming the file for every broken checkpoint."""
from __future__ import annotations

import json
import os
import pathlib
import shlex

import pytest
import torch
from safetensors.torch import save_file

from captionlens.models import (CheckpointError, CNNLSTMModel, ShowAttendTellModel, decode, load, load_checkpoint,
                                save_checkpoint)


def _caption(model, vocab, images):
    return [d.token_ids for d in decode(model, images, vocab, max_length=8, beam_size=3)]


def _write_safetensors(path, model, config, vocab_words):
    """A checkpoint file written by hand, so that its metadata can disagree with its weights."""
    meta = {"format_version": 1, "config": config, "vocab": {"idx2word": vocab_words}, "epoch": 0, "metrics": {}}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"captionlens": json.dumps(meta)})


def _legacy_file(path, model, vocab, **extra):
    words = [vocab.idx2word[i] for i in range(len(vocab))]
    torch.save({"model_state_dict": model.state_dict(), "vocab": words, "epoch": 4, "loss": 2.5, **extra}, path)
    return path


def test_round_trip_keeps_captions_epoch_and_metrics(kind, make_model, vocab, tmp_path):
    model = make_model(kind, sharpen=3.0)
    images = torch.randn(3, 3, 32, 32)
    path = save_checkpoint(tmp_path / "m.safetensors", model, vocab, epoch=3, metrics={"loss": 1.25, "bleu4": 0.5})
    ckpt = load_checkpoint(path)
    assert type(ckpt.model) is type(model) and not ckpt.model.training
    assert ckpt.model.config == model.config
    assert (ckpt.epoch, ckpt.metrics) == (3, {"loss": 1.25, "bleu4": 0.5})
    assert ckpt.vocab.to_dict() == vocab.to_dict() and ckpt.model.vocab is ckpt.vocab
    for key, tensor in model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[key], tensor), key
    assert _caption(ckpt.model, vocab, images) == _caption(model, vocab, images)


def test_load_from_checkpoint_unpacks_as_the_seed_notebook_does(make_model, vocab, tmp_path):
    path = save_checkpoint(tmp_path / "st.safetensors", make_model("show-tell"), vocab, epoch=7,
                           metrics={"loss": 0.75})
    model, loaded_vocab, epoch, loss = CNNLSTMModel.load_from_checkpoint(path, torch.device("cpu"))
    assert isinstance(model, CNNLSTMModel) and not model.training
    assert (len(loaded_vocab), epoch, loss) == (len(vocab), 7, 0.75)
    with pytest.raises(TypeError, match="st.safetensors"):
        ShowAttendTellModel.load_from_checkpoint(path, "cpu")


def test_load_returns_the_class_the_file_holds(make_model, vocab, tmp_path):
    for kind, cls in (("show-tell", CNNLSTMModel), ("show-attend-tell", ShowAttendTellModel)):
        path = save_checkpoint(tmp_path / f"{kind}.safetensors", make_model(kind), vocab)
        assert type(load(path).model) is cls


def test_legacy_pth_is_read_and_its_config_inferred(kind, vocab, tmp_path):
    torch.manual_seed(0)
    common = {"embed_size": 16, "hidden_size": 32, "backbone": "tiny"}
    model = (CNNLSTMModel(len(vocab), num_layers=2, **common) if kind == "show-tell"
             else ShowAttendTellModel(len(vocab), attention_dim=24, **common)).eval()
    ckpt = load_checkpoint(_legacy_file(tmp_path / "old.pth", model, vocab))
    expected = {key: model.config[key] for key in ("architecture", "vocab_size", "embed_size", "hidden_size",
                                                   "backbone", "num_layers", "attention_dim") if key in model.config}
    assert {key: ckpt.model.config[key] for key in expected} == expected
    assert (ckpt.epoch, ckpt.metrics) == (4, {"loss": 2.5})
    images = torch.randn(2, 3, 32, 32)
    assert _caption(ckpt.model, vocab, images) == _caption(model, vocab, images)


def test_legacy_pth_with_numeric_sequential_keys_is_renamed(vocab, tmp_path):
    """The seed notebook's encoder was `nn.Sequential(*resnet.children())`: keys `encoder.resnet.7.0...`."""
    torch.manual_seed(0)
    model = CNNLSTMModel(len(vocab), embed_size=16, hidden_size=32, backbone="resnet18").eval()
    names = [name for name, _ in model.encoder.resnet.named_children()]
    numeric = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("encoder.resnet."):
            child, rest = key.removeprefix("encoder.resnet.").split(".", 1)
            key = f"encoder.resnet.{names.index(child)}.{rest}"
        numeric[key] = tensor
    assert "encoder.resnet.7.0.conv1.weight" in numeric
    words = [vocab.idx2word[i] for i in range(len(vocab))]
    torch.save({"model_state_dict": numeric, "vocab": words, "epoch": 1, "loss": 3.0}, tmp_path / "seed.pth")
    loaded = load_checkpoint(tmp_path / "seed.pth").model
    assert loaded.config["backbone"] == "resnet18"
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


class _Payload:
    """Pickles as a call `fn(*args)`: whoever unpickles it without weights_only runs that call."""

    def __init__(self, fn, *args) -> None:
        self.call = (fn, args)

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize("attack", ["path-touch", "os-system"])
def test_malicious_pickle_is_refused_and_runs_nothing(attack, make_model, vocab, tmp_path):
    marker = tmp_path / "MARKER"
    payload = (_Payload(pathlib.Path.touch, marker) if attack == "path-touch"
               else _Payload(os.system, f"touch {shlex.quote(str(marker))}"))
    path = _legacy_file(tmp_path / "evil.pth", make_model("show-tell"), vocab, payload=payload)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to unpickle") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "GLOBAL" in str(info.value)
    assert not marker.exists()
    # The oracle: a plain unpickling of the same file does run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file_is_one_clear_error(suffix, make_model, vocab, tmp_path):
    path = tmp_path / f"cut{suffix}"
    if suffix == ".pth":
        _legacy_file(path, make_model("show-tell"), vocab)
    else:
        save_checkpoint(path, make_model("show-tell"), vocab)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"cut{suffix}: truncated") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_vocabulary_size_mismatch_is_named(kind, make_model, vocab, tmp_path):
    model = make_model(kind)
    short_words = [vocab.idx2word[i] for i in range(len(vocab) - 2)]
    _write_safetensors(tmp_path / "v.safetensors", model, model.config, short_words)
    with pytest.raises(CheckpointError, match=r"v\.safetensors: vocabulary has 22 words .* 24"):
        load_checkpoint(tmp_path / "v.safetensors")
    torch.save({"model_state_dict": model.state_dict(), "vocab": short_words}, tmp_path / "v.pth")
    with pytest.raises(CheckpointError, match=r"v\.pth: vocabulary has 22 words"):
        load_checkpoint(tmp_path / "v.pth")
    with pytest.raises(CheckpointError, match="vocabulary has"):
        save_checkpoint(tmp_path / "w.safetensors", model, type(vocab)(["only"]))


def test_weights_of_another_architecture_are_refused(make_model, vocab, tmp_path):
    show_tell, attention = make_model("show-tell"), make_model("show-attend-tell")
    _write_safetensors(tmp_path / "arch.safetensors", show_tell, attention.config, list(vocab.to_dict()["idx2word"]))
    with pytest.raises(CheckpointError, match=r"arch\.safetensors: architecture mismatch"):
        load_checkpoint(tmp_path / "arch.safetensors")


def test_weights_of_another_size_are_refused(make_model, vocab, tmp_path):
    model = make_model("show-attend-tell")
    bigger = {**model.config, "hidden_size": 48}
    _write_safetensors(tmp_path / "size.safetensors", model, bigger, list(vocab.to_dict()["idx2word"]))
    with pytest.raises(CheckpointError, match=r"size\.safetensors: 'decoder\..*' has shape"):
        load_checkpoint(tmp_path / "size.safetensors")


def test_pth_without_a_caption_model_is_named(tmp_path):
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "vocab": ["<PAD>", "<START>", "<END>", "<UNK>"]},
               tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: state dict lacks"):
        load_checkpoint(tmp_path / "other.pth")
