"""Importers of the two most-used PyTorch captioning tutorials' checkpoints (`captionlens convert yunjey`,
`captionlens convert sgrvinod`), checked against independent re-implementations of the tutorials'
models (`tutorial_reference`), never against captionlens' own output: the converted model's greedy
captions, word log-probs, attention weights and per-word Grad-CAM equal the reference's; nothing in a
tutorial's pickle runs; every file that does not fit is one error naming the file, key or shape; and a
tutorial's file handed to `load_checkpoint` says which `captionlens convert` reads it.

The tutorials' real depths (ResNet-152, ResNet-101) are built once per module; the other tests use
ResNet-18. Images are 64 px so that everything runs in seconds on two cores.
"""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from tutorial_reference import (
    LAYER4,
    Sgrvinod,
    Yunjey,
    data_parallel,
    load_sgrvinod_unsafely,
    load_yunjey_vocab_unsafely,
    make_sgrvinod,
    make_yunjey,
    noise_images,
    save_sgrvinod,
    save_yunjey_data_parallel,
    sgrvinod_word_map,
    write_yunjey_vocab,
    yunjey_vocabulary,
)

import captionlens
from captionlens.cli import main
from captionlens.data.images import Preprocessing
from captionlens.models import CheckpointError, decode, load_checkpoint
from captionlens.models.importers import (
    ConversionError,
    convert_sgrvinod,
    convert_yunjey,
    sgrvinod_checkpoint,
    yunjey_checkpoint,
)
from captionlens.models.importers.sgrvinod import GLOBALS
from captionlens.models.safe_pickle import TENSOR_GLOBALS, restricted_pickle_module

WORDS = ("a", "dog", "cat", "man", "woman", "on", "in", "the", "grass", "red", "ball", "with", "is", "playing",
         "sitting", "table", "two", "blue", "shirt", "beach")
SIZE = 64
MAX_LENGTH = 12
YUNJEY_INPUT = Preprocessing(image_size=SIZE, interpolation="lanczos")     # sample.py's resize, at 64 px
SGRVINOD_INPUT = Preprocessing(image_size=SIZE, interpolation="bilinear")  # caption.py's resize, at 64 px
# The tutorials' special-token spellings -> ours (our vocabulary puts them at 0..3 in this order).
OURS = {"<pad>": "<PAD>", "<start>": "<START>", "<end>": "<END>", "<unk>": "<UNK>"}

