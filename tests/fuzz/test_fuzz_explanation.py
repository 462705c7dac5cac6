"""Fuzzing `CaptionExplanation.load` and `read_header`: explanation.json and explanation.npz of formats 3
(all five methods, a suspect rule, a kept JPEG), 2 and 1, mutated as JSON, as bytes, and as arrays (an array
dropped, of another dtype or shape, declared larger than its data, an object array, another image). See
harness.py for the contract."""
from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import (
    Blob,
    Seeds,
    assert_typed,
    byte_mutations,
    check_reader,
    check_refused,
    fuzz_settings,
    json_mutations,
    write,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from captionlens.explain import explain
from captionlens.explain.result import CaptionExplanation, ExplanationHeader
from captionlens.explain.suspect import SuspectFlag, SuspectRule
from captionlens.viz.tiles import word_tiles
from zoo import SHAPE_WORDS, tiny_captioner

# its row in the table of `make fuzz`
READER = "explanation.json + .npz, formats 1-3: `CaptionExplanation.load`, `read_header`"

METHODS = ("gradcam", "gradcam++", "attention", "lime", "occlusion")
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN to ints


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    """{"<format>.json": text, "<format>.npz": bytes} for formats 3 (with a suspect rule, the source kept as a
    JPEG), 2 and 1, each explaining a 3-word caption of a 20 x 24 image with every method."""
    folder = tmp_path_factory.mktemp("explanations")
    model = tiny_captioner("show-attend-tell", vocab=SHAPE_WORDS, image_size=32, hidden_size=8, grid_size=2)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    image.save(folder / "photo.jpg", quality=90)
    expl = explain(model, folder / "photo.jpg", METHODS, caption="a red circle",
                   settings={"lime": {"num_samples": 8, "n_segments": 4}, "occlusion": {"window": 16, "stride": 16}})
    expl.suspect_rule = SuspectRule("log_prob", "below", -1.0)
    expl.suspect = [SuspectFlag(bool(v <= -1.0), float(v)) for v in expl.log_probs]
    files = Seeds()
    files["3.npz"], files["3.json"] = (p.read_bytes() for p in expl.save(folder / "three"))
    meta = json.loads(files["3.json"])
    with np.load(folder / "three.npz") as stored:
        arrays = {key: stored[key] for key in stored.files}
    # format 2: LIME's labels among its extras, the settings a dict with facts of the run beside them
    two = {**arrays, "lime/extras/segments": arrays["lime/drawing/segments"]}
    del two["lime/drawing/segments"]
    meta2 = json.loads(files["3.json"])
    meta2.update(format_version=2, suspect=None, suspect_rule=None)
    meta2["methods"]["lime"]["extras"] = sorted([*meta2["methods"]["lime"]["extras"], "segments"])
    for name, info in meta2["methods"].items():
        info["settings"] = {"method": name, "score": "log_prob", **info["settings"],
                            "gradient_route": info.pop("gradient_route")}
        del info["method"]
    files["2.npz"], files["2.json"] = _npz(two), json.dumps(meta2).encode()
    # format 1: full-resolution float32 maps, the image as an array
    one = {"image": expl.image, "log_probs": arrays["log_probs"], "token_ids": arrays["token_ids"]}
    methods: dict[str, Any] = {}
    for name in ("gradcam", "lime"):
        one[f"{name}/maps"], one[f"{name}/raw"] = expl[name].maps, expl[name].raw.astype(np.float32)
        methods[name] = {"settings": {"method": name, **expl[name].settings.to_json()}, "seconds": 0.5,
                         "extras": []}
    files["1.npz"] = _npz(one)
    files["1.json"] = json.dumps({"format_version": 1, "caption": expl.caption, "tokens": expl.tokens,
                                  "source": "given", "decoding": {}, "image_path": None,
                                  "log_probs": meta["log_probs"], "methods": methods}).encode()
    return files


def _npz(arrays: dict[str, Any]) -> Blob:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return Blob(buffer.getvalue())


def accept(expl: CaptionExplanation) -> None:
    """A loaded explanation is whole: typed; an RGB image; as many ids, log-probs, suspect flags and rows of
    every method's maps as words; maps that draw at the image's size, finite where the raw maps are; and the
    export's word grid draws from it."""
    assert_typed(expl, "explanation")
    height, width, channels = expl.image.shape
    assert expl.image.dtype == np.uint8 and channels == 3 and height * width > 0
    words = len(expl.tokens)
    assert len(expl.token_ids) == words and expl.log_probs.shape == (words,)
    assert expl.suspect is None or len(expl.suspect) == words
    for name, result in expl.methods.items():
        maps = result.maps
        assert maps.shape == (words, height, width) and maps.dtype == np.float32, name
        if words:
            word_tiles(expl, name)


def accept_header(header: ExplanationHeader) -> None:
    assert_typed(header, "header")


NAMES = {"explanation.json", "explanation.npz", "explanation"}


def _write(tmp_path: Path, json_bytes: bytes, npz_bytes: bytes) -> Path:
    stem = tmp_path / "explanation"
    write(stem.with_suffix(".json"), json_bytes)
    write(stem.with_suffix(".npz"), npz_bytes)
    return stem


def _load(tmp_path: Path, name: str, json_bytes: bytes, npz_bytes: bytes) -> None:
    stem = _write(tmp_path, json_bytes, npz_bytes)
    check_reader(lambda: CaptionExplanation.load(stem), NAMES, accept)
    check_reader(lambda: CaptionExplanation.read_header(stem), NAMES, accept_header)


def _refused(tmp_path: Path, json_bytes: bytes, npz_bytes: bytes) -> None:
    stem = _write(tmp_path, json_bytes, npz_bytes)
    check_refused(lambda: CaptionExplanation.load(stem), NAMES)


def test_seeds_load(seeds, tmp_path):
    for version in "321":
        stem = tmp_path / version
        write(stem.with_suffix(".json"), seeds[f"{version}.json"])
        write(stem.with_suffix(".npz"), seeds[f"{version}.npz"])
        accept(CaptionExplanation.load(stem))


@fuzz_settings()
@given(data=st.data())
def test_json(seeds, tmp_path, data):
    version = data.draw(st.sampled_from("321"), label="format")
    text = data.draw(json_mutations(json.loads(seeds[f"{version}.json"])), label="json")
    _load(tmp_path, version, text, seeds[f"{version}.npz"])


@fuzz_settings()
@given(data=st.data())
def test_npz_bytes(seeds, tmp_path, data):
    version = data.draw(st.sampled_from("321"), label="format")
    _load(tmp_path, version, seeds[f"{version}.json"], data.draw(byte_mutations(seeds[f"{version}.npz"]), label="npz"))


def _other_images() -> st.SearchStrategy[np.ndarray]:
    """Images an npz may wrongly hold: another size, one channel, floats, none at all."""
    return st.sampled_from((np.zeros((7, 5, 3), np.uint8), np.zeros((20, 24), np.uint8),
                            np.zeros((20, 24, 4), np.uint8), np.zeros((20, 24, 3), np.float64),
                            np.zeros((0, 24, 3), np.uint8), np.zeros(3, np.uint8)))


@st.composite
def array_edits(draw: Any, arrays: dict[str, np.ndarray]) -> Blob:
    """The npz of `arrays` with 1..3 of them dropped, cast to another dtype, reshaped, emptied, grown, replaced
    by an object array (pickled by numpy, never unpickled by the loader), a scalar or another image."""
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(arrays)), label="array")
        op = draw(st.sampled_from(("drop", "dtype", "flatten", "empty", "grow", "object", "scalar", "image",
                                   "nan", "huge values")), label="edit")
        value = np.atleast_1d(arrays[key])
        if value.dtype.kind not in "biufc":  # an object array (or strings) an earlier edit left
            continue
        if op == "drop":
            del arrays[key]
        elif op == "dtype":
            arrays[key] = value.astype(draw(st.sampled_from((np.float64, np.int64, np.uint8, np.bool_, np.complex64,
                                                             np.float16, "U3"))))
        elif op == "flatten":
            arrays[key] = value.reshape(-1)
        elif op == "empty":
            arrays[key] = value[:0]
        elif op == "grow":
            arrays[key] = np.concatenate([value, value]) if value.ndim else value
        elif op == "object":
            arrays[key] = np.array([{"a": 1}, None], dtype=object)
        elif op == "scalar":
            arrays[key] = np.float32(3.0)
        elif op == "image":
            image = draw(_other_images())
            arrays[key] = (image if key == "image" else
                           np.frombuffer(_png_bytes(image) if image.ndim == 3 and image.dtype == np.uint8 and image.size
                                         else b"not an image", np.uint8))
        elif op == "nan" and value.dtype.kind == "f":
            arrays[key] = np.full_like(value, np.nan)
        elif op == "huge values" and value.dtype.kind in "iuf":
            arrays[key] = np.full_like(value, np.iinfo(value.dtype).max if value.dtype.kind in "iu" else 6e4)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return Blob(buffer.getvalue())


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@fuzz_settings()
@given(data=st.data())
def test_npz_arrays(seeds, tmp_path, data):
    version = data.draw(st.sampled_from("321"), label="format")
    with np.load(io.BytesIO(seeds[f"{version}.npz"])) as stored:
        arrays = Seeds({key: stored[key] for key in stored.files})
    _load(tmp_path, version, seeds[f"{version}.json"], data.draw(array_edits(arrays), label="npz"))


