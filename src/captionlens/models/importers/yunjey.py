"""yunjey/pytorch-tutorial `tutorials/03-advanced/image_captioning` -> a captionlens checkpoint.

What that tutorial writes, and how it maps:
  encoder-E-S.ckpt  `torch.save(EncoderCNN.state_dict())`: `resnet.0`..`resnet.7` (a ResNet's children
                    less `fc`; ResNet-152 in the tutorial, any registered depth here), `linear` (C -> embed)
                    and `bn` (BatchNorm1d) -> `encoder.resnet.<conv1..layer4>`, `encoder.linear`, `encoder.bn`
                    (our Show-and-Tell with `head="linear-batchnorm"`);
  decoder-E-S.ckpt  `torch.save(DecoderRNN.state_dict())`: `embed`, `lstm` (nn.LSTM, batch_first; the image
                    feature is its first input), `linear` (hidden -> V) -> `decoder.embed/lstm/fc`;
  vocab.pkl         a pickled `Vocabulary` (`__main__.Vocabulary` when build_vocab.py ran as a script) with
                    `word2idx`, `idx2word`, `idx`; read by a restricted unpickler into a plain stand-in.
The input is sample.py's: 224 x 224, PIL's LANCZOS resize, ImageNet normalisation. A state dict saved from
an `nn.DataParallel`-wrapped model (every key prefixed `module.`) is read as the model's own.

Recognised by `load_checkpoint` (which reads none of them), with a message naming `captionlens convert
yunjey`: vocab.pkl as a pickle naming a `Vocabulary` class, the encoder and decoder by their state dicts'
keys (`ENCODER_KEYS`, `DECODER_KEYS`).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.models.checkpoints import Checkpoint, register_foreign_format
from captionlens.models.importers.common import (
    ConversionError,
    backbone_of,
    build_checkpoint,
    lstm_layers,
    map_keys,
    read_state_dict,
    require_shape,
    without_data_parallel_prefix,
    write,
)
from captionlens.models.safe_pickle import BrokenPickle, UnsafePickle, load_pickle, stand_in
from captionlens.models.show_tell import ShowTellConfig

VOCABULARY_CLASS = "Vocabulary"  # build_vocab.py's class; pickled as __main__.Vocabulary when run as a script
VOCAB_GLOBALS = {name: stand_in(name) for name in (f"__main__.{VOCABULARY_CLASS}", f"build_vocab.{VOCABULARY_CLASS}")}
PREPROCESSING = Preprocessing(image_size=224, interpolation="lanczos")
# The tutorial's state-dict key prefixes -> ours; a state dict with every prefix of one is that part's.
ENCODER_KEYS = {"resnet.": "encoder.resnet.", "linear.": "encoder.linear.", "bn.": "encoder.bn."}
DECODER_KEYS = {"embed.": "decoder.embed.", "lstm.": "decoder.lstm.", "linear.": "decoder.fc."}
PARTS = {"encoder": ENCODER_KEYS, "decoder": DECODER_KEYS}


def recognise_refused(names: set[str], path: Path) -> str | None:
    """The convert command for a pickle (refused by torch's weights-only loader) naming a Vocabulary class
    (the tutorial's vocab.pkl), else None."""
    if not any(name.rsplit(".", 1)[-1] == VOCABULARY_CLASS for name in names):
        return None
    return ("a pickled Vocabulary (yunjey's pytorch-tutorial vocab.pkl), not a model: pass it to "
            "`captionlens convert yunjey --encoder ENC.ckpt --decoder DEC.ckpt --vocab vocab.pkl "
            "--out model.safetensors`")


def recognise_loaded(data: Mapping[str, Any], path: Path) -> str | None:
    """The convert command for the tutorial's encoder or decoder state dict (a key with each of the part's
    prefixes, after nn.DataParallel's `module.` if every key has it), else None."""
    try:
        keys = without_data_parallel_prefix(path, data)
    except ConversionError:
        return None
    part = next((part for part, rules in PARTS.items()
                 if all(any(isinstance(key, str) and key.startswith(prefix) for key in keys) for prefix in rules)),
                None)
    if part is None:
        return None
    encoder, decoder = (path.name, "decoder-E-S.ckpt") if part == "encoder" else ("encoder-E-S.ckpt", path.name)
    article = "an" if part == "encoder" else "a"
    return (f"{article} {part} state dict of yunjey's pytorch-tutorial image captioning, not a whole model: "
            f"convert the pair with `captionlens convert yunjey --encoder {encoder} --decoder {decoder} "
            "--vocab vocab.pkl --out model.safetensors`")


register_foreign_format("yunjey", refused=recognise_refused, loaded=recognise_loaded)


def read_vocab(path: Path) -> list[str]:
    """The index -> word list of a yunjey vocab.pkl, without running anything the file names."""
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary not found: {path}")
    try:
        obj = load_pickle(path, VOCAB_GLOBALS)
    except BrokenPickle as exc:
        raise ConversionError(f"{path}: not a pickled vocabulary ({exc})") from None
    except UnsafePickle as exc:
        raise ConversionError(f"{path}: {exc}") from None
    idx2word = vars(obj).get("idx2word") if hasattr(obj, "__dict__") else None
    if not isinstance(idx2word, dict) or not idx2word:
        raise ConversionError(f"{path}: expected a Vocabulary with an 'idx2word' dict, got {type(obj).__name__}")
    if sorted(idx2word) != list(range(len(idx2word))) or not all(isinstance(w, str) for w in idx2word.values()):
        raise ConversionError(f"{path}: idx2word must map 0..N-1 to words")
    return [idx2word[i] for i in range(len(idx2word))]


def yunjey_checkpoint(encoder: str | Path, decoder: str | Path, vocab: str | Path,
                      preprocessing: Preprocessing = PREPROCESSING) -> Checkpoint:
    """The tutorial's model as our Show-and-Tell (linear + BatchNorm head), exactly: every tensor placed,
    sizes read from the weights, vocabulary rows permuted to our special-token order."""
    encoder, decoder, vocab = Path(encoder), Path(decoder), Path(vocab)
    enc = map_keys(encoder, read_state_dict(encoder, "encoder"), ENCODER_KEYS)
    dec = map_keys(decoder, read_state_dict(decoder, "decoder"), DECODER_KEYS)
    embed_size, _ = require_shape(encoder, enc, "encoder.linear.weight", 2)
    vocab_size, word_size = require_shape(decoder, dec, "decoder.embed.weight", 2)
    _, hidden_size = require_shape(decoder, dec, "decoder.fc.weight", 2)
    if word_size != embed_size:
        raise ConversionError(f"{decoder}: 'embed.weight' has {word_size} columns but the encoder's 'linear.weight' "
                              f"makes {embed_size}-d features; are these an encoder and decoder of the same run?")
    words = read_vocab(vocab)
    if len(words) != vocab_size:
        raise ConversionError(f"{vocab}: {len(words)} words, but the decoder's 'embed.weight' has {vocab_size} rows")
    try:
        ours, order = Vocabulary.from_index_words(words)
    except ValueError as exc:
        raise ConversionError(f"{vocab}: {exc}") from None
    config = ShowTellConfig(vocab_size=vocab_size, embed_size=embed_size, hidden_size=hidden_size,
                            num_layers=lstm_layers(dec, "decoder.lstm."), backbone=backbone_of(encoder, enc),
                            head="linear-batchnorm", preprocessing=preprocessing)
    metrics: dict[str, Any] = {"source": "yunjey/pytorch-tutorial image_captioning",
                               "converted_from": [encoder.name, decoder.name, vocab.name]}
    return build_checkpoint(encoder, config, ours, order, {**enc, **dec}, metrics)


def convert_yunjey(encoder: str | Path, decoder: str | Path, vocab: str | Path, out: str | Path,
                   preprocessing: Preprocessing = PREPROCESSING) -> Path:
    """`captionlens convert yunjey`: write the tutorial's model as a captionlens checkpoint at `out`."""
    return write(yunjey_checkpoint(encoder, decoder, vocab, preprocessing), Path(out))
