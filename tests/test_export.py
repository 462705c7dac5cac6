"""export_explanations(): bad files reported and skipped, atomic per-image folders, resume (figures an earlier
run left out drawn, nothing explained again), unique folder names."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import captionlens.export as export_module
from captionlens.explain import api, explain
from captionlens.explain.result import CaptionExplanation
from captionlens.export import ExportSummary, Failed, export_explanations, rebuild_report
from zoo import FILE_WORDS, tiny_captioner, write_broken, write_images

FAST = {"beam_size": 2, "max_length": 3, "progress": False}


def result_folders(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "assets")


def report_names(index: Path) -> list[str]:
    data = re.search(r'id="captionlens-data">(.*?)</script>', index.read_text(encoding="utf-8"), re.S).group(1)
    return [entry["name"] for entry in json.loads(data)["entries"]]


def test_bad_files_are_reported_once_and_the_good_ones_done(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tiny_captioner(vocab=FILE_WORDS)
    good = write_images(tmp_path / "in", ["one.png", "two.jpg", "three.png"])
    broken = write_broken(tmp_path / "in")
    paths = [good[0], broken[0], good[1], broken[1], broken[2], good[2]]
    summary = export_explanations(model, paths, tmp_path / "out", methods=("gradcam", "gradcam++"), **FAST)

    assert not summary.ok
    assert [Path(d.path) for d in summary.done] == good
    assert [Path(f.path) for f in summary.failed] == broken
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, broken):
        assert line.startswith("error: ") and str(path) in line and "cannot read image" in line
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [f["path"] for f in written["failed"]] == [str(p) for p in broken]
    assert len(written["done"]) == 3 and written["skipped"] == [] and written["methods"] == ["gradcam", "gradcam++"]
    assert written["images_per_second"] > 0 and written["decoding"] == {"beam_size": 2, "max_length": 3}
    assert ExportSummary.load(tmp_path / "out").to_json() == summary.to_json() == written   # one round trip
    assert result_folders(tmp_path / "out") == ["one", "three", "two"]
    assert sorted(report_names(summary.index_html)) == ["one", "three", "two"]
    for path in good:  # batched results land in the right folder: compare with explaining the file alone
        folder = tmp_path / "out" / path.stem
        assert {p.name for p in folder.iterdir()} == {"grid-gradcam.jpg", "grid-gradcam++.jpg", "explanation.json",
                                                      "explanation.npz", "report"}  # "grid": no matplotlib figures
        assert {p.name for p in (folder / "report").iterdir()} == {"image.jpg", "heat.js", "entry.json"}
        saved = CaptionExplanation.load(folder / "explanation")
        alone = explain(model, path, ("gradcam", "gradcam++"), beam_size=2, max_length=3)
        assert saved.tokens == alone.tokens and saved.image_path == str(path)
        np.testing.assert_allclose(saved["gradcam"].maps, alone["gradcam"].maps, rtol=1e-4, atol=1e-6)


def test_a_batch_that_fails_is_redone_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image that makes explain_batch raise costs only itself, not the other images of its batch."""
    model = tiny_captioner(vocab=FILE_WORDS)
    paths = write_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    write_images(tmp_path / "in", ["odd.png"], hw=(32, 40))
    paths.insert(1, tmp_path / "in" / "odd.png")
    real, calls = api.explain_batch, []

    def picky(model, images, *args, **kwargs):
        calls.append(len(images))
        if any(image.size != (32, 32) for image in images):
            raise ValueError("odd size")
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(api, "explain_batch", picky)
    summary = export_explanations(model, paths, tmp_path / "out", **FAST)
    assert calls == [4, 1, 1, 1, 1]
    assert [Path(d.path).name for d in summary.done] == ["a.png", "b.png", "c.png"]
    assert summary.failed == (Failed(str(paths[1]), f"{paths[1]}: odd size"),)


