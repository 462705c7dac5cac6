"""Fuzzing the readers of evaluation.json: `ExplanationEvaluation.load` (`captionlens insights`, the report)
and `load_suspect_rule` (`captionlens explain --suspect-rule`). The seed is an evaluation built from the
result types' own annotations (every field filled, every optional part present, two methods with their word
classes), so it follows the types as they change; it is mutated as JSON and as bytes. See harness.py."""
from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from harness import assert_typed, check_reader, check_refused, fuzz_settings, json_mutations, write
from hypothesis import given
from hypothesis import strategies as st

from captionlens.evaluate import result
from captionlens.evaluate.insights import insights
from captionlens.evaluate.result import ExplanationEvaluation, load_suspect_rule
from captionlens.evaluate.stats import Rate
from captionlens.explain.suspect import SuspectRule
from captionlens.viz.evaluation import markdown

READER = "evaluation.json: `ExplanationEvaluation.load`, `load_suspect_rule`"  # its row in the table of `make fuzz`

METHODS = ("gradcam", "lime")
NAMES = {**vars(result), "CaptionExplanation": Any}  # result imports that name for type checkers only


def hints_of(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, NAMES)


def build(hint: Any, name: str = "", depth: int = 0) -> Any:
    """A plausible value of type `hint` (the field `name`): numbers in 0..1, two methods' names as keys, a
    suspect rule that is one, every dataclass field filled down to `depth` 2 (a word class's own measures)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is SuspectRule:
        return SuspectRule("peak", "above", 1.5, "gradcam")
    if hint is Rate:
        return Rate(0.5, 0.25, 0.75, 12)
    if dataclasses.is_dataclass(hint):
        hints = hints_of(hint)
        return hint(**{f.name: build(hints[f.name], f.name, depth + 1) for f in dataclasses.fields(hint)
                       if f.init and (f.name != "explanations")})
    if origin in (typing.Union, __import__("types").UnionType):
        chosen = [a for a in args if a is not type(None)]
        if depth > 2 or not chosen:
            return None
        return build(chosen[0], name, depth)
    if origin in (Mapping, dict) or hint is dict:
        key_type, value_type = args or (str, Any)
        if depth > 2 and dataclasses.is_dataclass(value_type):
            return {}
        keys = METHODS if name in ("methods", "auc", "deletion", "insertion") else ("shape noun", "function word")
        return {key: build(value_type, name, depth + 1) for key in keys}
    if origin in (tuple, Sequence, list):
        if len(args) == 2 and args[1] is Ellipsis or origin is not tuple:
            return tuple(build(args[0] if args else str, name, depth + 1) for _ in range(2))
        return tuple(build(a, name, depth + 1) for a in args)
    return {int: 3, float: 0.5, str: "gradcam" if name == "method" else "x", bool: True}.get(hint, None)


def _seed() -> dict:
    hints = hints_of(ExplanationEvaluation)
    fields = {f.name: build(hints[f.name], f.name) for f in dataclasses.fields(ExplanationEvaluation)
              if f.name != "explanations"}
    fields["config"] = result.EvaluationConfig(methods=METHODS)
    return ExplanationEvaluation(**fields).to_json()


SEED = _seed()


def accept(evaluation: ExplanationEvaluation) -> None:
    """A loaded evaluation is whole: typed, written back as strict JSON, and read by its consumers (the
    insights and the Markdown tables)."""
    assert_typed(evaluation, "evaluation")
    json.dumps(evaluation.to_json())
    insights(evaluation.methods)
    markdown(evaluation)


def accept_rule(rule: SuspectRule) -> None:
    assert_typed(rule, "rule")
    assert rule.flagged(__import__("numpy").array([0.0, 2.0])).shape == (2,)


def test_seed_loads(tmp_path):
    path = write(tmp_path / "evaluation.json", json.dumps(SEED).encode())
    accept(ExplanationEvaluation.load(path))
    accept_rule(load_suspect_rule(path))


@fuzz_settings()
@given(data=st.data())
def test_evaluation(tmp_path, data):
    path = write(tmp_path / "evaluation.json", data.draw(json_mutations(SEED), label="file"))
    check_reader(lambda: ExplanationEvaluation.load(path), {path.name}, accept)


@fuzz_settings()
@given(data=st.data())
def test_suspect_rule(tmp_path, data):
    seeds = (SEED, SEED["hallucination"]["rule"], SuspectRule("log_prob", "below", -2.0).to_json())
    seed = data.draw(st.sampled_from(seeds), label="seed")
    path = write(tmp_path / "evaluation.json", data.draw(json_mutations(seed), label="file"))
    check_reader(lambda: load_suspect_rule(path), {path.name}, accept_rule)


@pytest.mark.parametrize("text", [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="RecursionError: nested deeper than the parser goes"),
])
def test_crashes_found(tmp_path, text):
    path = write(tmp_path / "evaluation.json", text)
    check_refused(lambda: ExplanationEvaluation.load(path), {path.name})
    check_refused(lambda: load_suspect_rule(path), {path.name})
