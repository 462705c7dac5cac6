"""Fuzzing `load_checkpoint`: our safetensors files (bytes, the safetensors header, the JSON of our
metadata) and legacy training-script `.pth` dicts (bytes of both torch serialisations, and the dict's
entries: vocabulary, config, epoch, loss, tensors). See harness.py for the contract."""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from harness import (
    Blob,
    Seeds,
    assert_typed,
    byte_mutations,
    check_reader,
    check_refused,
    dump_json,
    fuzz_settings,
    json_edits,
    write,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from zoo import NUMBERED_WORDS, tiny_captioner

# its row in the table of `make fuzz`
READER = "`load_checkpoint`: our .safetensors (bytes, safetensors header, metadata JSON) and .pth dicts"

ARCHITECTURES = ("show-tell", "show-attend-tell")


def _model(architecture: str) -> Any:
    return tiny_captioner(architecture, vocab=NUMBERED_WORDS[:6], image_size=32, embed_size=8, hidden_size=8,
                          attention_dim=8, grid_size=2, calibrate=False)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Valid files: each architecture as our safetensors file and as a `.pth` dict (both serialisations)."""
    folder = tmp_path_factory.mktemp("seeds")
    files = Seeds()
    for architecture in ARCHITECTURES:
        model = _model(architecture)
        saved = save_checkpoint(folder / "x.safetensors", model, model.vocab)
        files[f"{architecture}.safetensors"] = saved.read_bytes()
        for legacy in (False, True):
            files[f"{architecture}{'-legacy' if legacy else ''}.pth"] = _pth(_pth_entries(model), legacy)
    return files


def _pth_entries(model: Any) -> dict[str, Any]:
    return {"model_state_dict": model.state_dict(), "vocab": [model.vocab.idx2word[i] for i in range(len(model.vocab))],
            "epoch": 3, "loss": 1.25, "config": model.config.to_dict()}


def _pth(entries: Any, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    torch.save(entries, buffer, _use_new_zipfile_serialization=not legacy)
    return Blob(buffer.getvalue())


def accept(checkpoint: Checkpoint) -> None:
    """A loaded checkpoint is whole: a typed config, the vocabulary the model was built for, a preprocessing
    that prepares a photo, and a model that encodes an image and takes a decoding step."""
    assert isinstance(checkpoint, Checkpoint) and isinstance(checkpoint.vocab, Vocabulary)
    model = checkpoint.model
    assert_typed(model.config, "config")
    assert len(checkpoint.vocab) == model.config.vocab_size and model.vocab is checkpoint.vocab
    assert isinstance(checkpoint.epoch, int) and isinstance(checkpoint.metrics, dict)
    assert model.preprocessing.transform(Image.new("RGB", (20, 10))).isfinite().all()
    with torch.no_grad():
        state = model.init_state(model.encode(torch.zeros(1, 3, 32, 32)))
        logits, _, _ = model.step(torch.tensor([checkpoint.vocab.start_idx]), state)
    assert logits.shape == (1, len(checkpoint.vocab))


def _load(path: Path, data: bytes) -> None:
    write(path, data)
    check_reader(lambda: load_checkpoint(path), {path.name}, accept)


def test_seeds_load(seeds, tmp_path):
    for name, data in seeds.items():
        write(tmp_path / name, data)
        accept(load_checkpoint(tmp_path / name))


@fuzz_settings()
@given(data=st.data())
def test_bytes(seeds, tmp_path, data):
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    seed = seeds[name]
    head = 8 + struct.unpack("<Q", seed[:8])[0] if name.endswith(".safetensors") else 512
    _load(tmp_path / name, data.draw(byte_mutations(seed, head=head), label="file"))


# --- the safetensors header and our metadata in it --------------------------------------------------------

def _split(seed: bytes) -> tuple[dict[str, Any], bytes]:
    """(the header as JSON with our metadata parsed, the tensor bytes)."""
    size = struct.unpack("<Q", seed[:8])[0]
    header = json.loads(seed[8:8 + size])
    header["__metadata__"]["captionlens"] = json.loads(header["__metadata__"]["captionlens"])
    return header, seed[8 + size:]


def _join(header: Any, tensors: bytes) -> bytes:
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if isinstance(metadata, dict) and "captionlens" in metadata:
        header = {**header, "__metadata__": {**metadata, "captionlens": dump_json(metadata["captionlens"]).decode()}}
    text = dump_json(header)
    return Blob(struct.pack("<Q", len(text)) + text + tensors)


@fuzz_settings()
@given(data=st.data())
def test_header_and_metadata(seeds, tmp_path, data):
    name = data.draw(st.sampled_from([n for n in sorted(seeds) if n.endswith(".safetensors")]), label="seed")
    header, tensors = _split(seeds[name])
    # half the edits go to our metadata (config, vocabulary, epoch, metrics), half anywhere in the header
    if data.draw(st.booleans(), label="metadata only"):
        header["__metadata__"]["captionlens"] = data.draw(json_edits(header["__metadata__"]["captionlens"]))
    else:
        header = data.draw(json_edits(header), label="header")
    _load(tmp_path / name, _join(header, tensors))


def _metadata_file(seed: bytes, edit: Any) -> bytes:
    header, tensors = _split(seed)
    edit(header["__metadata__"]["captionlens"])
    return _join(header, tensors)


SAT, ST = "show-attend-tell.safetensors", "show-tell.safetensors"


@pytest.mark.parametrize("seed, edit", [
    pytest.param(SAT, lambda meta: meta["config"].update(hidden_size=10**12), id="huge hidden size"),
    pytest.param(SAT, lambda meta: meta["config"].update(hidden_size=-8), id="negative hidden size"),
    pytest.param(SAT, lambda meta: meta["config"]["preprocessing"].update(image_size=10**6), id="huge image size"),
    pytest.param(SAT, lambda meta: meta["config"].update(grid_size=10**5), id="huge grid"),
    pytest.param(SAT, lambda meta: meta["config"].update(grid_size=True), id="a grid that is a bool"),
    pytest.param(SAT, lambda meta: meta["config"].update(dropout=float("nan")), id="NaN dropout"),
    pytest.param(SAT, lambda meta: meta["config"]["preprocessing"].update(mean=[10**400, 0.4, 0.4]),
                 id="a mean past float"),
    pytest.param(SAT, lambda meta: meta["config"]["preprocessing"].update(std=[1e-320, 0.2, 0.2]),
                 id="a std of zero in float32"),
    pytest.param(ST, lambda meta: meta["config"].update(num_layers=2**31), id="two billion LSTM layers"),
    pytest.param(SAT, lambda meta: meta.update(epoch="three"), id="epoch as text"),
    pytest.param(SAT, lambda meta: meta.update(metrics=[1, 2]), id="metrics as a list"),
])
def test_metadata_regressions(seeds, tmp_path, seed, edit):
    """Values the fuzzer found crashing the loader, hanging it, or loaded into a model far larger than the file
    or unusable (a NaN dropout fails in the forward pass): each must be refused."""
    path = write(tmp_path / "model.safetensors", _metadata_file(seeds[seed], edit))
    check_refused(lambda: load_checkpoint(path), {path.name})


# --- legacy .pth dicts ------------------------------------------------------------------------------------

@st.composite
def pth_entries(draw: Any, model: Any) -> dict[str, Any]:
    """A training-script dict with its JSON entries edited, a tensor dropped, reshaped or retyped, or both."""
    entries = _pth_entries(model)
    state = dict(entries.pop("model_state_dict"))
    if draw(st.booleans(), label="edit JSON entries"):
        entries = draw(json_edits(entries), label="entries")
    if draw(st.booleans(), label="edit tensors"):
        key = draw(st.sampled_from(sorted(state)), label="tensor")
        op = draw(st.sampled_from(("drop", "reshape", "dtype", "scalar", "text", "empty")), label="tensor edit")
        if op == "drop":
            del state[key]
        elif op == "reshape":
            state[key] = state[key].reshape(-1)
        elif op == "dtype":
            state[key] = state[key].to(draw(st.sampled_from((torch.int64, torch.bool, torch.float64, torch.complex64,
                                                              torch.float16, torch.uint8))))
        elif op == "scalar":
            state[key] = torch.tensor(1.0)
        elif op == "text":
            state[key] = "weights"  # type: ignore[assignment]
        else:
            state[key] = torch.zeros(0)
    if isinstance(entries, dict):
        entries["model_state_dict"] = draw(st.sampled_from((state, [1, 2], "state", None)) if
                                           draw(st.integers(0, 9), label="state kind") == 0 else st.just(state))
    return entries


@fuzz_settings()
@given(data=st.data())
def test_pth_entries(tmp_path, data):
    model = _model(data.draw(st.sampled_from(ARCHITECTURES), label="architecture"))
    entries = data.draw(pth_entries(model))
    _load(tmp_path / "model.pth", _pth(entries, data.draw(st.booleans(), label="legacy")))


# Files the fuzzer found breaking the contract (kept as found, or as the smallest file that does the same),
# each with what the loader did before the fix.
@pytest.mark.parametrize("name, data", [
    pytest.param("model.pth", b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}q\x00("
                 b"X\x10\x00\x00\x00protocol_versionq\x01M\xe9\x03X\r\x00\x00\x00little_endianq\x02\x88X",
                 id="struct.error from torch's legacy reader of a truncated file"),
    pytest.param("model.pth", b"\x80\x04\x8c\x03a\nb\x94\x8c\x01c\x94\x93\x94.",
                 id="a two-line CheckpointError quoting a refused global's name (holding a newline) raw"),
])
def test_crashes_found(tmp_path, name, data):
    path = write(tmp_path / name, data)
    check_refused(lambda: load_checkpoint(path), {path.name})
