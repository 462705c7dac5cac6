"""`torchrun --nproc_per_node 2 -m captionlens ...` on CPU (gloo), against one process doing the same work:
the sharded explain writes the folders, summary and report one process writes; a crashed rank's images
are picked up by --resume and `captionlens report` rebuilds the page; DDP training takes the same
steps as one process with the same global batch, through a resume."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from captionlens.cli import main
from captionlens.data.shapes import generate_shapes
from captionlens.explain.result import CaptionExplanation
from captionlens.models import save_checkpoint
from captionlens.training import TrainConfig, train
from zoo import FILE_WORDS, tiny_captioner, write_broken, write_images

CRASH_SCRIPT = Path(__file__).with_name("crash_after_one_folder.py")
FAST = ["--beam-size", "2", "--max-length", "3", "--methods", "gradcam,gradcam++", "--batch-size", "2"]


def torchrun(*args: object, script: Path | None = None, cwd: Path) -> subprocess.CompletedProcess:
    """Two CPU processes of the installed command (or of `script`), one thread each."""
    target = [str(script)] if script else ["-m", "captionlens"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *target, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def report_names(out: Path) -> list[str]:
    data = re.search(r'id="captionlens-data">(.*?)</script>', (out / "index.html").read_text(), re.S).group(1)
    return [entry["name"] for entry in json.loads(data)["entries"]]


def visible(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    model = tiny_captioner(vocab=FILE_WORDS)
    return save_checkpoint(tmp_path / "tiny.safetensors", model, model.vocab)


def test_two_processes_write_exactly_what_one_process_writes(tmp_path: Path, checkpoint: Path) -> None:
    good = write_images(tmp_path / "in", [f"img{i}.png" for i in range(5)])
    broken = write_broken(tmp_path / "in")
    one = cli("explain", tmp_path / "in", "--checkpoint", checkpoint, "--output-dir", tmp_path / "one", *FAST)
    two = torchrun("explain", tmp_path / "in", "--checkpoint", checkpoint, "--output-dir", tmp_path / "two", *FAST,
                   cwd=tmp_path)
    assert one.exit_code == 1 and two.returncode == 1, two.stderr[-3000:]
    for path in broken:  # each bad image reported once, by the rank that had it
        assert sum(str(path) in line for line in two.stderr.splitlines() if line.startswith("error:")) == 1
    assert visible(tmp_path / "two") == visible(tmp_path / "one") == {p.stem for p in good} | {
        "index.html", "summary.json"}
    for path in good:
        folder_one, folder_two = tmp_path / "one" / path.stem, tmp_path / "two" / path.stem
        assert visible(folder_two) == visible(folder_one)
        a, b = (CaptionExplanation.load(f / "explanation") for f in (folder_one, folder_two))
        assert a.tokens == b.tokens and a.image_path == b.image_path == str(path)
        for method in ("gradcam", "gradcam++"):
            np.testing.assert_allclose(b[method].maps, a[method].maps, rtol=1e-4, atol=1e-6)
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert (s2["processes"], s1["processes"]) == (2, 1)
    for key in ("done", "failed", "skipped", "methods", "images"):
        assert s2[key] == s1[key], key
    assert report_names(tmp_path / "two") == report_names(tmp_path / "one") == sorted(p.stem for p in good)


def test_a_crashed_rank_leaves_complete_folders_report_rebuilds_and_resume_finishes(tmp_path: Path,
                                                                                     checkpoint: Path) -> None:
    good = write_images(tmp_path / "in", [f"img{i}.png" for i in range(6)])
    out = tmp_path / "out"
    crashed = torchrun("explain", tmp_path / "in", "--checkpoint", checkpoint, "--output-dir", out, *FAST,
                       script=CRASH_SCRIPT, cwd=tmp_path)
    assert crashed.returncode != 0
    finished = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert finished and finished < {p.stem for p in good}  # rank 1 died after its first folder: no summary, no page
    for name in finished:
        assert {"explanation.json", "explanation.npz", "grid-gradcam.jpg"} <= visible(out / name)

    rebuilt = cli("report", out)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert report_names(out) == sorted(finished)
    assert sorted(d["folder"] for d in json.loads((out / "summary.json").read_text())["done"]) == sorted(finished)

    resumed = torchrun("explain", tmp_path / "in", "--checkpoint", checkpoint, "--output-dir", out, *FAST,
                       "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(s["folder"] for s in summary["skipped"]) == sorted(finished)
    assert sorted(d["folder"] for d in summary["done"]) == sorted({p.stem for p in good} - finished)
    assert report_names(out) == sorted(p.stem for p in good)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_report_names_what_it_cannot_rebuild(tmp_path: Path) -> None:
    result = cli("report", tmp_path)
    assert result.exit_code == 2 and f"{tmp_path}: no complete image folder" in result.output
    assert "no such folder" in cli("report", tmp_path / "missing").output


SIZES = {"embed_size": 16, "hidden_size": 32, "attention_dim": 16, "image_size": 32, "batch_size": 8,
         "beam_size": 2, "val_limit": 4, "dropout": 0.0, "fine_tune_encoder": False}


def test_ddp_training_takes_the_steps_of_one_process_with_the_global_batch_through_a_resume(tmp_path: Path) -> None:
    """Dropout off and the trunk frozen: the two things that legitimately differ per process on CPU."""
    data = generate_shapes(tmp_path / "shapes", n_train=24, n_val=4, n_test=2, image_size=32, seed=3)
    for epochs, resume in ((1, False), (2, True)):
        train(TrainConfig(data=data, epochs=epochs, resume=resume, out_dir=tmp_path / "one", progress=False, **SIZES))
        options = ["--freeze-encoder", "--resume"] if resume else ["--freeze-encoder"]
        run = torchrun("train", "--data", data, "--epochs", epochs, "--out", tmp_path / "two", *options,
                       *[f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items() if k != "fine_tune_encoder"],
                       cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
    one, two = (load_file(tmp_path / d / "last.safetensors") for d in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    logs = [[json.loads(line) for line in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    assert [r["epoch"] for r in logs[1]] == [1, 2]
    assert logs[0][1]["train_loss"] < logs[0][0]["train_loss"]  # it trained: equal weights are not untouched ones
    for a, b in zip(*logs):  # the gathered validation scores every val image once, as one process does
        assert b["val_bleu4"] == pytest.approx(a["val_bleu4"], abs=1e-9)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert json.loads((tmp_path / "two" / "train_config.json").read_text())["processes"] == 2
