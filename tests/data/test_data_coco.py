"""COCO as distributed: counts and splits (Karpathy's and the official one, 2014 and 2017 names), instance
masks against pycocotools' own `COCO.annToMask` on the same files and against hand-rasterised polygons,
and the errors that name the file and the annotation."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from captionlens.data.coco import (
    CocoDataset,
    load_coco,
    load_coco_annotations,
    resize_mask,
    rle_string_counts,
)
from captionlens.data.datasets import detect_format, load_dataset
from coco_layout import (
    caption_annotations,
    file_name,
    polygon_annotation,
    rle_annotation,
    write_karpathy,
    write_split,
)

# (id, width, height): sizes differ per image, and width != height, so a swapped axis shows.
VAL_IMAGES = [(1, 60, 40), (2, 50, 70), (3, 80, 40), (4, 40, 40)]
TRAIN_IMAGES = [(5, 60, 40)]
KARPATHY = {1: "test", 2: "test", 3: "val", 4: "restval", 5: "train"}
CAPTIONS = {1: ["A man standing in front of a flag.", "An astronaut poses for a photo."],
            2: ["A cat sitting on a couch.", "a kitten resting on the sofa"],
            3: ["A cup of coffee on a table.", "coffee in a white mug"],
            4: ["A crowd of people at a market.", "many people walking"],
            5: ["a rocket on its launch pad", "a tall rocket"]}


def _rectangle(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _images(specs, split, year="2014"):
    return [{"id": i, "file_name": file_name(i, split, year), "width": w, "height": h} for i, w, h in specs]


def write_coco(root: Path, year: str = "2014", karpathy: bool = True) -> Path:
    """The test set: polygons (one of two parts), uncompressed and compressed RLE, a crowd region, a
    category named only by the captions (the couch), a train and a val split."""
    val = [
        polygon_annotation(101, 1, "person", [[10, 5, 30, 5, 30, 35, 10, 35], [40.5, 10.5, 50.5, 10.5, 45.5, 20.5]],
                           area=650.0),
        polygon_annotation(106, 1, "person", [[32.2, 2.2, 38.7, 2.2, 38.7, 30.7]], area=1500.0),
        rle_annotation(102, 2, "cat", _rectangle(70, 50, 10, 60, 5, 45), compressed=False, iscrowd=0),
        rle_annotation(103, 3, "cup", _rectangle(40, 80, 8, 30, 20, 50), compressed=True, iscrowd=0),
        polygon_annotation(104, 3, "dining table", [[0, 25, 80, 25, 80, 40, 0, 40]], area=10000.0),
        rle_annotation(105, 4, "person", _rectangle(40, 40, 5, 35, 0, 40), compressed=False, iscrowd=1),
    ]
    write_split(root, "val", _images(VAL_IMAGES, "val", year), val,
                caption_annotations(1, {i: CAPTIONS[i] for i, _, _ in VAL_IMAGES}), year)
    train = [polygon_annotation(107, 5, "airplane", [[20, 2, 40, 2, 40, 38, 20, 38]])]
    write_split(root, "train", _images(TRAIN_IMAGES, "train", year), train,
                caption_annotations(100, {5: CAPTIONS[5]}), year)
    if karpathy:
        names = {i: (f"{'train' if i == 5 else 'val'}{year}", file_name(i, "train" if i == 5 else "val", year))
                 for i in KARPATHY}
        write_karpathy(root, KARPATHY, names)
    return root


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    return write_coco(tmp_path / "coco")


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_reads_coco_as_distributed_with_karpathys_split(coco):
    assert detect_format(coco) == "coco"
    dataset = load_dataset(coco)
    assert isinstance(dataset, CocoDataset) and len(dataset) == 5
    fn = {i: file_name(i, "train" if i == 5 else "val") for i in KARPATHY}
    assert [r.image_id for r in dataset.split("test")] == [fn[1], fn[2]]
    assert [r.image_id for r in dataset.split("val")] == [fn[3]]
    assert sorted(r.image_id for r in dataset.split("train")) == sorted([fn[4], fn[5]])  # restval trains
    assert [r.image_id for r in dataset.split("train", include_restval=False)] == [fn[5]]
    by_id = {r.image_id: r for r in dataset}
    assert by_id[fn[1]].image_path == coco / "val2014" / fn[1]
    assert by_id[fn[5]].image_path == coco / "train2014" / fn[5]
    assert by_id[fn[2]].captions == CAPTIONS[2]
    assert sum(len(r.captions) for r in dataset) == sum(len(c) for c in CAPTIONS.values())

    test = dataset.split("test")
    assert isinstance(test, CocoDataset)
    person = test.image(fn[1])
    assert (person.id, person.width, person.height, person.folder, person.split) == (1, 60, 40, "val2014", "test")
    assert [i.id for i in person.instances] == [101, 106] and person.categories == {"person"}
    assert person.instances[0].category.supercategory == "person" and person.instances[0].category.id == 1
    annotations = dataset.annotations
    assert annotations.split_source == "karpathy" and annotations.year == "2014"
    assert annotations.image(1) is annotations.image("1") is annotations.image(fn[1])
    assert annotations.categories[67].name == "dining table" and annotations.categories[67].supercategory == "furniture"
    crowd = annotations.image(4).instances[0]
    assert crowd.iscrowd and crowd.category.name == "person"
    assert not annotations.image(2).instances[0].iscrowd
    assert [i.size_class for i in person.instances] == ["small", "medium"]  # 650 < 32², 1500 < 96²
    assert annotations.image(3).instances_of("dining table")[0].size_class == "large"  # 10000 >= 96²
    assert annotations.image(3).categories == {"cup", "dining table"}
    with pytest.raises(KeyError, match="no image 99"):
        annotations.image(99)


def test_official_split_without_karpathys_file(tmp_path):
    root = write_coco(tmp_path / "coco", karpathy=False)
    dataset = load_coco(root)
    assert dataset.annotations.split_source == "official"
    assert [r.split for r in dataset] == ["train"] + ["val"] * 4
    assert len(dataset.split("test")) == 0


def test_2017_names_and_2014_preferred_when_both_are_there(tmp_path):
    root = write_coco(tmp_path / "coco", year="2017")
    dataset = load_coco(root)
    assert dataset.annotations.year == "2017"
    record = dataset.split("test").records[0]
    assert record.image_id == "000000000001.jpg" and record.image_path == root / "val2017" / "000000000001.jpg"
    write_coco(root, year="2014")
    assert load_coco(root).annotations.year == "2014"


def test_annotations_read_without_any_image(tmp_path):
    root = write_coco(tmp_path / "coco")
    for folder in ("val2014", "train2014"):
        for path in (root / folder).iterdir():
            path.unlink()
    annotations = load_coco_annotations(root)
    assert len(annotations.images) == 5 and sum(len(i.instances) for i in annotations.images.values()) == 7
    with pytest.raises(FileNotFoundError, match="none of the 5 images"):
        load_coco(root)


def test_instance_masks_equal_pycocotools_on_the_same_file(coco):
    annotations = load_coco_annotations(coco)
    for split in ("val", "train"):
        reference = COCO(str(coco / "annotations" / f"instances_{split}2014.json"))
        for image_id, image_info in reference.imgs.items():
            image = annotations.image(image_id)
            anns = reference.loadAnns(reference.getAnnIds(imgIds=[image_id]))
            ours = {i.id: i for i in image.instances}
            assert sorted(ours) == sorted(a["id"] for a in anns)
            for ann in anns:
                expected = reference.annToMask(ann).astype(bool)
                assert expected.shape == (image_info["height"], image_info["width"]) and expected.any()
                np.testing.assert_array_equal(ours[ann["id"]].mask(), expected)
            for category in image.categories:
                union = np.logical_or.reduce([reference.annToMask(a).astype(bool) for a in anns
                                              if reference.cats[a["category_id"]]["name"] == category])
                np.testing.assert_array_equal(image.category_mask(category), union)
                np.testing.assert_array_equal(mask_utils.decode(image.category_rle(category)).astype(bool), union)
    assert not annotations.image(1).category_mask("dog").any()


def test_masks_at_a_requested_size(coco):
    image = load_coco_annotations(coco).image(1)  # 60 x 40
    full = image.category_mask("person")
    half = image.category_mask("person", size=(20, 30))
    assert half.dtype == bool and half.shape == (20, 30)
    np.testing.assert_array_equal(half, full[1::2, 1::2])  # the pixel under each output pixel's centre
    double = image.category_mask("person", size=(80, 120))
    np.testing.assert_array_equal(double, np.repeat(np.repeat(full, 2, 0), 2, 1))
    assert image.instances[0].mask(size=(40, 60)) is not None and image.instances[0].mask((40, 60)).shape == (40, 60)
    with pytest.raises(ValueError, match="positive"):
        resize_mask(full, (0, 5))


def test_polygons_rasterise_by_the_pixel_centre_rule(tmp_path):
    """An independent oracle: a pixel is inside when its centre (x + 0.5, y + 0.5) is; edges avoid centres."""
    rectangle = [10.2, 5.7, 20.7, 5.7, 20.7, 15.2, 10.2, 15.2]
    triangle = [2.1, 2.1, 22.3, 2.1, 2.1, 22.3]
    root = tmp_path / "coco"
    write_split(root, "val", [{"id": 1, "file_name": file_name(1, "val"), "width": 40, "height": 30}],
                [polygon_annotation(1, 1, "cat", [rectangle]), polygon_annotation(2, 1, "dog", [triangle])],
                caption_annotations(1, {1: ["a cat and a dog"]}))
    image = load_coco_annotations(root).image(1)
    ys, xs = np.mgrid[0:30, 0:40] + 0.5
    np.testing.assert_array_equal(image.category_mask("cat"), (xs > 10.2) & (xs < 20.7) & (ys > 5.7) & (ys < 15.2))
    np.testing.assert_array_equal(image.category_mask("dog"), (xs > 2.1) & (ys > 2.1) & (xs + ys < 24.4))


def test_compressed_rle_counts_read_as_pycocotools_writes_them():
    rng = np.random.default_rng(0)
    for trial in range(30):
        height, width = rng.integers(1, 40, 2)
        mask = rng.random((height, width)) < rng.uniform(0.05, 0.95)
        if trial % 3 == 0:  # long runs: counts of several 5-bit groups and large differences
            mask = np.zeros((height, width), dtype=bool)
            mask[: height // 2] = True
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        counts = rle_string_counts(encoded["counts"].decode("ascii"))
        assert sum(counts) == height * width
        values = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
        np.testing.assert_array_equal(values.reshape((height, width), order="F"), mask)
        np.testing.assert_array_equal(mask_utils.decode(encoded).astype(bool), mask)


def test_images_the_folder_lacks_are_counted_and_named(coco):
    (coco / "val2014" / file_name(3, "val")).unlink()
    (coco / "val2014" / file_name(4, "val")).unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_coco(coco)
    (warning,) = [w for w in caught if "missing" in str(w.message)]
    assert "2 of 5 listed images are missing" in str(warning.message)
    assert file_name(3, "val") in str(warning.message) and len(dataset) == 3
    assert {p.name for p in dataset.missing_images} == {file_name(3, "val"), file_name(4, "val")}


def _compressed(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def _instances(root: Path) -> Path:
    return root / "annotations" / "instances_val2014.json"


def _annotation(data, number):
    return next(a for a in data["annotations"] if a["id"] == number)


@pytest.mark.parametrize("change, message", [
    (lambda d: _annotation(d, 104).update(image_id=77),
     r"instances_val2014\.json: annotation 104 is of image 77, which the file's 'images' do not list"),
    (lambda d: _annotation(d, 104).update(category_id=12),
     r"instances_val2014\.json: annotation 104 has category_id 12, which the file's 'categories' do not list"),
    (lambda d: _annotation(d, 104).update(segmentation=[[1, 2, 3, 4]]),
     r"annotation 104 has a malformed segmentation: polygon 0 has 4 coordinates"),
    (lambda d: _annotation(d, 104).update(segmentation=[[1, 2, 3, 4, 5, 6, 7]]),
     r"annotation 104 has a malformed segmentation: polygon 0 has 7 coordinates"),
    (lambda d: _annotation(d, 104).update(segmentation=[[1, 2, 3, "x", 5, 6]]),
     r"annotation 104 has a malformed segmentation: polygon 0 has a value that is not a finite number"),
    (lambda d: _annotation(d, 104).update(segmentation=[]), r"annotation 104 has a malformed segmentation: no polygon"),
    (lambda d: _annotation(d, 104).update(segmentation="oops"),
     r"annotation 104 has a malformed segmentation: neither a list of polygons nor an RLE object"),
    (lambda d: _annotation(d, 102)["segmentation"].update(size=[50, 70]),
     r"annotation 102 has a malformed segmentation: RLE size \[50, 70\] is not the image's \[height, width\] "
     r"\[70, 50\]"),
    (lambda d: _annotation(d, 102)["segmentation"]["counts"].pop(),
     r"annotation 102 has a malformed segmentation: RLE run lengths add up to \d+, not height x width = 3500"),
    (lambda d: _annotation(d, 102)["segmentation"].update(counts=[3500, -1, 1]),
     r"annotation 102 has a malformed segmentation: RLE counts are not all non-negative integers"),
    (lambda d: _annotation(d, 103)["segmentation"].update(counts=_compressed(_rectangle(40, 79, 8, 30, 20, 50))),
     r"annotation 103 has a malformed segmentation: RLE run lengths add up to 3160, not height x width = 3200"),
    (lambda d: _annotation(d, 103)["segmentation"].update(counts="a\u00e9"),
     r"annotation 103 has a malformed segmentation: compressed RLE counts do not decode"),
    (lambda d: _annotation(d, 103)["segmentation"].update(counts="P"),  # 'P' - '0' = 0x20: more groups, none
     r"annotation 103 has a malformed segmentation: compressed RLE counts do not decode \(the string ends"),
    (lambda d: _annotation(d, 105).update(iscrowd=2), r"annotation 105: 'iscrowd' is not 0 or 1"),
    (lambda d: _annotation(d, 105).update(bbox=[1, 2, 3]), r"annotation 105: 'bbox' is not \[x, y, width, height\]"),
    (lambda d: _annotation(d, 105).pop("area"), r"instances_val2014\.json: annotation 105 has no 'area'"),
    (lambda d: d["annotations"][0].pop("id"), r"instances_val2014\.json: annotations\[0\] has no 'id'"),
    (lambda d: d["categories"].append(dict(d["categories"][0])), r"categories\[80\]: category id 1 is defined twice"),
    (lambda d: d.pop("categories"), r"instances_val2014\.json: expected a JSON object with a 'categories' list"),
    (lambda d: d["images"].pop(0),
     r"captions_val2014\.json: 1 images are not in instances_val2014\.json \(first ids: 1\)"),
])
def test_bad_instances_are_one_error_naming_file_and_annotation(coco, change, message):
    if "images are not in" in message:  # the instances file lacks an image: drop its annotations too
        _edit(_instances(coco), lambda d: (change(d), d.update(annotations=[a for a in d["annotations"]
                                                                              if a["image_id"] != 1])))
    else:
        _edit(_instances(coco), change)
    with pytest.raises(ValueError, match=message):
        load_coco(coco)


def test_bad_captions_and_karpathy_files_are_named(coco):
    captions = coco / "annotations" / "captions_val2014.json"
    _edit(captions, lambda d: d["annotations"][2].update(image_id=42))
    with pytest.raises(ValueError, match=r"captions_val2014\.json: annotation 3 is of image 42"):
        load_coco(coco)
    _edit(captions, lambda d: d["annotations"][2].update(image_id=2))
    _edit(coco / "dataset_coco.json", lambda d: d["images"][1].update(split="dev"))
    with pytest.raises(ValueError, match=r"dataset_coco\.json: images\[1\] has split 'dev'"):
        load_coco(coco)
    (coco / "dataset_coco.json").write_text('{"images": [\n  {"cocoid": 1,,}]}')
    with pytest.raises(ValueError, match=r"dataset_coco\.json:2: not valid JSON"):
        load_coco(coco)


def test_images_karpathy_does_not_split_are_left_out_with_a_warning(coco):
    _edit(coco / "dataset_coco.json", lambda d: d.update(images=[e for e in d["images"] if e["cocoid"] != 3]))
    message = rf"1 images of the annotation files have no split there .*{file_name(3, 'val')}"
    with pytest.warns(UserWarning, match=message):
        dataset = load_coco(coco)
    assert len(dataset) == 4


def test_missing_files_are_named(tmp_path, coco):
    (coco / "annotations" / "instances_train2014.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"instances_train2014\.json: no such file \(captions_train2014\.json "
                                                r"is there"):
        load_coco(coco)
    with pytest.raises(FileNotFoundError, match="annotations: no such folder"):
        load_coco_annotations(tmp_path)
    (tmp_path / "annotations").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no captions_\{train,val\}\{2014,2017\}\.json"):
        load_coco_annotations(tmp_path)
    with pytest.raises(ValueError, match="reads a folder"):
        load_dataset(coco / "annotations" / "captions_val2014.json", "coco")
    (coco / "annotations" / "captions_train2014.json").unlink()  # the val split alone is a COCO folder too
    assert len(load_coco(coco)) == 4
    (coco / "annotations" / "captions_val2014.json").write_text('{"images": [\n}')
    with pytest.raises(ValueError, match=r"captions_val2014\.json:2: not valid JSON"):
        load_coco_annotations(coco)
