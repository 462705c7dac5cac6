"""Fuzzing the COCO reader (`load_coco`): a small folder in COCO's layout (both annotation files of val2014,
Karpathy's dataset_coco.json) whose instances are a polygon, a compressed RLE and an uncompressed crowd RLE;
one of the three files is mutated as JSON or as bytes. See harness.py for the contract."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from harness import check_reader, check_refused, fuzz_settings, json_mutations, write
from hypothesis import given
from hypothesis import strategies as st

from captionlens.data.coco import CocoDataset, load_coco
from captionlens.data.records import SPLITS
from coco_layout import caption_annotations, file_name, polygon_annotation, rle_annotation, write_split

READER = "`load_coco` (captions and instances files, Karpathy's dataset_coco.json)"  # its row in `make fuzz`

WIDTH, HEIGHT = 12, 10


def _seed(root: Path) -> dict[str, dict]:
    """The three files' contents of a valid folder (the images exist as empty files: the reader only checks
    that they are there)."""
    images = [{"id": number, "file_name": file_name(number, "val"), "width": WIDTH, "height": HEIGHT}
              for number in (7, 9)]
    crowd = np.zeros((HEIGHT, WIDTH), dtype=bool)
    crowd[2:5, 3:9] = True
    instances = [polygon_annotation(1, 7, "dog", [[1.0, 1.0, 8.0, 1.0, 8.0, 6.0, 1.0, 6.0]]),
                 rle_annotation(2, 7, "cat", crowd, compressed=True, iscrowd=0),
                 rle_annotation(3, 9, "person", crowd, compressed=False)]
    captions = caption_annotations(100, {7: ["a dog and a cat", "two pets"], 9: ["people in a crowd"]})
    captions_path, instances_path = write_split(root, "val", images, instances, captions, photos=False)
    for image in images:
        write(root / "val2014" / image["file_name"], b"")
    karpathy = {"images": [{"cocoid": 7, "split": "test", "filepath": "val2014", "filename": images[0]["file_name"]},
                           {"cocoid": 9, "split": "val", "filepath": "val2014", "filename": images[1]["file_name"]}],
                "dataset": "coco"}
    write(root / "dataset_coco.json", json.dumps(karpathy).encode())
    return {"annotations/captions_val2014.json": json.loads(captions_path.read_text()),
            "annotations/instances_val2014.json": json.loads(instances_path.read_text()),
            "dataset_coco.json": karpathy}


def accept(dataset: CocoDataset) -> None:
    """A loaded dataset is whole: records of existing images with captions, and every image's ground truth
    usable: each instance's RLE has the image's size, each category's union mask draws at a small size."""
    assert isinstance(dataset, CocoDataset) and len(dataset) > 0
    for record in dataset:
        assert record.image_path.is_file() and record.split in SPLITS
        assert record.captions and all(isinstance(c, str) and c.strip() for c in record.captions)
        image = dataset.image(record.image_id)
        for instance in image.instances:
            assert list(instance.rle["size"]) == [image.height, image.width]
            assert instance.size_class in ("small", "medium", "large")
        for category in image.categories:
            assert image.category_mask(category, (8, 8)).shape == (8, 8)


def test_seed_loads(tmp_path):
    _seed(tmp_path)
    dataset = load_coco(tmp_path)
    accept(dataset)
    assert sorted(r.split for r in dataset) == ["test", "val"]


@fuzz_settings()
@given(data=st.data())
def test_annotation_files(tmp_path, data):
    seeds = _seed(tmp_path)
    name = data.draw(st.sampled_from(sorted(seeds)), label="mutated")
    write(tmp_path / name, data.draw(json_mutations(seeds[name]), label="file"))
    check_reader(lambda: load_coco(tmp_path), {Path(name).name, "annotations"}, accept,
                 files=[tmp_path / n for n in seeds])


# Files the fuzzer found breaking the contract, with what the reader did before the fix.
@pytest.mark.parametrize(("name", "edit"), [
    pytest.param("annotations/instances_val2014.json", lambda d: d["annotations"][0].update(area=10**400),
                 id="OverflowError: an area past float range"),
    pytest.param("annotations/instances_val2014.json", lambda d: d["annotations"][1]["bbox"].__setitem__(0, -10**400),
                 id="OverflowError: a bbox value past float range"),
    pytest.param("annotations/captions_val2014.json", lambda d: d["annotations"][0].update(id="a\nb", image_id=1),
                 id="two-line error: a caption annotation id holding a newline"),
    pytest.param("annotations/instances_val2014.json",
                 lambda d: [image.update(width=2**20, height=2**20) for image in d["images"]],
                 id="loaded: images of a terapixel, their masks past any memory"),
    pytest.param("annotations/instances_val2014.json",
                 lambda d: d["annotations"][0]["segmentation"][0].__setitem__(2, 1e9),
                 id="hang: pycocotools rasterising a polygon with a vertex at 10^9"),
    pytest.param("annotations/instances_val2014.json",
                 lambda d: d["annotations"][0]["segmentation"][0].__setitem__(3, -1e12),
                 id="memory blow-up or segmentation fault: a polygon vertex at -10^12"),
    pytest.param("annotations/instances_val2014.json",
                 lambda d: d["annotations"][0]["segmentation"][0].__setitem__(2, [1, [2]]),
                 id="ValueError naming no file: numpy on a polygon holding nested lists of several lengths"),
    pytest.param("annotations/captions_val2014.json", lambda d: d["annotations"].pop(),
                 id="loaded: an image without captions"),
    pytest.param("dataset_coco.json", lambda d: d.update(images=[]),
                 id="loaded: no image has a split in dataset_coco.json, an empty dataset"),
])
def test_crashes_found(tmp_path, name, edit):
    content = _seed(tmp_path)[name]
    edit(content)
    write(tmp_path / name, json.dumps(content).encode())
    check_refused(lambda: load_coco(tmp_path), {Path(name).name})
