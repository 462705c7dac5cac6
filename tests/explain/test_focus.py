"""keyword_focus(): one captioning pass, token (not substring) matches, per-map normalised mean maps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captionlens.data.images import ImageLoadError
from captionlens.explain import explain
from captionlens.explain import focus as focus_module
from captionlens.explain.focus import keyword_focus
from captionlens.models import decoding
from captionlens.models.decoding import Decoded
from captionlens.viz.focus import save_focus
from zoo import FILE_WORDS, IMAGE_SIZE, tiny_captioner, write_broken, write_images

CAPTIONS = {"a.png": "a dog and a ball", "b.png": "a hotdog on a plate", "c.png": "red dog on a red dog",
            "d.png": "dogs and a ball", "e.png": "a plate"}


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Captions come from CAPTIONS (unknown files fail as unreadable); records each captioning call, and
    any decoding the explanations would do on their own."""
    calls: dict[str, list] = {"caption": [], "decode": []}

    def caption_files(model, paths, beam_size=3, max_length=20, batch_size=32, **_):
        calls["caption"].append((list(paths), beam_size, batch_size))
        out = []
        for path in paths:
            words = CAPTIONS.get(Path(path).name, "").split()
            ids = [model.vocab(w) for w in words]
            out.append(Decoded(ids, words, [0.0] * len(ids), True, 0.0, None) if words
                       else ImageLoadError(f"{path}: cannot read image (broken)"))
        return out

    monkeypatch.setattr(focus_module, "caption_files", caption_files)
    for name in ("greedy", "beam_search"):
        real = getattr(decoding, name)
        monkeypatch.setattr(decoding, name, lambda *a, _real=real, **k: calls["decode"].append(1) or _real(*a, **k))
    return calls


def minmax(heat: np.ndarray) -> np.ndarray:
    return (heat - heat.min()) / (heat.max() - heat.min())


def test_keywords_match_whole_words_from_one_captioning_pass(tmp_path: Path, forced: dict, capsys) -> None:
    paths = write_images(tmp_path, list(CAPTIONS))
    model = tiny_captioner(vocab=FILE_WORDS)
    result = keyword_focus(model, paths, ["dog", "Ball", "plate", "hotdog", "cat"], batch_size=2)
    assert forced["caption"] == [([str(p) for p in paths], 1, 2)] and forced["decode"] == []
    found = {word: [Path(p).name for p in focus.paths] for word, focus in result.keywords.items()}
    assert found == {"dog": ["a.png", "c.png"], "ball": ["a.png", "d.png"], "plate": ["b.png", "e.png"],
                     "hotdog": ["b.png"], "cat": []}
    assert result.keywords["dog"].word_index == [1, 1]  # "red dog on a red dog": the first "dog"
    assert result.keywords["plate"].word_index == [4, 1]
    assert result.keywords["cat"].mean_map is None and result.unknown == ["cat"]
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["found 2 images with 'dog'", "found 2 images with 'ball'", "found 2 images with 'plate'",
                       "found 1 image with 'hotdog'", "none with 'cat' (not in the model's vocabulary)"]


def test_mean_map_is_the_mean_of_each_images_min_max_scaled_map(tmp_path: Path, forced: dict) -> None:
    model = tiny_captioner(vocab=FILE_WORDS)
    paths = write_images(tmp_path, list(CAPTIONS))
    result = keyword_focus(model, paths, ["dog", "ball"], size=IMAGE_SIZE, verbose=False)
    for word, names in (("dog", ["a.png", "c.png"]), ("ball", ["a.png", "d.png"])):
        expected = []
        for name in names:
            caption = CAPTIONS[name].split()
            alone = explain(model, tmp_path / name, ("gradcam",), caption=" ".join(caption))
            expected.append(minmax(alone["gradcam"].maps[caption.index(word)]))
        focus = result.keywords[word]
        assert focus.count == len(names)
        np.testing.assert_allclose(np.stack(focus.maps), np.stack(expected), atol=1e-5)
        np.testing.assert_allclose(focus.mean_map, (expected[0] + expected[1]) / 2, atol=1e-5)


def test_maps_of_differently_sized_images_align_on_a_common_grid(tmp_path: Path, forced: dict) -> None:
    paths = write_images(tmp_path, ["a.png"], hw=(24, 40)) + write_images(tmp_path, ["d.png"], hw=(48, 30))
    result = keyword_focus(tiny_captioner(vocab=FILE_WORDS), paths, ["ball"], method="lime", size=16,
                           settings={"num_samples": 40, "n_segments": 8}, verbose=False)
    focus = result.keywords["ball"]
    assert focus.count == 2 and focus.mean_map.shape == (16, 16) and focus.signed
    for heat in focus.maps:  # signed maps: value / max |value|, so the peak magnitude is exactly 1
        assert heat.shape == (16, 16) and np.isclose(np.abs(heat).max(), 1.0)


def test_bad_images_are_reported_and_save_focus_writes_figures_and_json(tmp_path: Path, forced: dict,
                                                                         capsys) -> None:
    paths = write_images(tmp_path, ["a.png", "c.png"]) + write_broken(tmp_path)[:1]
    model = tiny_captioner(vocab=FILE_WORDS)
    result = keyword_focus(model, paths, ["dog", "ball", "plate"], size=IMAGE_SIZE, verbose=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt.jpg" in err[0]
    assert [f["path"] for f in result.failed] == [str(paths[2])]
    summary_path = save_focus(result, tmp_path / "focus")
    summary = json.loads(summary_path.read_text())
    assert {w: k["count"] for w, k in summary["keywords"].items()} == {"dog": 2, "ball": 1, "plate": 0}
    assert summary["keywords"]["dog"]["figure"] == "focus-dog.png" and "figure" not in summary["keywords"]["plate"]
    assert sorted(p.name for p in (tmp_path / "focus").glob("*.png")) == ["focus-ball.png", "focus-dog.png"]
    with np.load(tmp_path / "focus" / "focus.npz") as means:
        np.testing.assert_array_equal(means["dog"], result.keywords["dog"].mean_map)


def test_real_captioning_runs_once_per_batch_whatever_the_keywords(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = decoding.greedy
    monkeypatch.setattr(decoding, "greedy", lambda model, features, *a, **k: calls.append(len(features)) or
                        real(model, features, *a, **k))
    paths = write_images(tmp_path, [f"{k}.png" for k in range(5)])
    model = tiny_captioner(vocab=FILE_WORDS)
    result = keyword_focus(model, paths, ["dog", "ball", "a", "red"], batch_size=3, verbose=False)
    assert calls == [3, 2]
    assert len(result.captions) == 5


def test_usage_errors_are_raised_before_captioning(tmp_path: Path, forced: dict) -> None:
    paths = write_images(tmp_path, ["a.png"])
    model = tiny_captioner(vocab=FILE_WORDS)
    with pytest.raises(ValueError, match="one word"):
        keyword_focus(model, paths, ["hot dog"])
    with pytest.raises(ValueError, match="unknown method"):
        keyword_focus(model, paths, ["dog"], method="saliency")
    with pytest.raises(ValueError, match="'attention' needs a model with attention"):
        keyword_focus(model, paths, ["dog"], method="attention")
    with pytest.raises(ValueError, match="lime: num_samples must be an integer >= 2"):
        keyword_focus(model, paths, ["dog"], method="lime", settings={"num_samples": 0})
    assert forced["caption"] == []