def test_interrupted_run_leaves_only_complete_folders_and_resume_finishes(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_captioner(vocab=FILE_WORDS)
    paths = write_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    real_save, saved = export_module.save_tiles, []

    def interrupted(tiles, path, *args, **kwargs):
        saved.append(path)
        if len(saved) == 2:  # one word-tile image per image: this is the second image
            raise KeyboardInterrupt
        return real_save(tiles, path, *args, **kwargs)

    monkeypatch.setattr(export_module, "save_tiles", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_explanations(model, paths, out, **FAST)
    left = sorted(p.name for p in out.iterdir())
    assert "a" in left and "b" not in left  # no half-written "b", no temporary folder ("c" may be complete:
    assert set(left) <= {"a", "c"}          # its write was queued on the writer thread before "b" failed)
    for name in left:
        assert {"explanation.json", "explanation.npz", "grid-gradcam.jpg"} <= {p.name for p in (out / name).iterdir()}
    first = (out / "a" / "explanation.json").stat().st_mtime_ns

    monkeypatch.setattr(export_module, "save_tiles", real_save)
    explained = []
    real_batch = api.explain_batch
    monkeypatch.setattr(api, "explain_batch", lambda m, images, *a, **k: explained.extend(images) or
                        real_batch(m, images, *a, **k))
    summary = export_explanations(model, paths, out, resume=True, **FAST)
    assert [s.folder for s in summary.skipped] == left
    assert [d.folder for d in summary.done] == sorted({"a", "b", "c"} - set(left)) and summary.ok
    assert len(explained) == 3 - len(left) and (out / "a" / "explanation.json").stat().st_mtime_ns == first
    assert sorted(report_names(summary.index_html)) == ["a", "b", "c"]  # the resumed image is in the report
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_resume_redoes_a_folder_that_lacks_a_requested_method(tmp_path: Path) -> None:
    model = tiny_captioner(vocab=FILE_WORDS)
    paths = write_images(tmp_path / "in", ["a.png"])
    export_explanations(model, paths, tmp_path / "out", **FAST)
    summary = export_explanations(model, paths, tmp_path / "out", methods=("gradcam", "gradcam++"), resume=True,
                                  **FAST)
    assert summary.skipped == () and [d.folder for d in summary.done] == ["a"]
    assert set(CaptionExplanation.load(tmp_path / "out" / "a" / "explanation").methods) == {"gradcam", "gradcam++"}
    assert result_folders(tmp_path / "out") == ["a"]


def test_resume_draws_the_figures_an_earlier_run_left_out_without_explaining_again(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    model = tiny_captioner(vocab=FILE_WORDS)
    paths = write_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    export_explanations(model, paths, out, methods=("gradcam", "gradcam++"), figures="none", **FAST)
    assert not list(out.glob("*/grid-*.jpg"))
    stored = {name: (out / name / "explanation.npz").read_bytes() for name in ("a", "b")}

    def no_explaining(*args, **kwargs):
        raise AssertionError("a finished image was explained again")

    monkeypatch.setattr(api, "explain_batch", no_explaining)
    summary = export_explanations(model, paths, out, methods=("gradcam", "gradcam++"), figures="all",
                                  resume=True, **FAST)
    assert summary.ok and summary.done == ()
    assert [(s.folder, s.figures_drawn) for s in summary.skipped] == [("a", True), ("b", True)]
    for name in ("a", "b"):
        folder = out / name
        assert {"grid-gradcam.jpg", "grid-gradcam++.jpg", "comparison.png", "triptych-gradcam.png"} <= {
            p.name for p in folder.iterdir()}
        with Image.open(folder / "grid-gradcam.jpg") as grid:
            assert grid.format == "JPEG" and grid.width > 0
        assert (folder / "explanation.npz").read_bytes() == stored[name]       # not redone
    again = export_explanations(model, paths, out, methods=("gradcam",), figures="grid", resume=True, **FAST)
    assert [s.figures_drawn for s in again.skipped] == [False, False]       # nothing missing any more


def test_same_file_name_in_two_folders_gets_two_stable_folders(tmp_path: Path) -> None:
    model = tiny_captioner(vocab=FILE_WORDS)
    first = write_images(tmp_path / "x", ["dog.png", "cat.png"])[0]
    second = write_images(tmp_path / "y", ["dog.png"], seed=5)[0]
    out = tmp_path / "out"
    summary = export_explanations(model, [first, second], out, **FAST)
    folders = [d.folder for d in summary.done]
    assert len(set(folders)) == 2 and all(f.startswith("dog-") for f in folders)
    for path, folder in zip((first, second), folders):
        assert json.loads((out / folder / "explanation.json").read_text())["image_path"] == str(path)
    again = export_explanations(model, [second, first], out, **FAST)  # a rerun reuses the same folders
    assert [d.folder for d in again.done] == folders[::-1]
    alone = export_explanations(model, [first], out, **FAST)         # so does a run with only one of them
    assert [d.folder for d in alone.done] == folders[:1]
    cat = export_explanations(model, [tmp_path / "x" / "cat.png"], out, **FAST)
    assert [d.folder for d in cat.done] == ["cat"]
    assert result_folders(out) == sorted([*folders, "cat"])


def test_usage_errors_are_raised_before_any_work(tmp_path: Path) -> None:
    model = tiny_captioner(vocab=FILE_WORDS)
    paths = write_images(tmp_path / "in", ["a.png"])
    with pytest.raises(ValueError, match="unknown method"):
        export_explanations(model, paths, tmp_path / "out", methods=("gradcam", "saliency"), **FAST)
    with pytest.raises(ValueError, match="'attention' needs a model with attention"):
        export_explanations(model, paths, tmp_path / "out", methods=("attention",), **FAST)
    with pytest.raises(ValueError, match="lime: num_samples must be an integer >= 2, got -5"):
        export_explanations(model, paths, tmp_path / "out", methods=("lime",), settings={"lime": {"num_samples": -5}},
                            **FAST)
    with pytest.raises(ValueError, match="lime: unknown setting.* num_sample"):
        export_explanations(model, paths, tmp_path / "out", methods=("lime",), settings={"lime": {"num_sample": 5}},
                            **FAST)
    with pytest.raises(ValueError, match="beam_size must be an integer >= 1, got 0"):
        export_explanations(model, paths, tmp_path / "out", **{**FAST, "beam_size": 0})
    with pytest.raises(ValueError, match="no images"):
        export_explanations(model, [], tmp_path / "out", **FAST)
    assert not (tmp_path / "out" / "a").exists()


def test_report_rebuilds_entries_a_folder_lacks_and_keeps_recorded_failures(tmp_path: Path) -> None:
    """A folder from before per-folder report files (or renamed) gets its entry made from its explanation."""
    model = tiny_captioner(vocab=FILE_WORDS)
    paths = write_images(tmp_path / "in", ["a.png", "b.png"]) + write_broken(tmp_path / "in")[:1]
    out = tmp_path / "out"
    export_explanations(model, paths, out, **FAST)
    shutil.rmtree(out / "a" / "report")
    os.rename(out / "b", out / "c")
    (out / "index.html").unlink()
    summary = rebuild_report(out)
    assert sorted(report_names(summary.index_html)) == ["a", "c"]
    entry = json.loads((out / "c" / "report" / "entry.json").read_text())
    assert entry["stem"] == "c" and entry["tokens"] == CaptionExplanation.load(out / "c" / "explanation").tokens
    assert "captionlensHeat(\"a\"" in (out / "a" / "report" / "heat.js").read_text()
    assert [f.path for f in summary.failed] == [str(paths[2])] and not summary.ok
    assert sorted(d["folder"] for d in json.loads((out / "summary.json").read_text())["done"]) == ["a", "c"]