pytestmark = [pytest.mark.filterwarnings("ignore:Couldn't retrieve source code:UserWarning"),  # torch.save of modules
              pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")]  # torch.load of vocab.pkl


def _ours(words):
    return [OURS.get(w, w) for w in words]


@pytest.fixture(scope="module")
def images():
    return noise_images(6, seed=3)


# ---------------------------------------------------------------------------------------------------------------
# The tutorials' own depths, built, saved and converted once


@pytest.fixture(scope="module")
def yunjey152(tmp_path_factory) -> Yunjey:
    return make_yunjey(tmp_path_factory.mktemp("yunjey152"), WORDS, depth=152, size=SIZE)


@pytest.fixture(scope="module")
def yunjey152_model(yunjey152, tmp_path_factory):
    out = convert_yunjey(yunjey152.encoder_path, yunjey152.decoder_path, yunjey152.vocab_path,
                         tmp_path_factory.mktemp("converted") / "yunjey152.safetensors", preprocessing=YUNJEY_INPUT)
    return captionlens.load(out).model


@pytest.fixture(scope="module")
def sgrvinod101(tmp_path_factory) -> Sgrvinod:
    return make_sgrvinod(tmp_path_factory.mktemp("sgrvinod101"), WORDS, depth=101, size=SIZE)


@pytest.fixture(scope="module")
def sgrvinod101_model(sgrvinod101, tmp_path_factory):
    out = convert_sgrvinod(sgrvinod101.checkpoint_path, sgrvinod101.word_map_path,
                           tmp_path_factory.mktemp("converted") / "sgrvinod101.safetensors",
                           preprocessing=SGRVINOD_INPUT)
    return captionlens.load(out).model


# ResNet-18 versions for everything else (a two-layer LSTM for yunjey, as its --num_layers allows)

@pytest.fixture(scope="module")
def yunjey18(tmp_path_factory) -> Yunjey:
    return make_yunjey(tmp_path_factory.mktemp("yunjey18"), WORDS, depth=18, num_layers=2, seed=1, size=SIZE)


@pytest.fixture(scope="module")
def sgrvinod18(tmp_path_factory) -> Sgrvinod:
    return make_sgrvinod(tmp_path_factory.mktemp("sgrvinod18"), WORDS, depth=18, seed=1, size=SIZE)


@pytest.fixture(scope="module")
def sgrvinod18_legacy(tmp_path_factory) -> Sgrvinod:
    return make_sgrvinod(tmp_path_factory.mktemp("sgrvinod18_legacy"), WORDS, depth=18, seed=2, size=SIZE,
                         legacy=True)


def _assert_same_captions(decoded, reference, alphas=False):
    """captionlens' greedy captions (Decoded) equal the reference's, word for word, log-prob for log-prob."""
    for ours, ref in zip(decoded, reference, strict=True):
        assert ours.words == _ours(ref.words)
        np.testing.assert_allclose(ours.log_probs, ref.log_probs, rtol=0, atol=1e-5)
        assert ours.ended == ref.ended
        if ref.ended:
            assert ours.end_log_prob == pytest.approx(ref.end_log_prob, abs=1e-5)
        if alphas and ref.words:
            np.testing.assert_allclose(ours.alphas.numpy(), torch.stack(ref.alphas).numpy(), rtol=0, atol=1e-6)
    # not a degenerate model: the captions depend on the image, and some are long enough to matter
    assert len({" ".join(r.words) for r in reference}) >= 2
    assert max(len(r.words) for r in reference) >= 3


def _assert_cams_equal(ours, reference):
    assert ours.shape == reference.shape
    assert reference.max() > 0  # some word has a non-zero map, so the comparison means something
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5 * float(reference.max()))


# ---------------------------------------------------------------------------------------------------------------
# Exactness: captions, log-probs, attention and Grad-CAM equal the tutorial model's


def test_yunjey_resnet152_captions_and_log_probs_equal_the_tutorial_models(yunjey152, yunjey152_model, images):
    model = yunjey152_model
    config = model.config
    assert config.backbone == "resnet152" and config.backbone != "resnet50"  # read from the weights
    assert (config.embed_size, config.hidden_size, config.num_layers, config.head) == (16, 32, 1, "linear-batchnorm")
    assert config.preprocessing == YUNJEY_INPUT
    assert model.vocab.to_dict()["idx2word"] == ["<PAD>", "<START>", "<END>", "<UNK>", *WORDS]
    batch = torch.cat([yunjey152.prepare(image) for image in images])
    reference = yunjey152.greedy(batch, MAX_LENGTH)
    _assert_same_captions(decode(model, batch, model.vocab, beam_size=1, max_length=MAX_LENGTH), reference)
    # captionlens' own preprocessing of the PIL images is sample.py's LANCZOS resize and normalisation
    ours = torch.stack([model.preprocessing.transform(image) for image in images])
    torch.testing.assert_close(ours, batch, rtol=0, atol=1e-6)


def test_yunjey_gradcam_per_word_equals_autograd_on_the_tutorial_model(yunjey152, yunjey152_model, images):
    model = yunjey152_model
    batch = torch.cat([yunjey152.prepare(image) for image in images])
    reference = yunjey152.greedy(batch, MAX_LENGTH)
    # end to end: a PIL image, captionlens' preprocessing, its greedy caption and its Grad-CAM of every word
    # (the reference runs on the same batch of one: see reference_gradcam)
    k = max(range(len(images)), key=lambda i: len(reference[i].words))
    (single,) = yunjey152.greedy(batch[k:k + 1], MAX_LENGTH)
    assert len(single.words) >= 3
    explained = captionlens.explain(model, images[k], methods=("gradcam",), beam_size=1, max_length=MAX_LENGTH)
    assert explained.tokens == _ours(single.words)
    np.testing.assert_allclose(explained.log_probs, single.log_probs, rtol=0, atol=1e-5)
    (cam,) = yunjey152.gradcam(batch[k:k + 1], [single.ids])
    _assert_cams_equal(explained["gradcam"].raw, cam)
    # batched over images (every word of every image at once), on given captions
    worded = [i for i, r in enumerate(reference) if r.words]
    explained = captionlens.explain_batch(model, [images[i] for i in worded], ("gradcam",),
                                          captions=[" ".join(_ours(reference[i].words)) for i in worded])
    cams = yunjey152.gradcam(batch[worded], [reference[i].ids for i in worded])
    for ours, ref in zip(explained, cams, strict=True):
        _assert_cams_equal(ours["gradcam"].raw, ref)


