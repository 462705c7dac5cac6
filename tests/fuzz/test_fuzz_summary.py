"""Fuzzing `ExportSummary.load`, the reader of an explain run's summary.json (`captionlens report` and
`--resume` read it): a summary with done, skipped and failed images, settings and a suspect rule, mutated as
JSON and as bytes. See harness.py for the contract."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import assert_typed, check_reader, check_refused, fuzz_settings, json_mutations, write
from hypothesis import given
from hypothesis import strategies as st

from captionlens.explain.suspect import SuspectRule
from captionlens.export import Explained, ExportOptions, ExportSummary, Failed, Skipped

READER = "summary.json: `ExportSummary.load`"  # its row in the table of `make fuzz`

OPTIONS = ExportOptions(("gradcam", "lime"), 3, 20, {"lime": {"num_samples": 300}}, SuspectRule("peak", "above", 1.5,
                                                                                                "gradcam"), "grid")


def _seed(out: Path) -> dict:
    summary = ExportSummary(out, OPTIONS, done=(Explained("/data/a.jpg", "a", "a dog"),),
                            skipped=(Skipped("/data/b.jpg", "b", True),), failed=(Failed("/data/c.jpg", "truncated"),),
                            processes=2, seconds=3.5, timings={"explain": 2.0, "figures": 1.0},
                            method_seconds={"gradcam": 0.5, "lime": 1.5}, images_per_second=0.6,
                            index_html=out / "index.html")
    return summary.to_json()


def accept(summary: ExportSummary | None) -> None:
    """A loaded summary is whole: typed, its JSON strict-serialisable again and its failures keyed by path
    (what `captionlens report` does with them)."""
    assert summary is not None
    assert_typed(summary, "summary")
    json.dumps(summary.to_json())
    assert len({f.path: f.error for f in summary.failed}) <= len(summary.failed)
    if summary.index_html is not None:
        assert summary.index_html.parent == summary.out_dir


def test_seed_loads(tmp_path):
    write(tmp_path / "summary.json", json.dumps(_seed(tmp_path)).encode())
    accept(ExportSummary.load(tmp_path))


@fuzz_settings()
@given(data=st.data())
def test_summary(tmp_path, data):
    path = write(tmp_path / "summary.json", data.draw(json_mutations(_seed(tmp_path)), label="file"))
    check_reader(lambda: ExportSummary.load(tmp_path), {path.name}, accept)


# Inputs the fuzzer found crashing the reader or loading as something other than a summary, with what happened.
@pytest.mark.parametrize("edit", [
    pytest.param(lambda d: d.update(methods="gradcam"), id="loaded: methods a string, read as its letters"),
    pytest.param(lambda d: d["failed"][0].update(path=["a"]), id="loaded: a path that is a list (unhashable later)"),
    pytest.param(lambda d: d.update(index_html="/etc/passwd"), id="loaded: index_html outside the folder"),
    pytest.param(lambda d: d.update(images_per_second="fast"), id="loaded: a rate that is text"),
])
def test_crashes_found(tmp_path, edit):
    data = _seed(tmp_path)
    edit(data)
    write(tmp_path / "summary.json", json.dumps(data).encode())
    check_refused(lambda: ExportSummary.load(tmp_path), {"summary.json"})


def test_deep_nesting(tmp_path):
    """RecursionError: arrays nested deeper than Python's JSON parser goes."""
    write(tmp_path / "summary.json", b'{"done": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    check_refused(lambda: ExportSummary.load(tmp_path), {"summary.json"})
