"""CaptionExplanation files: compact (a real 500x375 photo, five methods, twelve words, under 1 MB),
maps read back within the stated float16 bound of the maps computed, format-1 files still load, a
compressed source file kept as its own bytes only when they decode to the explained pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from captionlens.explain import explain
from captionlens.explain.result import CaptionExplanation
from zoo import tiny_captioner

METHODS = ("gradcam", "gradcam++", "attention", "lime", "occlusion")
WORDS = "a dog sits on the grass next to a small red ball and a cup of coffee".split()
# The zoo's calibrated Show-Attend-Tell over the words of WORDS on a 7x7 grid: tiny_captioner(**MODEL, image_size=n)
MODEL = {"architecture": "show-attend-tell", "vocab": sorted(set(WORDS)), "hidden_size": 32, "grid_size": 7}


@pytest.fixture(scope="module")
def photo_explanation() -> CaptionExplanation:
    """scikit-image's coffee photo at 500 x 375, a 224 px attention model, a twelve-word caption."""
    photo = np.asarray(Image.fromarray(skimage_data.coffee()).resize((500, 375), Image.Resampling.LANCZOS))
    caption = " ".join(WORDS[:12])
    return explain(tiny_captioner(**MODEL, image_size=224), photo, METHODS, caption=caption,
                   settings={"lime": {"num_samples": 60}})


def _bound(raw: np.ndarray) -> np.ndarray:
    """The stated bound: 2^-11 of each word's largest |raw value| (float16 of the scaled raw maps)."""
    return 2.0 ** -11 * np.abs(raw).reshape(len(raw), -1).max(1)[:, None, None] + 1e-12


def test_a_photo_with_five_methods_and_twelve_words_fits_in_one_megabyte(photo_explanation, tmp_path):
    expl = photo_explanation
    assert expl.image.shape == (375, 500, 3) and len(expl.tokens) == 12
    npz, meta = expl.save(tmp_path / "explanation")
    size = npz.stat().st_size + meta.stat().st_size
    assert size <= 1_000_000, f"{size} bytes"
    # the format-1 layout of the same explanation: every map at full resolution in float32
    full = {f"{m}/maps": expl[m].maps for m in METHODS}
    np.savez_compressed(tmp_path / "format1.npz", image=expl.image, **full)
    assert (tmp_path / "format1.npz").stat().st_size > 10 * size


def test_maps_read_back_within_the_stated_bound(photo_explanation, tmp_path):
    expl = photo_explanation
    expl.save(tmp_path / "explanation")
    loaded = CaptionExplanation.load(tmp_path / "explanation")
    assert np.array_equal(loaded.image, expl.image)                      # the photo, losslessly
    assert loaded.tokens == expl.tokens and np.allclose(loaded.log_probs, expl.log_probs)
    for name in METHODS:
        maps, again = expl[name].maps, loaded[name].maps
        assert again.shape == maps.shape == (12, 375, 500) and again.dtype == np.float32
        error = np.abs(again - maps)
        raw = expl[name].raw if expl[name].raw.ndim == 3 else expl[name].raw[:, :, None]
        assert (error <= _bound(raw)).all(), name
        assert error.max() > 0 or np.abs(maps).max() == 0, name        # it really is float16, not a copy
    for name in METHODS:
        assert (loaded[name].method, loaded[name].settings) == (expl[name].method, expl[name].settings)
    assert np.array_equal(loaded["lime"].drawing.segments, expl["lime"].drawing.segments)


def test_a_format_1_file_still_loads(photo_explanation, tmp_path):
    expl = photo_explanation
    arrays = {"image": expl.image, "log_probs": np.asarray(expl.log_probs, np.float32),
              "token_ids": np.asarray(expl.token_ids, np.int64)}
    methods = {}
    for name in ("gradcam", "lime"):
        arrays[f"{name}/maps"] = expl[name].maps
        arrays[f"{name}/raw"] = expl[name].raw.astype(np.float32)
        extras = dict(expl[name].extras)
        if name == "lime":                                            # format 1 kept LIME's labels as extras
            extras.update(segments=expl[name].drawing.segments, weights=expl[name].raw)
        for key, value in extras.items():
            arrays[f"{name}/extras/{key}"] = value
        # format 1 recorded settings as a dict, with facts of the run beside them
        recorded = {"method": name, "layer": "layer3", "score": "log_prob", **expl[name].settings.to_json()}
        methods[name] = {"settings": recorded, "seconds": 0.5, "extras": sorted(extras)}
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    (tmp_path / "old.json").write_text(json.dumps({
        "format_version": 1, "caption": expl.caption, "tokens": expl.tokens, "source": "given",
        "decoding": {}, "image_path": None, "log_probs": [float(x) for x in expl.log_probs], "methods": methods}))
    old = CaptionExplanation.load(tmp_path / "old")
    for name in ("gradcam", "lime"):
        assert np.array_equal(old[name].maps, expl[name].maps)           # stored as they were: exact
    assert old.suspect is None and old["gradcam"].seconds == 0.5
    assert old["lime"].settings == expl["lime"].settings and old.source == "given"


