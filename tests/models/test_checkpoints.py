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

from captionlens.data.images import Preprocessing
from captionlens.models import (
    CheckpointError,
    CNNLSTMModel,
    ShowAttendTellModel,
    decode,
    load,
    load_checkpoint,
    save_checkpoint,
)
from zoo import tiny_captioner


def _caption(model, vocab, images):
    return [d.token_ids for d in decode(model, images, vocab, max_length=8, beam_size=3)]


def _write_safetensors(path, model, config, vocab_words, format_version=2):
    """A checkpoint file written by hand, so that its metadata can disagree with its weights."""
    meta = {"format_version": format_version, "config": config, "vocab": {"idx2word": vocab_words}, "epoch": 0,
            "metrics": {}}
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


@pytest.mark.parametrize("head", ["linear", "linear-batchnorm"])
def test_legacy_show_tell_pth_is_read_and_its_config_inferred(head, vocab, tmp_path):
    model = tiny_captioner("show-tell", vocab=vocab, image_size=224, hidden_size=32, num_layers=2, head=head,
                           calibrate=False, attach_vocab=False)
    config = model.config
    ckpt = load_checkpoint(_legacy_file(tmp_path / "old.pth", model, vocab))
    assert ckpt.model.config == config          # every size, the head and the seed's 224 px preprocessing
    assert (ckpt.epoch, ckpt.metrics) == (4, {"loss": 2.5})
    images = torch.randn(2, 3, 32, 32)
    assert _caption(ckpt.model, vocab, images) == _caption(model, vocab, images)


def test_legacy_attention_pth_needs_its_config(make_model, vocab, tmp_path):
    """Its grid and input size are not in its weights: refused rather than guessed, loaded with a config."""
    model = make_model("show-attend-tell")
    with pytest.raises(CheckpointError, match=r"old\.pth: a Show-Attend-Tell state dict without a 'config'"):
        load_checkpoint(_legacy_file(tmp_path / "old.pth", model, vocab))
    ckpt = load_checkpoint(_legacy_file(tmp_path / "cfg.pth", model, vocab, config=model.config.to_dict()))
    assert ckpt.model.config == model.config
    images = torch.randn(2, 3, 32, 32)
    assert _caption(ckpt.model, vocab, images) == _caption(model, vocab, images)


def test_legacy_vocabulary_with_other_special_tokens_is_permuted(make_model, vocab, tmp_path):
    """A word list with lower-case specials elsewhere: the embedding and output rows move with the words."""
    model = make_model("show-tell", sharpen=3.0)
    words = [vocab.idx2word[i] for i in range(len(vocab))]
    theirs = [*words[4:12], "<start>", *words[12:], "<end>", "<pad>", "<unk>"]       # a different row order
    rows = torch.tensor([words.index(w.upper() if w.startswith("<") else w) for w in theirs])
    state = {k: (v[rows] if k in ("decoder.embed.weight", "decoder.fc.weight", "decoder.fc.bias") else v)
             for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": state, "vocab": theirs}, tmp_path / "perm.pth")
    loaded = load_checkpoint(tmp_path / "perm.pth")
    assert loaded.vocab.to_dict() == vocab.to_dict()
    images = torch.randn(3, 3, 32, 32)
    assert _caption(loaded.model, vocab, images) == _caption(model, vocab, images)


def test_version_1_metadata_still_loads(make_model, vocab, tmp_path):
    """Version 1 stored a flat config with `image_size`; it becomes the default preprocessing at that size."""
    model = make_model("show-attend-tell")
    flat = {k: v for k, v in model.config.to_dict().items() if k != "preprocessing"}
    _write_safetensors(tmp_path / "v1.safetensors", model, {**flat, "image_size": 32},
                       list(vocab.to_dict()["idx2word"]), format_version=1)
    loaded = load_checkpoint(tmp_path / "v1.safetensors")
    assert loaded.model.preprocessing == Preprocessing(image_size=32)
    assert loaded.model.config == model.config


def test_a_checkpoint_is_recognised_by_content_not_suffix(make_model, vocab, tmp_path):
    path = save_checkpoint(tmp_path / "model.safetensors", make_model("show-tell"), vocab)
    renamed = path.rename(tmp_path / "model.ckpt")
    assert type(load_checkpoint(renamed).model) is CNNLSTMModel
    legacy = _legacy_file(tmp_path / "legacy.bin", make_model("show-tell"), vocab)
    assert type(load_checkpoint(legacy).model) is CNNLSTMModel
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.pth: not a checkpoint \(neither safetensors nor"):
        load_checkpoint(tmp_path / "notes.pth")


def test_legacy_pth_with_numeric_sequential_keys_is_renamed(vocab, tmp_path):
    """The seed notebook's encoder was `nn.Sequential(*resnet.children())`: keys `encoder.resnet.7.0...`."""
    model = tiny_captioner("show-tell", vocab=vocab, backbone="resnet18", image_size=224, hidden_size=32,
                           calibrate=False, attach_vocab=False)
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
    assert loaded.config.backbone == "resnet18"
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
    assert "\n" not in str(info.value)
    assert ("pathlib.Path" if attack == "path-touch" else "posix.system") in str(info.value)  # names the global
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
    _write_safetensors(tmp_path / "v.safetensors", model, model.config.to_dict(), short_words)
    with pytest.raises(CheckpointError, match=r"v\.safetensors: vocabulary has 22 words .* 24"):
        load_checkpoint(tmp_path / "v.safetensors")
    torch.save({"model_state_dict": model.state_dict(), "vocab": short_words, "config": model.config.to_dict()},
               tmp_path / "v.pth")
    with pytest.raises(CheckpointError, match=r"v\.pth: vocabulary has 22 words"):
        load_checkpoint(tmp_path / "v.pth")
    with pytest.raises(CheckpointError, match="vocabulary has"):
        save_checkpoint(tmp_path / "w.safetensors", model, type(vocab)(["only"]))


def test_weights_of_another_architecture_are_refused(make_model, vocab, tmp_path):
    show_tell, attention = make_model("show-tell"), make_model("show-attend-tell")
    _write_safetensors(tmp_path / "arch.safetensors", show_tell, attention.config.to_dict(),
                       list(vocab.to_dict()["idx2word"]))
    with pytest.raises(CheckpointError, match=r"arch\.safetensors: architecture mismatch"):
        load_checkpoint(tmp_path / "arch.safetensors")


def test_weights_of_another_size_are_refused(make_model, vocab, tmp_path):
    model = make_model("show-attend-tell")
    bigger = {**model.config.to_dict(), "hidden_size": 48}
    _write_safetensors(tmp_path / "size.safetensors", model, bigger, list(vocab.to_dict()["idx2word"]))
    with pytest.raises(CheckpointError, match=r"size\.safetensors: 'decoder\..*' has shape"):
        load_checkpoint(tmp_path / "size.safetensors")


def test_pth_without_a_caption_model_is_named(tmp_path):
    torch.save({"model_state_dict": {"w": torch.zeros(2)}, "vocab": ["<PAD>", "<START>", "<END>", "<UNK>"]},
               tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth: state dict lacks"):
        load_checkpoint(tmp_path / "other.pth")
