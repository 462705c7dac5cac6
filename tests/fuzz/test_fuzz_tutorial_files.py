"""Fuzzing the readers of the two tutorials' files: yunjey's vocab.pkl (`yunjey.read_vocab`, through the
restricted unpickler), sgrvinod's checkpoint (`sgrvinod.read_checkpoint`: torch's zip and legacy formats,
through the restricted unpickler), sgrvinod's word map (`sgrvinod.read_word_map`), and what `load_checkpoint`
says of a pickle it refuses (`safe_pickle.pickle_globals`). See harness.py for the contract. Each crash
the fuzzer found is kept as a test of its input (`TUTORIAL_CRASHES`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from harness import Seeds, byte_mutations, check_reader, check_refused, fuzz_settings, json_mutations, write
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.checkpoints import load_checkpoint
from captionlens.models.importers.sgrvinod import read_checkpoint, read_word_map
from captionlens.models.importers.yunjey import read_vocab
from captionlens.models.safe_pickle import pickle_globals

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tutorial_reference import (  # noqa: E402
    DecoderWithAttention,
    Encoder,
    save_sgrvinod,
    sgrvinod_word_map,
    write_yunjey_vocab,
    yunjey_vocabulary,
)

READER = "yunjey vocab.pkl, sgrvinod checkpoint and word map, `pickle_globals`"  # its row in the table of `make fuzz`

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]
WORDS = ("a", "dog", "runs")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    """vocab.pkl, a small sgrvinod checkpoint in both torch formats (the tutorial's classes and optimizer,
    a two-layer trunk in place of the ResNet) and its word map."""
    folder = tmp_path_factory.mktemp("tutorials")
    torch.manual_seed(0)
    encoder = Encoder(2, depth=18)
    encoder.resnet = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    decoder = DecoderWithAttention(4, 4, 4, len(WORDS) + 4, encoder_dim=4)
    optimizer = torch.optim.Adam(decoder.parameters())
    state = {"epoch": 7, "epochs_since_improvement": 0, "bleu-4": 0.2, "encoder": encoder, "decoder": decoder,
             "encoder_optimizer": None, "decoder_optimizer": optimizer}
    files = Seeds()
    files["vocab.pkl"] = write_yunjey_vocab(folder / "vocab.pkl", yunjey_vocabulary(WORDS)).read_bytes()
    for legacy in (False, True):
        path = save_sgrvinod(folder / f"checkpoint{'-legacy' if legacy else ''}.pth.tar", state, legacy)
        files[path.name] = path.read_bytes()
    files["WORDMAP.json"] = json.dumps(sgrvinod_word_map(WORDS)).encode()
    return files


def test_seeds_load(seeds, tmp_path):
    assert read_vocab(write(tmp_path / "vocab.pkl", seeds["vocab.pkl"]))[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    for name in ("checkpoint.pth.tar", "checkpoint-legacy.pth.tar"):
        data = read_checkpoint(write(tmp_path / name, seeds[name]))
        assert {"encoder", "decoder"} <= set(data)
        assert "models.Encoder" in pickle_globals(tmp_path / name)
    vocab, order = read_word_map(write(tmp_path / "WORDMAP.json", seeds["WORDMAP.json"]))
    assert len(vocab) == len(order) == len(WORDS) + 4


def _check(read: Any, path: Path, accept: Any = None) -> None:
    check_reader(read, {path.name}, accept, files=[path])


def accept_vocab(words: list[str]) -> None:
    assert isinstance(words, list) and words and all(isinstance(w, str) for w in words)


def accept_checkpoint(data: dict) -> None:
    assert isinstance(data, dict) and {"encoder", "decoder"} <= set(data)


def accept_word_map(result: tuple[Vocabulary, list[int]]) -> None:
    vocab, order = result
    assert isinstance(vocab, Vocabulary) and sorted(order) == list(range(len(vocab)))


@fuzz_settings()
@given(data=st.data())
def test_vocab_pkl(seeds, tmp_path, data):
    path = write(tmp_path / "vocab.pkl", data.draw(byte_mutations(seeds["vocab.pkl"]), label="file"))
    _check(lambda: read_vocab(path), path, accept_vocab)


@fuzz_settings()
@given(data=st.data())
def test_sgrvinod_checkpoint(seeds, tmp_path, data):
    name = data.draw(st.sampled_from(("checkpoint.pth.tar", "checkpoint-legacy.pth.tar")), label="seed")
    path = write(tmp_path / name, data.draw(byte_mutations(seeds[name], head=2048), label="file"))
    _check(lambda: read_checkpoint(path), path, accept_checkpoint)


@fuzz_settings()
@given(data=st.data())
def test_sgrvinod_word_map(seeds, tmp_path, data):
    path = write(tmp_path / "WORDMAP.json", data.draw(json_mutations(json.loads(seeds["WORDMAP.json"])), label="file"))
    _check(lambda: read_word_map(path), path, accept_word_map)


@fuzz_settings()
@given(data=st.data())
def test_refused_pickles(seeds, tmp_path, data):
    """A pickle torch's weights-only loader refuses is described by the globals it names: `load_checkpoint`
    reads them with `pickle_globals`, which must not crash on a broken pickle either."""
    name = data.draw(st.sampled_from(("vocab.pkl", "checkpoint-legacy.pth.tar", "checkpoint.pth.tar")), label="seed")
    path = write(tmp_path / name, data.draw(byte_mutations(seeds[name], head=2048), label="file"))
    _check(lambda: load_checkpoint(path), path)
    _check(lambda: pickle_globals(path), path, lambda names: isinstance(names, set))


def _put(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def _frame(length: int) -> Any:
    """vocab.pkl whose protocol-4 FRAME declares `length` bytes (its 8-byte length follows the opcode at 2)."""
    return lambda seeds: seeds["vocab.pkl"][:3] + length.to_bytes(8, "little") + seeds["vocab.pkl"][11:]


def _legacy_prefix(opcode: bytes) -> Any:
    """The legacy checkpoint with `opcode` (and its argument) before its first pickle's first opcode."""
    return lambda seeds: seeds["checkpoint-legacy.pth.tar"][:2] + opcode + seeds["checkpoint-legacy.pth.tar"][2:]


