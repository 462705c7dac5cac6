"""The synthetic grounded scenes: exact boxes, true captions, exact word grounding, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from captionlens.data import load_dataset, tokenize
from captionlens.data.shapes import (
    COLOURS,
    GROUNDING_JSON,
    SHAPES,
    SHAPES_JSON,
    SIZES,
    generate_shapes,
    load_grounding,
    load_mask,
    word_boxes,
    word_refs,
)

PARAMS = {"n_train": 6, "n_val": 2, "n_test": 2, "image_size": 64, "seed": 3}
NAMING = set(SHAPES) | set(COLOURS) | set(SIZES)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), **PARAMS)


@pytest.fixture(scope="module")
def grounding(folder):
    return load_grounding(folder)


def _scenes(grounding):
    for filename, scene in grounding["images"].items():
        yield filename, {o["id"]: o for o in scene["objects"]}, scene["captions"]


def test_layout_and_karpathy_loading(folder):
    dataset = load_dataset(folder)
    assert len(dataset) == 10
    assert [len(dataset.split(s)) for s in ("train", "val", "test")] == [6, 2, 2]
    assert all(len(r.captions) == 5 and r.image_path.parent == folder / "Images" for r in dataset)
    with Image.open(dataset.records[0].image_path) as image:
        assert image.mode == "RGB" and image.size == (64, 64)
    assert load_dataset(folder, format="shapes").all_captions() == dataset.all_captions()


def test_boxes_are_the_tight_boxes_of_the_masks(folder, grounding):
    assert grounding["image_size"] == 64
    for filename, objects, _ in _scenes(grounding):
        mask = load_mask(folder, filename)
        assert mask.dtype == np.uint8 and mask.shape == (64, 64)
        assert set(np.unique(mask)) == {0, *(i + 1 for i in objects)}
        for i, obj in objects.items():
            ys, xs = np.nonzero(mask == i + 1)
            assert obj["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            x0, y0, x1, y1 = obj["bbox"]
            assert obj["centre"] == [(x0 + x1) / 2, (y0 + y1) / 2]
        boxes = [o["bbox"] for o in objects.values()]
        for k, a in enumerate(boxes):           # objects apart: boxes do not even touch
            for b in boxes[k + 1:]:
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def test_pixels_have_the_objects_colours(folder, grounding):
    for filename, objects, _ in _scenes(grounding):
        with Image.open(folder / "Images" / filename) as stored:
            image = np.asarray(stored).astype(float)
        mask = load_mask(folder, filename)
        for i, obj in objects.items():
            assert np.allclose(image[mask == i + 1].mean(axis=0), COLOURS[obj["colour"]], atol=3)
        assert image[mask == 0].std(axis=0).max() > 2      # noisy, not a flat background


def test_objects_are_distinct_and_in_canonical_order(grounding):
    counts = set()
    for _, objects, _ in _scenes(grounding):
        counts.add(len(objects))
        kinds = [(o["shape"], o["colour"], o["size"]) for o in objects.values()]
        assert len(set(kinds)) == len(kinds)
        assert [o["centre"][0] for o in objects.values()] == sorted(o["centre"][0] for o in objects.values())
    assert counts <= {1, 2, 3} and len(counts) > 1


def test_refs_mark_exactly_the_naming_words_with_their_object(folder, grounding):
    for _, objects, captions in _scenes(grounding):
        for caption in captions:
            tokens, refs = caption["tokens"], caption["refs"]
            assert len(tokens) == len(refs)
            for token, ref in zip(tokens, refs):
                assert (ref is not None) == (token in NAMING)
                if ref is not None:
                    assert token in (objects[ref]["shape"], objects[ref]["colour"], objects[ref]["size"])
    stored = json.loads((folder / SHAPES_JSON).read_text())
    for entry in stored["images"]:
        scene = grounding["images"][entry["filename"]]
        assert [s["tokens"] for s in entry["sentences"]] == [c["tokens"] for c in scene["captions"]]
        assert all(tokenize(s["raw"]) == s["tokens"] for s in entry["sentences"])


def test_every_reference_caption_grounds_itself(grounding):
    """Noun phrases pick out one object, so word_refs recovers the stored refs from the words alone."""
    for filename, _, captions in _scenes(grounding):
        for caption in captions:
            assert word_refs(grounding, filename, caption["tokens"]) == caption["refs"]


def _check_relation(word, first, second):
    dx, dy = second["centre"][0] - first["centre"][0], second["centre"][1] - first["centre"][1]
    horizontal = abs(dx) >= abs(dy)
    assert {"left": horizontal and dx > 0, "right": horizontal and dx < 0,
            "above": not horizontal and dy > 0, "below": not horizontal and dy < 0}[word]


def test_captions_are_true(grounding):
    relations_seen = set()
    for _, objects, captions in _scenes(grounding):
        full = [f"a {o['size']} {o['colour']} {o['shape']}" for o in objects.values()]
        canonical = " ".join(captions[0]["tokens"])
        if len(objects) == 1:
            assert canonical == full[0]
        elif len(objects) == 3:
            assert canonical == f"{full[0]} {full[1]} and {full[2]}"
        else:
            assert canonical in (f"{full[0]} left of {full[1]}", f"{full[0]} above {full[1]}",
                                 f"{full[1]} above {full[0]}")
        for caption in captions:
            tokens, refs = caption["tokens"], caption["refs"]
            mentioned = {r for r in refs if r is not None}
            for count_word, n in (("two", 2), ("three", 3)):
                if count_word in tokens:
                    assert len(objects) == n and len(mentioned) == n
            for k, word in enumerate(tokens):
                if word in ("left", "right", "above", "below"):
                    relations_seen.add(word)
                    before = [r for r in refs[:k] if r is not None][-1]
                    after = next(r for r in refs[k:] if r is not None)
                    _check_relation(word, objects[before], objects[after])
        assert len({" ".join(c["tokens"]) for c in captions}) >= 4
    assert relations_seen == {"left", "right", "above", "below"}   # the check above did run


def test_same_seed_gives_identical_files_and_reuses_a_complete_folder(folder, tmp_path):
    again = generate_shapes(tmp_path / "again", **PARAMS)
    for name in (SHAPES_JSON, GROUNDING_JSON, "Images/train_00003.png", "masks/val_00001.png"):
        assert (again / name).read_bytes() == (folder / name).read_bytes()
    stamp = (again / SHAPES_JSON).stat().st_mtime_ns
    (again / GROUNDING_JSON).touch()
    generate_shapes(again, **PARAMS)
    assert (again / SHAPES_JSON).stat().st_mtime_ns == stamp


def test_other_parameters_regenerate_and_remove_stale_files(tmp_path):
    generate_shapes(tmp_path, **PARAMS)
    generate_shapes(tmp_path, **{**PARAMS, "n_train": 2, "seed": 4})
    assert sorted(p.name for p in (tmp_path / "Images").glob("train_*")) == ["train_00000.png", "train_00001.png"]
    assert json.loads((tmp_path / SHAPES_JSON).read_text())["params"]["seed"] == 4


def test_incomplete_folder_is_regenerated(tmp_path):
    generate_shapes(tmp_path, **PARAMS)
    (tmp_path / "masks" / "test_00000.png").unlink()
    generate_shapes(tmp_path, **PARAMS)
    assert (tmp_path / "masks" / "test_00000.png").is_file()


# Hand-made scene: a small red circle (0), a large blue square (1), a small blue circle (2).
SCENE = {"image_size": 64, "images": {"x.png": {"captions": [], "objects": [
    {"id": 0, "shape": "circle", "colour": "red", "size": "small", "bbox": [1, 1, 9, 9], "centre": [5, 5]},
    {"id": 1, "shape": "square", "colour": "blue", "size": "large", "bbox": [20, 1, 40, 21], "centre": [30, 11]},
    {"id": 2, "shape": "circle", "colour": "blue", "size": "small", "bbox": [50, 40, 58, 48], "centre": [54, 44]},
]}}}
R, B, S = [1, 1, 9, 9], [20, 1, 40, 21], [50, 40, 58, 48]


@pytest.mark.parametrize("caption, expected", [
    ("a red circle", [None, R, R]),
    ("a blue circle left of a square", [None, S, S, None, None, None, B]),
    ("a small blue circle", [None, S, S, S]),
    ("a blue small circle", [None, S, S, S]),             # adjective order does not matter
    ("a circle", [None, None]),                            # two circles: ambiguous
    ("a small circle", [None, None, None]),                # both circles are small
    ("a blue thing", [None, None, None]),                  # adjective without a shape noun
    ("a large circle", [None, None, None]),                # fits no object
    ("a red square and two circles", [None, None, None, None, None, None]),
    ("red and circle", [None, None, None]),                # "red" does not precede the noun
    ("a large blue square above a red circle", [None, B, B, B, None, None, R, R]),
])
def test_word_boxes_on_arbitrary_captions(caption, expected):
    assert word_boxes(SCENE, "x.png", caption.split()) == expected


def test_word_boxes_unknown_image():
    with pytest.raises(KeyError, match="no image 'y.png'"):
        word_boxes(SCENE, "y.png", ["a"])


def test_load_grounding_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="grounding.json: no such file"):
        load_grounding(tmp_path)
    (tmp_path / "g.json").write_text("{\n oops")
    with pytest.raises(ValueError, match=r"g\.json:2: not valid JSON"):
        load_grounding(tmp_path / "g.json")