def test_a_format_2_file_still_loads(photo_explanation, tmp_path):
    """Format 2 kept LIME's superpixel labels among its extras and the settings as a dict with the run's facts."""
    expl = photo_explanation
    npz, meta_path = expl.save(tmp_path / "new")
    meta = json.loads(meta_path.read_text())
    with np.load(npz) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["lime/extras/segments"] = arrays.pop("lime/drawing/segments")
    meta["format_version"] = 2
    meta["methods"]["lime"]["extras"] = sorted([*meta["methods"]["lime"]["extras"], "segments"])
    for name, info in meta["methods"].items():
        info["settings"] = {"method": name, "score": "log_prob", **info["settings"],
                            "gradient_route": info.pop("gradient_route"), "placement": "receptive fields"}
        del info["method"]
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    (tmp_path / "old.json").write_text(json.dumps(meta))
    old, new = CaptionExplanation.load(tmp_path / "old"), CaptionExplanation.load(tmp_path / "new")
    for name in METHODS:
        assert np.array_equal(old[name].maps, new[name].maps), name
        assert (old[name].settings, old[name].gradient_route) == (new[name].settings, new[name].gradient_route)
    assert "segments" not in old["lime"].extras and old["gradcam"].gradient_route == "bptt"


@pytest.fixture(scope="module")
def coffee_files(tmp_path_factory) -> dict[str, object]:
    """The coffee photo at 500 x 375 as a JPEG and a BMP, and a tiny model to explain them with."""
    folder = tmp_path_factory.mktemp("coffee")
    photo = Image.fromarray(skimage_data.coffee()).resize((500, 375), Image.Resampling.LANCZOS)
    photo.save(folder / "coffee.jpg", quality=90)
    photo.save(folder / "coffee.bmp")
    return {"jpg": folder / "coffee.jpg", "bmp": folder / "coffee.bmp", "model": tiny_captioner(**MODEL, image_size=64)}


def _stored_keys(npz) -> set[str]:
    with np.load(npz) as arrays:
        return {key for key in arrays.files if key.startswith("image")}


def test_a_jpeg_source_is_kept_as_its_own_bytes_and_reads_back_to_the_explained_pixels(coffee_files, tmp_path):
    path = coffee_files["jpg"]
    expl = explain(coffee_files["model"], path, ("gradcam",), caption="a dog sits on the grass")
    npz, _ = expl.save(tmp_path / "kept")
    assert _stored_keys(npz) == {"image_file"}
    with np.load(npz) as arrays:
        assert arrays["image_file"].tobytes() == path.read_bytes()
    loaded = CaptionExplanation.load(tmp_path / "kept")
    with Image.open(path) as original:                        # PIL's own decoding of the file
        assert np.array_equal(loaded.image, np.asarray(original.convert("RGB")))
    assert np.array_equal(loaded.image, expl.image)
    expl.image_file = None                                    # what format 2 stored before: a PNG
    png_npz, _ = expl.save(tmp_path / "png")
    assert _stored_keys(png_npz) == {"image_png"} and npz.stat().st_size < png_npz.stat().st_size / 2


def test_bytes_that_do_not_decode_to_the_image_are_not_kept(coffee_files, tmp_path):
    expl = explain(coffee_files["model"], coffee_files["jpg"], ("gradcam",), caption="a dog sits on the grass")
    expl.image = expl.image.copy()
    expl.image[0, 0] ^= 1                                     # the file no longer is this image
    npz, _ = expl.save(tmp_path / "changed")
    assert _stored_keys(npz) == {"image_png"}
    assert np.array_equal(CaptionExplanation.load(tmp_path / "changed").image, expl.image)
    expl.image_file = b"not an image"
    npz, _ = expl.save(tmp_path / "garbage")
    assert _stored_keys(npz) == {"image_png"}


def test_an_uncompressed_source_is_stored_as_png(coffee_files, tmp_path):
    expl = explain(coffee_files["model"], coffee_files["bmp"], ("gradcam",), caption="a dog sits on the grass")
    assert expl.image_file is None
    npz, _ = expl.save(tmp_path / "bmp")
    assert _stored_keys(npz) == {"image_png"}
    assert np.array_equal(CaptionExplanation.load(tmp_path / "bmp").image, expl.image)