def _zip_edit(edit: Any) -> Any:
    return lambda seeds: edit(seeds["checkpoint.pth.tar"])


# Crashes the fuzzer found in safe_pickle.py and importers/, each kept as the input that found it.
TUTORIAL_CRASHES = [
    ("read_vocab", "vocab.pkl", lambda seeds: seeds["vocab.pkl"][:1],
     "yunjey.read_vocab: a truncated vocab.pkl raises pickle.UnpicklingError ('pickle data was truncated'); "
     "read_vocab catches UnsafePickle only, not the plain UnpicklingError load_pickle raises for broken data"),
    ("read_vocab", "vocab.pkl", _frame(2**64 - 1),
     "yunjey.read_vocab: a FRAME length past sys.maxsize raises OverflowError, which read_vocab does not catch"),
    ("read_vocab", "vocab.pkl", _frame(2**34),
     "safe_pickle.load_pickle: a FRAME declaring 16 GiB is allocated before it is read (MemoryError under a "
     "3 GiB address-space limit: a memory blow-up; load_pickle should cap a frame/bytes length by the file size)"),
    ("read_vocab", "vocab.pkl", lambda seeds: seeds["vocab.pkl"].replace(b"\x8c\x08__main__", b"\x8c\x08\n_main__"),
     "safe_pickle.RestrictedUnpickler.find_class: UnsafePickle quotes the refused global's name raw, so a name "
     "holding a newline makes read_vocab's ConversionError two lines"),
    ("read_checkpoint", "checkpoint.pth.tar", _legacy_prefix(b"*"),
     "sgrvinod.read_checkpoint: a broken pickle raises pickle.UnpicklingError ('invalid load key'), not caught"),
    ("read_checkpoint", "checkpoint.pth.tar", _legacy_prefix(b"\x8d" + b"\xff" * 8),
     "sgrvinod.read_checkpoint: BINUNICODE8 longer than sys.maxsize raises OverflowError, not caught"),
    ("read_checkpoint", "checkpoint.pth.tar", _legacy_prefix(b"\x8e" + (2**34).to_bytes(8, "little")),
     "safe_pickle.load_torch: BINBYTES8 declaring 16 GiB is allocated before it is read (MemoryError under "
     "the 3 GiB limit: a memory blow-up)"),
    ("read_checkpoint", "checkpoint.pth.tar", lambda seeds: b"\x80\x02F\x01\n.",
     "sgrvinod.read_checkpoint: its ConversionError quotes the pickle's own text raw (ValueError: could not "
     "convert string to float: '\\x01\\n'), so the message is two lines"),
    ("read_checkpoint", "checkpoint.pth.tar", _zip_edit(lambda z: _put(z, 128, b"Q")),
     "sgrvinod.read_checkpoint: torch's zip loader asserts ('saved_id must be a tuple, got str') on a "
     "persistent id of the wrong kind; AssertionError is not caught"),
    ("read_checkpoint", "checkpoint.pth.tar", _zip_edit(lambda z: _put(z, z.index(b"PK\x01\x02"), b"PX")),
     "sgrvinod.read_checkpoint: safe_pickle.is_torchscript opens a zip with a broken central directory outside "
     "read_checkpoint's try: zipfile.BadZipFile escapes"),
    ("pickle_globals", "checkpoint.pth.tar", _zip_edit(lambda z: _put(z, 128, b"Q")),
     "safe_pickle.pickle_globals: a zip member with a bad CRC raises zipfile.BadZipFile"),
    ("pickle_globals", "checkpoint.pth.tar", _zip_edit(lambda z: z[:55] + z[117:]),
     "safe_pickle.pickle_globals: a zip whose offsets point past its data raises OSError (Errno 22)"),
    ("pickle_globals", "checkpoint.pth.tar", _zip_edit(lambda z: _put(z, 51, b"\xef\xbb\xbf")),
     "safe_pickle.pickle_globals: a member name that is not UTF-8 raises UnicodeDecodeError naming no file"),
]
READERS = {"read_vocab": read_vocab, "read_checkpoint": read_checkpoint, "pickle_globals": pickle_globals}


@pytest.mark.parametrize("reader, name, build, found", [
    pytest.param(*crash, id=f"{crash[0]}-{i}") for i, crash in enumerate(TUTORIAL_CRASHES)])
def test_crashes_found_stay_fixed(seeds, tmp_path, reader, name, build, found):
    path = write(tmp_path / name, build(seeds))
    if reader == "pickle_globals":  # it describes what it can, and may: it must not crash
        check_reader(lambda: pickle_globals(path), {path.name}, lambda names: isinstance(names, set))
    else:
        check_refused(lambda: READERS[reader](path), {path.name})
