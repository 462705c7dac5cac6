"""The `captionlens` CLI through click's CliRunner: captions as the Python API makes them, one-line
errors with the documented exit codes, and the train / evaluate / demo commands end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from captionlens.cli import expand_images, main
from captionlens.data.images import load_image_tensor
from captionlens.data.shapes import generate_shapes
from captionlens.data.vocabulary import Vocabulary
from captionlens.evaluate import ExplanationEvaluation
from captionlens.models import load_checkpoint, save_checkpoint
from zoo import tiny_captioner


@pytest.fixture
def checkpoint(tmp_path):
    vocab = Vocabulary("a red blue circle square small large".split())
    model = tiny_captioner("show-attend-tell", vocab=vocab, hidden_size=32, grid_size=7, calibrate=False,
                           attach_vocab=False)
    return save_checkpoint(tmp_path / "tiny.safetensors", model, vocab)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for name in ("one.png", "two.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / name)
        paths.append(folder / name)
    return paths


def _expected_caption(checkpoint, image, beam=3):
    ckpt = load_checkpoint(checkpoint)
    tensor = load_image_tensor(image, ckpt.model.preprocessing)[0]
    return ckpt.model.generate_caption(tensor, ckpt.vocab, beam_size=beam)


def test_caption_json_matches_the_python_api(checkpoint, images):
    result = CliRunner().invoke(main, ["caption", *map(str, images), "--checkpoint", str(checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["image"] for row in rows] == [str(p) for p in images]
    for row, image in zip(rows, images):
        assert row["caption"] == _expected_caption(checkpoint, image)
        assert row["log_prob"] < 0


def test_a_bad_image_is_one_line_and_the_others_are_still_captioned(checkpoint, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    args = ["caption", str(images[0]), str(bad), str(images[1]), "--checkpoint", str(checkpoint), "--beam-size", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "broken.jpg" in line
    captioned = [line.split("\t") for line in result.stdout.splitlines()]
    assert [c[0] for c in captioned] == [str(images[0]), str(images[1])]
    assert captioned[1][1] == _expected_caption(checkpoint, images[1], beam=1)


def test_missing_checkpoint_is_exit_2_and_one_line(images, tmp_path):
    result = CliRunner().invoke(main, ["caption", str(images[0]), "--checkpoint", str(tmp_path / "gone.safetensors")])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: checkpoint not found: {tmp_path / 'gone.safetensors'}"]
    assert "Traceback" not in result.output


def test_folders_and_globs_expand_to_sorted_image_files(images, tmp_path):
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    folder = tmp_path / "imgs"
    assert expand_images([str(folder)]) == sorted(images)
    assert expand_images([str(folder / "*.png"), str(folder / "missing.png")]) == [images[0], folder / "missing.png"]
    assert expand_images([str(folder / "*.gif")]) == [folder / "*.gif"]   # fails later as "no such file"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=12, n_val=3, n_test=3, image_size=32, seed=2)


def test_train_then_evaluate_from_the_command_line(shapes, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    trained = runner.invoke(main, ["train", "--data", str(shapes), "--format", "shapes", "--epochs", "1",
                                   "--image-size", "32", "--batch-size", "6", "--beam-size", "1", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    assert (out / "best.safetensors").is_file() and str(out / "best.safetensors") in trained.stdout
    evaluated = runner.invoke(main, ["evaluate", "--checkpoint", str(out / "best.safetensors"), "--data", str(shapes),
                                     "--metric", "BLEU", "--beam-size", "2", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert result["split"] == "test" and result["decoding"]["beam_size"] == 2
    assert sorted(result["predictions"]) == ["test_00000.png", "test_00001.png", "test_00002.png"]
    assert 0.0 <= result["metrics"]["BLEU-4"] <= 1.0


def test_bad_values_are_one_line_errors(shapes, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(shapes), "--device", "tpu", "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.splitlines() == ["error: unknown device 'tpu'; use auto, cpu, "
                                                                    "cuda or cuda:N"]


def test_quick_demo_runs_every_step(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "--quick"])
    assert result.exit_code == 0, result.output
    captions = json.loads((tmp_path / "demo" / "captions.json").read_text())
    assert len(captions) == 3 and all(row["caption"] in result.stdout for row in captions)
    evaluation = json.loads((tmp_path / "demo" / "caption_metrics.json").read_text())
    assert evaluation["metrics"]["images"] == 16
    hallucination = ExplanationEvaluation.load(tmp_path / "demo" / "hallucination" / "evaluation.json")
    assert hallucination.dataset.images == 16 and hallucination.hallucination is not None
    for name in ("data", "train", "evaluate", "caption", "suspect", "report"):
        assert f"{name} " in result.stdout.split("timings:")[1]
