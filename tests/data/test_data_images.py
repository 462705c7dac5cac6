"""load_image on every pixel mode users hand us, and the transform round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from captionlens.data.images import ImageLoadError, Preprocessing, load_image, load_image_tensor


def _pixels(path) -> np.ndarray:
    image = load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgb_is_unchanged(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    assert np.array_equal(_pixels(tmp_path / "x.png"), array)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert np.all(_pixels(tmp_path / "g.png") == 77)


def test_rgba_composites_onto_white(tmp_path):
    array = np.zeros((2, 3, 4), np.uint8)
    array[0, 0] = (255, 0, 0, 255)       # opaque red
    array[0, 1] = (0, 0, 0, 0)           # fully transparent black
    array[0, 2] = (0, 0, 0, 128)         # half-transparent black
    Image.fromarray(array, "RGBA").save(tmp_path / "a.png")
    pixels = _pixels(tmp_path / "a.png")
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[0, 1]) == (255, 255, 255)
    assert np.all(np.abs(pixels[0, 2].astype(int) - 127) <= 1)


def test_la_composites_onto_white(tmp_path):
    array = np.array([[[40, 255], [40, 0]]], np.uint8)
    Image.fromarray(array, "LA").save(tmp_path / "la.png")
    pixels = _pixels(tmp_path / "la.png")
    assert tuple(pixels[0, 0]) == (40, 40, 40)
    assert tuple(pixels[0, 1]) == (255, 255, 255)


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_image(tmp_path, transparent):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.putpixel((1, 1), 1)
    if transparent:
        image.info["transparency"] = 0
    image.save(tmp_path / "p.png")
    pixels = _pixels(tmp_path / "p.png")
    assert tuple(pixels[1, 1]) == (10, 200, 30)
    assert tuple(pixels[0, 0]) == ((255, 255, 255) if transparent else (0, 0, 0))


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")   # pure red in CMYK
    red, green, blue = _pixels(tmp_path / "c.jpg")[4, 4].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as stored:
        assert stored.mode.startswith("I")
    assert list(_pixels(tmp_path / "deep.png")[0, :, 0]) == [0, 100, 128, 255]


def test_32_bit_integers_beyond_16_bits_are_stretched(tmp_path):
    Image.fromarray(np.array([[-1000, 0, 1000]], np.int32), "I").save(tmp_path / "wide.tif")
    assert list(_pixels(tmp_path / "wide.tif")[0, :, 0]) == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))          # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6                                     # "rotate 90 degrees clockwise to view"
    image.save(tmp_path / "phone.jpg", exif=exif)
    loaded = load_image(tmp_path / "phone.jpg")
    assert loaded.size == (20, 40)
    top, bottom = np.asarray(loaded)[5, 10].astype(int), np.asarray(loaded)[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60                  # the left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_truncated_jpeg_fails_naming_the_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg: cannot read image"):
        load_image(tmp_path / "cut.jpg")


def test_text_file_named_jpg_fails_naming_the_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageLoadError, match=r"notes\.jpg: cannot read image \(not a recognised image format\)"):
        load_image(tmp_path / "notes.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"absent\.png: no such file"):
        load_image(tmp_path / "absent.png")


def test_transform_round_trip(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    preprocessing = Preprocessing(image_size=16)
    tensor, original = load_image_tensor(tmp_path / "x.png", preprocessing)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    assert np.array_equal(original, array)
    assert np.abs(preprocessing.denormalize(tensor).astype(int) - array).max() <= 1


@pytest.mark.parametrize(("interpolation", "mode"), [("bilinear", transforms.InterpolationMode.BILINEAR),
                                                     ("lanczos", transforms.InterpolationMode.LANCZOS)])
def test_transform_equals_torchvision_compose(interpolation, mode):
    """The oracle: the torchvision pipeline the seed notebook and the tutorials write by hand."""
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 20, 3), dtype=np.uint8))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    expected = transforms.Compose([transforms.Resize((24, 24), interpolation=mode), transforms.ToTensor(),
                                   transforms.Normalize(mean, std)])(image)
    ours = Preprocessing(image_size=24, interpolation=interpolation, mean=mean, std=std).transform(image)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    pil = np.asarray(image.resize((24, 24), Image.LANCZOS if interpolation == "lanczos" else Image.BILINEAR))
    torch.testing.assert_close(ours, torch.from_numpy(((pil / 255.0 - mean) / std).transpose(2, 0, 1)).float(),
                               rtol=0, atol=1e-5)


def test_cached_uint8_path_equals_the_transform():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 20, 3), dtype=np.uint8))
    preprocessing = Preprocessing(image_size=24)
    cached = preprocessing.resize_uint8(image)
    assert cached.dtype == torch.uint8 and cached.shape == (3, 24, 24)
    assert torch.equal(preprocessing.normalize_uint8(cached), preprocessing.transform(image))


def test_preprocessing_round_trips_as_json_and_refuses_bad_values():
    preprocessing = Preprocessing(image_size=256, interpolation="lanczos")
    assert Preprocessing.from_dict(preprocessing.to_dict()) == preprocessing
    with pytest.raises(ValueError, match="unknown interpolation 'cubic'"):
        Preprocessing(interpolation="cubic")
    with pytest.raises(ValueError, match="image_size must be a positive integer, got 0"):
        Preprocessing(image_size=0)
    with pytest.raises(ValueError, match=r"unknown preprocessing field\(s\) \['crop'\]"):
        Preprocessing.from_dict({"crop": 3})


def test_denormalize_rejects_a_batch():
    with pytest.raises(ValueError, match=r"\(3, H, W\).*\(2, 3, 4, 4\)"):
        Preprocessing().denormalize(torch.zeros(2, 3, 4, 4))
