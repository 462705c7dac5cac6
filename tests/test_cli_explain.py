"""`captionlens explain` and `captionlens focus` through click's CliRunner: globs, bad files, exit codes, resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from captionlens.cli import main
from captionlens.data.images import ImageLoadError
from captionlens.explain import focus as focus_module
from captionlens.explain.registry import METHODS, ordered_methods
from captionlens.models import save_checkpoint
from captionlens.models.decoding import Decoded
from zoo import FILE_WORDS, tiny_captioner, write_broken, write_images

FAST = ["--beam-size", "2", "--max-length", "3"]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = tiny_captioner(vocab=FILE_WORDS)
    return save_checkpoint(tmp_path / "tiny.safetensors", model, model.vocab)


def run(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_explain_expands_a_quoted_glob_and_reports_each_bad_file(tmp_path: Path, checkpoint: Path) -> None:
    good = write_images(tmp_path / "photos", ["a.png", "b.png"])
    broken = write_broken(tmp_path / "broken")
    out = tmp_path / "out"
    result = run("explain", tmp_path / "photos" / "*.png", tmp_path / "broken", "--checkpoint", checkpoint,
                 "--methods", "gradcam, gradcam++", "--output-dir", out, "--figures", "all", *FAST)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    for path in broken:
        assert sum(str(path) in line for line in result.stderr.splitlines()) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(f["path"]) for f in summary["failed"]) == sorted(broken)
    assert [Path(d["path"]) for d in summary["done"]] == good and summary["methods"] == ["gradcam", "gradcam++"]
    assert {"comparison.png", "triptych-gradcam.png", "grid-gradcam.jpg"} <= {p.name for p in (out / "a").iterdir()}
    assert (out / "index.html").is_file()
    assert "2 explained" in result.stdout and str(out / "index.html") in result.stdout


def test_explain_resume_skips_done_images_and_same_names_do_not_collide(tmp_path: Path, checkpoint: Path) -> None:
    write_images(tmp_path / "x", ["dog.png"])
    write_images(tmp_path / "y", ["dog.png"], seed=3)
    out = tmp_path / "out"
    first = run("explain", tmp_path / "*" / "dog.png", "--checkpoint", checkpoint, "--output-dir", out, *FAST)
    assert first.exit_code == 0, first.output
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "assets")
    assert len(folders) == 2 and all(f.startswith("dog-") for f in folders)
    again = run("explain", tmp_path / "*" / "dog.png", "--checkpoint", checkpoint, "--output-dir", out, "--resume",
                *FAST)
    assert again.exit_code == 0 and "0 explained, 2 already done" in again.stdout


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "missing.safetensors"], "checkpoint not found"),
    (["--methods", "gradcam,saliency"], "unknown method"),
    (["--methods", "attention"], "'attention' needs a model with attention"),
    (["--beam-size", "0"], "Invalid value for '--beam-size': 0 is not in the range x>=1"),
    (["--lime-samples", "-5", "--methods", "lime"], "Invalid value for '--lime-samples': -5"),
    (["--batch-size", "0"], "Invalid value for '--batch-size'"),
])
def test_explain_usage_errors_exit_2_with_one_line(tmp_path: Path, checkpoint: Path, args: list[str],
                                                  message: str) -> None:
    image = write_images(tmp_path, ["a.png"])[0]
    options = {"--checkpoint": checkpoint, "--output-dir": tmp_path / "out"}
    options.update(dict(zip(args[::2], args[1::2])))
    result = run("explain", image, *[x for pair in options.items() for x in pair])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_focus_prints_matches_writes_json_and_fails_on_bad_images(tmp_path: Path, checkpoint: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    captions = {"a.png": "a dog on a plate", "b.png": "a hotdog", "c.png": "red dog"}

    def caption_files(model, paths, **_):
        words = [captions.get(Path(p).name, "").split() for p in paths]
        return [Decoded([model.vocab(w) for w in ws], ws, [0.0] * len(ws), True, 0.0, None) if ws
                else ImageLoadError(f"{p}: no such file") for p, ws in zip(paths, words)]

    monkeypatch.setattr(focus_module, "caption_files", caption_files)
    write_images(tmp_path / "imgs", list(captions))
    out = tmp_path / "focus"
    result = run("focus", "--checkpoint", checkpoint, "--images", tmp_path / "imgs" / "*.png",
                 "--keywords", "dog,ball", "--output-dir", out)
    assert result.exit_code == 0, result.output
    assert "found 2 images with 'dog'" in result.stdout and "none with 'ball'" in result.stdout
    assert json.loads((out / "focus.json").read_text())["keywords"]["dog"]["count"] == 2

    bad = run("focus", "--checkpoint", checkpoint, "--images", tmp_path / "nothing.jpg", "--keywords", "dog",
              "--output-dir", out)
    assert bad.exit_code == 1 and "nothing.jpg" in bad.stderr


def test_quick_demo_ends_with_a_report_and_writes_docs_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("demo", "--out", "demo", "--quick", "--docs")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "demo" / "report" / "summary.json").read_text())
    assert len(summary["done"]) == 2 and summary["failed"] == []
    assert summary["methods"] == ordered_methods(METHODS)     # every method the demo model can run
    assert "demo/report/index.html" in result.stdout and "report " in result.stdout.split("timings:")[1]
    for name in ("demo-word-grid.png", "demo-method-comparison.png"):
        with Image.open(tmp_path / "docs" / "images" / name) as png:
            assert png.mode == "P"  # 256-colour palette: small enough to commit


def test_suspect_rule_marks_words_in_the_explanation_and_the_report(tmp_path: Path, checkpoint: Path) -> None:
    image = write_images(tmp_path / "in", ["a.png"])[0]
    rule = tmp_path / "evaluation.json"                      # as `evaluate-explanations` writes it
    rule.write_text(json.dumps({"hallucination": {"rule": {"statistic": "log_prob", "direction": "below",
                                                           "threshold": -2.0, "method": None,
                                                           "describe": "log_prob below -2",
                                                           "chosen_on": "even-indexed images",
                                                           "selection_auc": 0.8}}}))
    result = run("explain", image, "--checkpoint", checkpoint, "--output-dir", tmp_path / "out",
                 "--suspect-rule", rule, *FAST)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "a" / "explanation.json").read_text())
    flags = [word["suspect"] for word in saved["suspect"]]
    assert flags == [lp <= -2.0 for lp in saved["log_probs"]]            # the rule, applied to each word
    assert saved["suspect_rule"]["threshold"] == -2.0
    page = (tmp_path / "out" / "index.html").read_text()
    assert '"suspect_rule":"log_prob below -2"' in page
    none = tmp_path / "none.json"
    none.write_text(json.dumps({"hallucination": {"rule": None}}))
    refused = run("explain", image, "--checkpoint", checkpoint, "--output-dir", tmp_path / "out2",
                  "--suspect-rule", none, *FAST)
    assert refused.exit_code == 2 and "chose no suspect rule" in refused.stderr