def _npz_declaring(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], dtype: str = "<f4") -> Blob:
    """An npz whose member `key` has a .npy header declaring `shape` over a few bytes of data (or, with a
    zip of zeros, a decompression bomb when the data is there)."""
    return _npz_with_header(arrays, key, {"descr": dtype, "fortran_order": False, "shape": shape}, [b"\x00" * 64])


def _bomb(arrays: dict[str, np.ndarray], key: str, size: int) -> Blob:
    """An npz whose member `key` is `size` bytes of zeros, deflated to about a thousandth of that."""
    chunk = b"\x00" * (1 << 24)
    return _npz_with_header(arrays, key, {"descr": "<f4", "fortran_order": False, "shape": (size // 4,)},
                            (chunk for _ in range(size // len(chunk))))


def _npz_with_header(arrays: dict[str, np.ndarray], key: str, header: dict, data: Iterable[bytes]) -> Blob:
    """A deflated npz of `arrays`, but member `key` written as the .npy `header` followed by `data`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            if name != key:
                with archive.open(f"{name}.npy", "w") as fh:
                    np.lib.format.write_array(fh, np.asarray(value))
        with archive.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for block in data:
                fh.write(block)
    return Blob(buffer.getvalue())


@pytest.mark.parametrize("version, key, shape", [
    pytest.param("3", "gradcam/raw", (2**40,), id="a raw map of 4 TB"),
    pytest.param("3", "log_probs", (2**28, 4), id="log-probs of 4 GB"),
    pytest.param("1", "image", (100_000, 100_000, 3), id="a format-1 image of 30 GB"),
    pytest.param("3", "token_ids", (-1,), id="a negative size"),
])
def test_arrays_declared_larger_than_their_data(seeds, tmp_path, version, key, shape):
    with np.load(io.BytesIO(seeds[f"{version}.npz"])) as stored:
        arrays = {name: stored[name] for name in stored.files}
    _refused(tmp_path, seeds[f"{version}.json"], _npz_declaring(arrays, key, shape))


def test_a_decompression_bomb_is_refused(seeds, tmp_path):
    """2 GiB of zeros in a 2 MB file: refused before it is inflated."""
    with np.load(io.BytesIO(seeds["3.npz"])) as stored:
        arrays = {name: stored[name] for name in stored.files}
    _refused(tmp_path, seeds["3.json"], _bomb(arrays, "gradcam/raw", 2 << 30))


def _flip(data: bytes, at: int) -> Blob:
    return Blob(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])


# npz files the fuzzer found breaking the contract (each an edit of the format-3 seed), with what escaped.
@pytest.mark.parametrize("edit", [
    pytest.param(lambda npz: b"", id="EOFError: an empty file"),
    pytest.param(lambda npz: npz[:4], id="zipfile.BadZipFile: the zip magic alone"),
    pytest.param(lambda npz: npz[:4] + b"\x00" + npz[4:], id="zipfile.BadZipFile: a local header shifted"),
    pytest.param(lambda npz: _flip(npz, 100), id="zlib.error or a bad CRC: a byte of deflated data flipped"),
    pytest.param(lambda npz: _flip(npz, 26), id="zipfile.BadZipFile: a member name's length changed"),
])
def test_npz_crashes_found(seeds, tmp_path, edit):
    _refused(tmp_path, seeds["3.json"], edit(seeds["3.npz"]))


def test_array_crash_found(seeds, tmp_path):
    """ValueError naming no file ("cannot reshape array of size 12 into shape (0,newaxis)"): raw maps emptied."""
    with np.load(io.BytesIO(seeds["3.npz"])) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["gradcam/raw_scale"] = arrays["gradcam/raw_scale"][:0]
    _refused(tmp_path, seeds["3.json"], _npz(arrays))