def test_sgrvinod_resnet101_captions_log_probs_and_alphas_equal_the_tutorial_models(sgrvinod101, sgrvinod101_model,
                                                                                     images):
    model = sgrvinod101_model
    config = model.config
    assert config.backbone == "resnet101"
    assert (config.grid_size, config.attention_activation) == (14, "relu")  # from the pickled pool and attention
    assert (config.embed_size, config.hidden_size, config.attention_dim, config.dropout) == (16, 32, 16, 0.5)
    assert config.preprocessing == SGRVINOD_INPUT
    batch = torch.cat([sgrvinod101.prepare(image) for image in images])
    reference = sgrvinod101.greedy(batch, MAX_LENGTH)
    _assert_same_captions(decode(model, batch, model.vocab, beam_size=1, max_length=MAX_LENGTH), reference,
                          alphas=True)
    ours = torch.stack([model.preprocessing.transform(image) for image in images])
    torch.testing.assert_close(ours, batch, rtol=0, atol=1e-6)


def test_sgrvinod_attention_and_gradcam_per_word_equal_the_tutorial_models(sgrvinod101, sgrvinod101_model, images):
    model = sgrvinod101_model
    explained_words = 0
    for image in images[:3]:
        single = sgrvinod101.prepare(image)  # a batch of one, as explain's (see reference_gradcam)
        (reference,) = sgrvinod101.greedy(single, MAX_LENGTH)
        explained = captionlens.explain(model, image, methods=("attention", "gradcam"), beam_size=1,
                                        max_length=MAX_LENGTH)
        assert explained.tokens == _ours(reference.words)
        if not reference.words:
            continue
        explained_words += len(reference.words)
        np.testing.assert_allclose(explained.log_probs, reference.log_probs, rtol=0, atol=1e-5)
        alphas = explained["attention"].extras["alphas"]
        assert alphas.shape == (len(reference.words), 14 * 14)
        np.testing.assert_allclose(alphas, torch.stack(reference.alphas).numpy(), rtol=0, atol=1e-6)
        (cam,) = sgrvinod101.gradcam(single, [reference.ids])
        _assert_cams_equal(explained["gradcam"].raw, cam)
    assert explained_words >= 3


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_sgrvinod_both_torch_serialisations_convert_exactly(legacy, sgrvinod18, sgrvinod18_legacy, images):
    ref = sgrvinod18_legacy if legacy else sgrvinod18
    assert ref.checkpoint_path.read_bytes().startswith(b"PK") != legacy
    ckpt = sgrvinod_checkpoint(ref.checkpoint_path, ref.word_map_path, preprocessing=SGRVINOD_INPUT)
    assert (ckpt.model.config.backbone, ckpt.model.config.grid_size) == ("resnet18", 14)
    assert ckpt.model.config.attention_activation == "relu"
    assert (ckpt.epoch, ckpt.metrics["bleu-4"]) == (7, 0.2345)
    assert not ckpt.model.training and ckpt.model.vocab is ckpt.vocab
    batch = torch.cat([ref.prepare(image) for image in images])
    _assert_same_captions(decode(ckpt.model, batch, ckpt.vocab, beam_size=1, max_length=MAX_LENGTH),
                          ref.greedy(batch, MAX_LENGTH), alphas=True)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_sgrvinod_data_parallel_checkpoint_converts_exactly(legacy, sgrvinod18, tmp_path, images):
    """A fork's checkpoint of modules wrapped in nn.DataParallel (as pickled on a GPU machine) converts to the
    same model as the unwrapped file: the reference's captions, log-probs and attention."""
    wrapped = {**sgrvinod18.saved, "encoder": data_parallel(sgrvinod18.encoder),
               "decoder": data_parallel(sgrvinod18.decoder)}
    path = save_sgrvinod(tmp_path / "BEST_checkpoint_data_parallel.pth.tar", wrapped, legacy)
    # The oracle's own load: the file holds the wrappers, each with the GPU run's torch.device
    unsafe = load_sgrvinod_unsafely(path)
    assert all(isinstance(unsafe[k], nn.DataParallel) for k in ("encoder", "decoder"))
    assert unsafe["encoder"].src_device_obj == torch.device("cuda", 0)
    with pytest.raises(CheckpointError, match=f"`captionlens convert sgrvinod --checkpoint {path.name} --word-map"):
        load_checkpoint(path)
    ckpt = sgrvinod_checkpoint(path, sgrvinod18.word_map_path, preprocessing=SGRVINOD_INPUT)
    batch = torch.cat([sgrvinod18.prepare(image) for image in images])
    _assert_same_captions(decode(ckpt.model, batch, ckpt.vocab, beam_size=1, max_length=MAX_LENGTH),
                          sgrvinod18.greedy(batch, MAX_LENGTH), alphas=True)
    unwrapped = sgrvinod_checkpoint(sgrvinod18.checkpoint_path, sgrvinod18.word_map_path, preprocessing=SGRVINOD_INPUT)
    assert ckpt.model.config == unwrapped.model.config and (ckpt.epoch, ckpt.metrics["bleu-4"]) == (7, 0.2345)
    ours, theirs = ckpt.model.state_dict(), unwrapped.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_converting_a_legacy_format_file_prints_nothing(sgrvinod18_legacy, tmp_path):
    """torch's legacy loader checks each pickled module class's source and warns for every class it cannot
    read, which is every one of our stand-ins; the user sees only the result."""
    path = sgrvinod18_legacy.checkpoint_path
    out = tmp_path / "sgrvinod.safetensors"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning counts, however often it was raised before
        result = CliRunner().invoke(main, ["convert", "sgrvinod", "--checkpoint", str(path), "--word-map",
                                           str(sgrvinod18_legacy.word_map_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [str(warning.message) for warning in caught] == []
    assert result.stderr == "" and f"wrote {out}" in result.stdout
    # The oracle: the same restricted load without our filter warns, naming the stand-ins' classes
    module = restricted_pickle_module({**TENSOR_GLOBALS, **GLOBALS})
    with pytest.warns(UserWarning, match="Couldn't retrieve source code for container of type LSTMCell"):
        torch.load(path, map_location="cpu", pickle_module=module, weights_only=False)


def test_yunjey_data_parallel_state_dicts_convert_exactly(yunjey18, tmp_path, images):
    """State dicts saved from nn.DataParallel-wrapped models (every key `module.`-prefixed) convert to the
    reference's captions and log-probs; `load_checkpoint` names the convert command for them."""
    encoder, decoder = save_yunjey_data_parallel(tmp_path, yunjey18)
    assert all(key.startswith("module.") for key in torch.load(encoder, weights_only=True))  # torch's own prefix
    with pytest.raises(CheckpointError, match=f"--encoder {encoder.name} --decoder decoder-E-S.ckpt"):
        load_checkpoint(encoder)
    ckpt = yunjey_checkpoint(encoder, decoder, yunjey18.vocab_path, preprocessing=YUNJEY_INPUT)
    assert (ckpt.model.config.backbone, ckpt.model.config.num_layers) == ("resnet18", 2)
    batch = torch.cat([yunjey18.prepare(image) for image in images])
    _assert_same_captions(decode(ckpt.model, batch, ckpt.vocab, beam_size=1, max_length=MAX_LENGTH),
                          yunjey18.greedy(batch, MAX_LENGTH))
    unwrapped = yunjey_checkpoint(yunjey18.encoder_path, yunjey18.decoder_path, yunjey18.vocab_path,
                                  preprocessing=YUNJEY_INPUT)
    assert ckpt.model.config == unwrapped.model.config
    ours, theirs = ckpt.model.state_dict(), unwrapped.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_yunjey_state_dict_with_some_keys_prefixed_is_named(yunjey18, tmp_path):
    state = torch.load(yunjey18.encoder_path, weights_only=True)
    mixed = {(f"module.{key}" if key.startswith("resnet.") else key): value for key, value in state.items()}
    path = tmp_path / "encoder-mixed.ckpt"
    torch.save(mixed, path)
    plain = len([key for key in state if not key.startswith("resnet.")])
    with pytest.raises(ConversionError, match=rf"encoder-mixed\.ckpt: {len(state) - plain} of {len(state)} keys carry "
                                              r"nn\.DataParallel's 'module\.' prefix \(e\.g\. 'module\.resnet\.0"
                                              r"\.weight'\) and the others do not \(e\.g\. 'linear\.weight'\)"):
        yunjey_checkpoint(path, yunjey18.decoder_path, yunjey18.vocab_path)


def test_sgrvinod_vocabulary_rows_are_the_tutorials_rows_of_the_same_words(sgrvinod18):
    ckpt = sgrvinod_checkpoint(sgrvinod18.checkpoint_path, sgrvinod18.word_map_path)
    ours, theirs = ckpt.model.decoder, sgrvinod18.decoder
    word_map = sgrvinod18.word_map
    assert [ckpt.vocab.idx2word[i] for i in range(4)] == ["<PAD>", "<START>", "<END>", "<UNK>"]
    assert (word_map["<unk>"], word_map["<start>"], word_map["<end>"]) == (21, 22, 23)  # specials at the end
    for tutorial_word in ("<pad>", "<start>", "<end>", "<unk>", "a", "grass", "beach"):
        i, j = ckpt.vocab.word2idx[OURS.get(tutorial_word, tutorial_word)], word_map[tutorial_word]
        assert torch.equal(ours.embed.weight[i], theirs.embedding.weight[j]), tutorial_word
        assert torch.equal(ours.fc.weight[i], theirs.fc.weight[j]), tutorial_word
        assert torch.equal(ours.fc.bias[i], theirs.fc.bias[j]), tutorial_word
    assert ckpt.vocab.word2idx["a"] == 4 and word_map["a"] == 1  # the permutation is not the identity
    assert not torch.equal(ours.embed.weight, theirs.embedding.weight)


def test_grid_size_can_be_overridden(sgrvinod18, images):
    ckpt = sgrvinod_checkpoint(sgrvinod18.checkpoint_path, sgrvinod18.word_map_path, preprocessing=SGRVINOD_INPUT,
                               grid_size=7)
    assert ckpt.model.config.grid_size == 7
    batch = torch.cat([sgrvinod18.prepare(image) for image in images[:3]])
    pool = sgrvinod18.encoder.adaptive_pool
    try:
        sgrvinod18.encoder.adaptive_pool = nn.AdaptiveAvgPool2d((7, 7))
        reference = sgrvinod18.greedy(batch, MAX_LENGTH)
    finally:
        sgrvinod18.encoder.adaptive_pool = pool
    decoded = decode(ckpt.model, batch, ckpt.vocab, beam_size=1, max_length=MAX_LENGTH)
    _assert_same_captions(decoded, reference, alphas=True)
    assert all(d.alphas.shape[1] == 7 * 7 for d in decoded if d.words)


# ---------------------------------------------------------------------------------------------------------------
# Nothing in a tutorial's pickle runs


class _Payload:
    """Pickles as a call `fn(*args)`: whoever unpickles it without restrictions runs that call."""

    def __init__(self, fn, *args) -> None:
        self.call = (fn, args)

    def __reduce__(self):
        return self.call


def _payload(attack, marker):
    if attack == "path-touch":
        return _Payload(pathlib.Path.touch, marker)
    return _Payload(os.system, f"touch {shlex.quote(str(marker))}")


def _refused(attack, protocol):
    """The global the restricted unpickler meets first in the payload, as pickle writes it at `protocol`."""
    if attack == "os-system":
        return f"{os.system.__module__}.system"
    if protocol >= 4:
        return f"{pathlib.Path.touch.__module__}.Path.touch"
    return "__builtin__.getattr"  # protocol 2 writes Path.touch as getattr(Path, "touch"), Python 2 names


@pytest.mark.parametrize("attack", ["path-touch", "os-system"])
def test_vocab_pkl_with_a_payload_is_refused_and_runs_nothing(attack, yunjey18, tmp_path):
    marker = tmp_path / "MARKER"
    vocab = yunjey_vocabulary(WORDS)
    vocab.payload = _payload(attack, marker)  # an otherwise valid vocab.pkl
    path = write_yunjey_vocab(tmp_path / "vocab.pkl", vocab)
    with pytest.raises(ConversionError) as info:
        yunjey_checkpoint(yunjey18.encoder_path, yunjey18.decoder_path, path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to unpickle the global {_refused(attack, 4)!r}")
    assert "\n" not in message
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="captionlens convert yunjey"):
        load_checkpoint(path)
    assert not marker.exists()
    # The oracle: the tutorial's own plain pickle.load of the same file runs the payload.
    load_yunjey_vocab_unsafely(path)
    assert marker.exists()


@pytest.mark.parametrize(("where", "attack", "legacy"), [("entry", "path-touch", False),
                                                         ("optimizer", "os-system", False),
                                                         ("data-parallel", "os-system", False),
                                                         ("entry", "os-system", True),
                                                         ("optimizer", "path-touch", True),
                                                         ("data-parallel", "path-touch", True)])
def test_sgrvinod_checkpoint_with_a_payload_is_refused_and_runs_nothing(where, attack, legacy, sgrvinod18, tmp_path):
    marker = tmp_path / "MARKER"
    payload = _payload(attack, marker)
    state = dict(sgrvinod18.saved)
    if where == "entry":
        state["payload"] = payload
    elif where == "data-parallel":  # an attribute of the nn.DataParallel wrapped around the (valid) encoder
        state["encoder"] = data_parallel(sgrvinod18.encoder)
        state["encoder"].payload = payload
    else:  # inside the decoder optimizer's param group, among its hyperparameters
        optimizer = torch.optim.Adam(sgrvinod18.decoder.parameters(), lr=4e-4)
        optimizer.param_groups[0]["payload"] = payload
        state["decoder_optimizer"] = optimizer
    path = save_sgrvinod(tmp_path / "BEST_checkpoint_evil.pth.tar", state, legacy)
    with pytest.raises(ConversionError) as info:
        sgrvinod_checkpoint(path, sgrvinod18.word_map_path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to unpickle the global {_refused(attack, 2)!r}")
    assert "\n" not in message
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="captionlens convert sgrvinod"):
        load_checkpoint(path)
    assert not marker.exists()
    # The oracle: the tutorial's own torch.load (weights_only=False) of the same file runs the payload.
    load_sgrvinod_unsafely(path)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# Files that do not fit: one error naming the file, key or shape


def test_yunjey_decoder_of_another_run_is_named(yunjey18, tmp_path):
    other = make_yunjey(tmp_path, WORDS, depth=18, embed_size=24)  # its decoder embeds 24-d, the encoder makes 16-d
    with pytest.raises(ConversionError, match=r"decoder-5-3000\.ckpt: 'embed\.weight' has 24 columns .* 16-d"):
        yunjey_checkpoint(yunjey18.encoder_path, other.decoder_path, yunjey18.vocab_path)


def test_sgrvinod_decoder_that_does_not_fit_the_encoder_is_named(tmp_path):
    ref = make_sgrvinod(tmp_path, WORDS, depth=18, encoder_dim=2048)  # a ResNet-101 decoder on a ResNet-18 trunk
    with pytest.raises(CheckpointError, match=r"BEST_checkpoint_.*: 'decoder\.attention\.encoder_att\.weight' "
                                              r"has shape \(16, 2048\), model expects \(16, 512\)"):
        sgrvinod_checkpoint(ref.checkpoint_path, ref.word_map_path)


@pytest.mark.parametrize("tutorial", ["yunjey", "sgrvinod"])
def test_trunk_that_fits_no_known_resnet_is_named(tutorial, yunjey18, tmp_path):
    """One layer4 conv with 500 output channels instead of 512: not a ResNet-18 (nor any other)."""
    expected = r"no known backbone .*resnet18: '(resnet\.7|layer4)\.1\.conv2\.weight' has shape \(500, 512, 3, 3\)"
    if tutorial == "yunjey":
        state = torch.load(yunjey18.encoder_path, weights_only=True)
        state["resnet.7.1.conv2.weight"] = torch.zeros(500, 512, 3, 3)
        encoder = tmp_path / "encoder-1-100.ckpt"
        torch.save(state, encoder)
        with pytest.raises(ConversionError, match=r"encoder-1-100\.ckpt: " + expected):
            yunjey_checkpoint(encoder, yunjey18.decoder_path, yunjey18.vocab_path)
    else:
        ref = make_sgrvinod(tmp_path, WORDS, depth=18)
        ref.encoder.resnet[LAYER4][1].conv2 = nn.Conv2d(512, 500, 3, padding=1, bias=False)
        save_sgrvinod(ref.checkpoint_path, ref.saved)
        with pytest.raises(ConversionError, match=r"BEST_checkpoint_.*\.pth\.tar: " + expected):
            sgrvinod_checkpoint(ref.checkpoint_path, ref.word_map_path)


def test_vocabulary_with_the_wrong_number_of_words_is_named(yunjey18, sgrvinod18, tmp_path):
    vocab = write_yunjey_vocab(tmp_path / "vocab.pkl", yunjey_vocabulary(WORDS[:-1]))
    with pytest.raises(ConversionError, match=r"vocab\.pkl: 23 words, but the decoder's 'embed\.weight' has 24 rows"):
        yunjey_checkpoint(yunjey18.encoder_path, yunjey18.decoder_path, vocab)
    word_map = tmp_path / "WORDMAP_other.json"
    word_map.write_text(json.dumps(sgrvinod_word_map(WORDS[:-1])))
    with pytest.raises(ConversionError, match=r"WORDMAP_other\.json: 23 words, but the decoder's 'embedding\.weight' "
                                              r"has 24 rows"):
        sgrvinod_checkpoint(sgrvinod18.checkpoint_path, word_map)


# ---------------------------------------------------------------------------------------------------------------
# Files are recognised by their content


@pytest.mark.parametrize("which", ["yunjey-encoder", "yunjey-decoder", "yunjey-vocab", "sgrvinod", "sgrvinod-legacy"])
def test_load_checkpoint_says_which_convert_command_reads_a_tutorials_file(which, yunjey18, sgrvinod18,
                                                                             sgrvinod18_legacy):
    path = {"yunjey-encoder": yunjey18.encoder_path, "yunjey-decoder": yunjey18.decoder_path,
            "yunjey-vocab": yunjey18.vocab_path, "sgrvinod": sgrvinod18.checkpoint_path,
            "sgrvinod-legacy": sgrvinod18_legacy.checkpoint_path}[which]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    if which.startswith("sgrvinod"):
        assert f"`captionlens convert sgrvinod --checkpoint {path.name} --word-map" in message
    else:
        part = which.removeprefix("yunjey-")
        assert "`captionlens convert yunjey --encoder" in message
        assert {"vocab": "pickled Vocabulary", "encoder": "an encoder state dict",
                "decoder": "a decoder state dict"}[part] in message
        if part != "vocab":                                  # the command names the file itself
            assert f"--{part} {path.name} " in message


def test_converted_file_loads_whatever_its_name(yunjey18, tmp_path, images):
    out = convert_yunjey(yunjey18.encoder_path, yunjey18.decoder_path, yunjey18.vocab_path,
                         tmp_path / "model.safetensors", preprocessing=YUNJEY_INPUT)
    renamed = shutil.copy(out, tmp_path / "model.bin")
    ckpt = load_checkpoint(renamed)
    assert ckpt.model.config == load_checkpoint(out).model.config
    assert ckpt.model.config.num_layers == 2
    assert ckpt.metrics["converted_from"] == ["encoder-5-3000.ckpt", "decoder-5-3000.ckpt", "vocab.pkl"]
    batch = torch.cat([yunjey18.prepare(image) for image in images])
    _assert_same_captions(decode(ckpt.model, batch, ckpt.vocab, beam_size=1, max_length=MAX_LENGTH),
                          yunjey18.greedy(batch, MAX_LENGTH))


# ---------------------------------------------------------------------------------------------------------------
# The CLI


def test_cli_converts_a_yunjey_run(yunjey18, tmp_path, images):
    out = tmp_path / "yunjey.safetensors"
    result = CliRunner().invoke(main, ["convert", "yunjey", "--encoder", str(yunjey18.encoder_path),
                                       "--decoder", str(yunjey18.decoder_path), "--vocab", str(yunjey18.vocab_path),
                                       "--out", str(out), "--image-size", str(SIZE), "--interpolation", "lanczos"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "resnet18" in result.output
    model = captionlens.load(out).model
    assert model.config.preprocessing == YUNJEY_INPUT
    explained = captionlens.explain(model, images[0], methods=("gradcam",), beam_size=1, max_length=MAX_LENGTH)
    (reference,) = yunjey18.greedy(yunjey18.prepare(images[0]), MAX_LENGTH)
    assert explained.tokens == _ours(reference.words)
    np.testing.assert_allclose(explained.log_probs, reference.log_probs, rtol=0, atol=1e-5)


def test_cli_converts_a_sgrvinod_run_with_its_grid_overridden(sgrvinod18, tmp_path, images):
    out = tmp_path / "sgrvinod.safetensors"
    result = CliRunner().invoke(main, ["convert", "sgrvinod", "--checkpoint", str(sgrvinod18.checkpoint_path),
                                       "--word-map", str(sgrvinod18.word_map_path), "--out", str(out),
                                       "--image-size", str(SIZE), "--interpolation", "bilinear", "--grid-size", "7"])
    assert result.exit_code == 0, result.output
    model = captionlens.load(out).model
    assert (model.config.grid_size, model.config.preprocessing) == (7, SGRVINOD_INPUT)
    pool = sgrvinod18.encoder.adaptive_pool
    try:
        sgrvinod18.encoder.adaptive_pool = nn.AdaptiveAvgPool2d((7, 7))
        (reference,) = sgrvinod18.greedy(sgrvinod18.prepare(images[1]), MAX_LENGTH)
    finally:
        sgrvinod18.encoder.adaptive_pool = pool
    explained = captionlens.explain(model, images[1], methods=("attention",), beam_size=1, max_length=MAX_LENGTH)
    assert explained.tokens == _ours(reference.words) and reference.words
    np.testing.assert_allclose(explained["attention"].extras["alphas"], torch.stack(reference.alphas).numpy(),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("tutorial", ["yunjey", "sgrvinod", "sgrvinod-payload"])
def test_cli_errors_are_one_line_and_exit_2(tutorial, yunjey18, sgrvinod18, tmp_path):
    marker = tmp_path / "MARKER"
    missing = tmp_path / "decoder-9-9.ckpt"
    if tutorial == "yunjey":
        args = ["yunjey", "--encoder", yunjey18.encoder_path, "--decoder", missing, "--vocab", yunjey18.vocab_path]
        expected = f"error: decoder not found: {missing}"
    elif tutorial == "sgrvinod":
        missing = tmp_path / "WORDMAP_nope.json"
        args = ["sgrvinod", "--checkpoint", sgrvinod18.checkpoint_path, "--word-map", missing]
        expected = f"error: word map not found: {missing}"
    else:
        evil = save_sgrvinod(tmp_path / "BEST_checkpoint_evil.pth.tar",
                             {**sgrvinod18.saved, "payload": _payload("os-system", marker)})
        args = ["sgrvinod", "--checkpoint", evil, "--word-map", sgrvinod18.word_map_path]
        expected = f"error: {evil}: refused to unpickle the global {_refused('os-system', 2)!r}"
    out = tmp_path / "model.safetensors"
    result = CliRunner().invoke(main, ["convert", *map(str, args), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert not out.exists() and not marker.exists()
