"""write_report(): page data, heatmap sprites (hand-computed values), scale to 1000 images, atomic writes."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from viz_synthetic import blob_centre, make

from captionlens.viz import write_report


def page_data(index: Path) -> dict:
    match = re.search(r'<script type="application/json" id="captionlens-data">(.*?)</script>',
                      index.read_text(encoding="utf-8"), re.S)
    return json.loads(match.group(1))


def sprites(index: Path, stem: str) -> dict[str, np.ndarray]:
    """Decode assets/<stem>/heat.js back into (T * h, w) uint8 arrays."""
    text = (index.parent / "assets" / stem / "heat.js").read_text()
    call = re.fullmatch(r'captionlensHeat\("(.+?)", (\{.*\})\);\n', text, re.S)
    assert call and call.group(1) == stem
    return {m: np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
            for m, url in json.loads(call.group(2)).items()}


def test_report_lists_every_image_with_its_words_and_scores(tmp_path: Path) -> None:
    explanations = [make(7), make(3, shape=(40, 40), methods=("gradcam",))]
    index = write_report(explanations, tmp_path / "report", image_names=["dog.jpg", "cat.png"], title="My <run>")
    assert index == tmp_path / "report" / "index.html"
    html = index.read_text()
    assert "<title>My &lt;run&gt;</title>" in html and "http" not in html.replace("http-equiv", "")
    data = page_data(index)
    assert [e["stem"] for e in data["entries"]] == ["dog", "cat"]
    first = data["entries"][0]
    assert first["tokens"] == explanations[0].tokens
    np.testing.assert_allclose(first["log_probs"], explanations[0].log_probs, atol=1e-4)
    assert first["methods"] == ["gradcam", "attention", "lime", "occlusion"]
    assert first["signed"] == ["lime", "occlusion"]
    assert (first["width"], first["height"]) == (64, 48)
    assert html.count('loading="lazy"') == 2
    for stem, size in (("dog", (64, 48)), ("cat", (40, 40))):
        with Image.open(index.parent / "assets" / stem / "image.jpg") as photo:
            assert photo.size == size
    assert len(data["colormaps"]["unsigned"]) == len(data["colormaps"]["signed"]) == 256 * 3


def test_heat_sprites_hold_each_words_normalised_map(tmp_path: Path) -> None:
    expl = make(4, shape=(48, 64), methods=("gradcam", "lime"))
    index = write_report([expl], tmp_path, image_names=["x"], heat_size=64)
    heat = sprites(index, "x")
    assert heat["gradcam"].shape == (4 * 48, 64) and heat["gradcam"].dtype == np.uint8
    for t in range(4):
        word = heat["gradcam"][48 * t:48 * (t + 1)]
        assert word.max() == 255 and word.min() == 0
        assert np.unravel_index(word.argmax(), word.shape) == blob_centre(t, (48, 64))
    # LIME word 0: weights 0.8 (block 0), 0.3 (block 1), -0.05 elsewhere; value / 0.8 mapped to (x + 1) / 2 * 255
    lime = heat["lime"][:48]
    assert lime[6, 8] == 255 and lime[6, 24] == round(1.375 / 2 * 255) and lime[30, 40] in (119, 120)


def test_heat_sprites_are_shrunk_keeping_aspect(tmp_path: Path) -> None:
    expl = make(2, shape=(150, 300), methods=("occlusion",))
    expl.methods["occlusion"].maps[:] = 0.0
    index = write_report([expl], tmp_path, image_names=["wide"], heat_size=32)
    assert page_data(index)["entries"][0]["heat_size"] == [32, 16]
    heat = sprites(index, "wide")["occlusion"]
    assert heat.shape == (2 * 16, 32) and set(np.unique(heat)) == {128}     # signed zero sits mid-scale
    with Image.open(tmp_path / "assets" / "wide" / "thumb.jpg") as thumb:
        assert thumb.size == (200, 100)


def test_thousand_images_keep_the_page_small(tmp_path: Path) -> None:
    base = make(2, shape=(8, 8), methods=("gradcam",))
    index = write_report([base] * 1000, tmp_path, image_names=[f"img_{i}.jpg" for i in range(1000)])
    html = index.read_text()
    assert len(html.encode()) / 1000 < 600          # bytes per entry: thumbnail card + JSON metadata
    assert html.count('loading="lazy"') == 1000
    assert "data:image/png" not in html             # heatmaps load per image, on open
    assert len(list((tmp_path / "assets").iterdir())) == 1000


def test_interrupted_run_keeps_the_previous_report(tmp_path: Path) -> None:
    index = write_report([make(3)], tmp_path, image_names=["old"])
    before = index.read_text()
    broken = make(2)
    broken.image = broken.image.astype(np.float32)
    with pytest.raises(ValueError, match="bad.jpg: image must be"):
        write_report([make(2), broken], tmp_path, image_names=["new", "bad.jpg"])
    assert index.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["assets", "index.html"]    # no temporary leftovers
    assert [p.name for p in (tmp_path / "assets").iterdir()] == ["old"]
    write_report([make(2)], tmp_path, image_names=["new"])
    assert [p.name for p in (tmp_path / "assets").iterdir()] == ["new"]             # old assets replaced


def test_names_become_unique_safe_folders(tmp_path: Path) -> None:
    index = write_report([make(1)] * 4, tmp_path, image_names=["a b.jpg", "a b.png", "A_B.jpg", "../x"])
    assert [e["stem"] for e in page_data(index)["entries"]] == ["a_b", "a_b-1", "A_B-2", "x"]
    assert [e["name"] for e in page_data(index)["entries"]][0] == "a b.jpg"


def test_markup_in_captions_is_escaped(tmp_path: Path) -> None:
    expl = make(2)
    expl.tokens = ["<b>bold</b>", "</script><script>alert(1)"]
    index = write_report([expl], tmp_path)
    html = index.read_text()
    assert "<b>bold" not in html and html.count("</script>") == 2
    assert page_data(index)["entries"][0]["tokens"] == expl.tokens


def test_caption_without_words_still_gets_an_entry(tmp_path: Path) -> None:
    empty = make(1)
    empty.tokens, empty.token_ids, empty.log_probs = [], [], np.zeros(0, np.float32)
    empty.methods = {}
    entry = page_data(write_report([empty], tmp_path))["entries"][0]
    assert entry["tokens"] == [] and entry["methods"] == []


@pytest.mark.parametrize("args, message", [
    (([],), "at least one explanation"),
    (([make(1)], ["a", "b"]), "2 image_names given for 1 explanations"),
])
def test_bad_arguments_raise(tmp_path: Path, args: tuple, message: str) -> None:
    explanations, *names = args
    with pytest.raises(ValueError, match=message):
        write_report(explanations, tmp_path, *names)
