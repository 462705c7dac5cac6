"""The result of `evaluate_explanations` as types: one frozen dataclass per part (the data, each method's
measures, the sanity check, the hallucination section, the curves, the insights) and one `to_json` /
`from_json` pair at the edge. evaluation.json keeps the layout the README documents (files written
before load); insights, figures, the report and `captionlens explain --suspect-rule` read these types,
never the JSON's key strings.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionlens.atomic import atomic_path
from captionlens.data.records import read_json
from captionlens.evaluate.stats import Rate
from captionlens.explain.suspect import SuspectRule

if TYPE_CHECKING:
    from captionlens.explain.result import CaptionExplanation



def number(value: Any) -> float | None:
    """A measured float, or None where there was nothing to measure (NaN): strict JSON either way."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """What `evaluate_explanations` measures, on how much data, at what cost (recorded as "settings")."""

    methods: Sequence[str] | None = None    # None: every registered method the model can run
    split: str = "test"
    limit: int | None = 40                  # images explained and localised
    beam_size: int = 3
    max_length: int = 20
    faithfulness_images: int | None = 16    # of those, the first N get deletion / insertion / disappearance
    steps: int = 8                          # deletion / insertion points after the first
    grid: int = 8                           # word disappearance: cells per side ...
    cells: int = 6                          # ... and how many are hidden
    sanity_images: int = 4
    batch_size: int = 16                    # images explained together
    seed: int = 0
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)   # per method, as `explain` takes

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["methods"] = None if self.methods is None else list(self.methods)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvaluationConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, kw_only=True)
class EvaluatedData:
    """The data an evaluation ran on; the Flickr30k Entities counts are its split's, whatever `limit` took."""

    path: str
    format: str
    split: str
    images: int
    captions: int
    captions_explained: int
    words_scored: int
    words_grounded: int
    split_images: int | None = None
    split_captions: int | None = None
    phrases: int | None = None
    phrases_with_boxes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvaluatedData:
        return cls(**data)


@dataclass(frozen=True)
class SanityStep:
    """Maps compared after one cumulative randomisation step (`randomised`: what has been randomised so far)."""

    randomised: str
    spearman: float | None
    ssim: float | None


@dataclass(frozen=True)
class SanityResult:
    """A method's cascading-randomisation curve, its verdict ("pass" / "fail") and the rule that gave it."""

    layers: tuple[SanityStep, ...]
    verdict: str
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"layers": [dataclasses.asdict(step) for step in self.layers], "verdict": self.verdict,
                "rule": self.rule}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SanityResult:
        return cls(tuple(SanityStep(**step) for step in data["layers"]), data["verdict"], data["rule"])


@dataclass(frozen=True, kw_only=True)
class MethodMeasures:
    """A method's rates over a set of words (all of them, or one word class / phrase type), each with its
    interval and word count; the `_random` / `_centre` rates are the baselines over the same words."""

    pointing_game: Rate
    pointing_game_random: Rate
    pointing_game_centre: Rate
    relevance_mass: Rate
    relevance_mass_random: Rate
    relevance_mass_centre: Rate
    relevance_rank: Rate
    relevance_rank_random: Rate
    relevance_rank_centre: Rate
    mask_auc: Rate
    mask_auc_random: Rate
    mask_auc_centre: Rate
    peak_offset_x: Rate
    peak_offset_y: Rate
    deletion_auc: Rate
    deletion_auc_random: Rate
    insertion_auc: Rate
    insertion_auc_random: Rate
    disappearance_rate: Rate
    disappearance_rate_random: Rate
    entropy: Rate
    object_mass: Rate
    consecutive_similarity: Rate
    pointing_game_small: Rate
    pointing_game_large: Rate
    pointing_game_after_shift: Rate
    probability_object_mass_spearman: float | None
    sanity: SanityResult | None = None
    by_class: Mapping[str, MethodMeasures] | None = None   # None below the whole (a class's own measures)
    by_type: Mapping[str, MethodMeasures] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        rates = _rates(self)
        data: dict[str, Any] = {name: rate.value for name, rate in rates.items()}
        data["probability_object_mass_spearman"] = self.probability_object_mass_spearman
        data["intervals"] = {name: [rate.low, rate.high] for name, rate in rates.items()}
        data["words"] = {name: rate.n for name, rate in rates.items()}
        if self.sanity is not None:
            data["sanity"] = self.sanity.to_json()
        if self.by_class is not None:
            data["by_class"] = {name: m.to_json() for name, m in self.by_class.items()}
        if self.by_type:
            data["by_type"] = {name: m.to_json() for name, m in self.by_type.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MethodMeasures:
        rates = {}
        for f in dataclasses.fields(cls):
            if f.type in ("Rate", Rate):
                low, high = data["intervals"].get(f.name, (None, None))
                rates[f.name] = Rate(data.get(f.name), low, high, data["words"].get(f.name, 0))
        return cls(**rates, probability_object_mass_spearman=data.get("probability_object_mass_spearman"),
                   sanity=SanityResult.from_json(data["sanity"]) if data.get("sanity") else None,
                   by_class=({k: cls.from_json(v) for k, v in data["by_class"].items()}
                             if "by_class" in data else None),
                   by_type={k: cls.from_json(v) for k, v in data.get("by_type", {}).items()})


def _rates(measures: MethodMeasures) -> dict[str, Rate]:
    return {f.name: getattr(measures, f.name) for f in dataclasses.fields(measures)
            if isinstance(getattr(measures, f.name), Rate)}


@dataclass(frozen=True)
class Curves:
    """Mean deletion and insertion curves of the word's log-prob, per method and for a random order."""

    fraction: tuple[float, ...]
    deletion: Mapping[str, tuple[float | None, ...]]
    insertion: Mapping[str, tuple[float | None, ...]]

    def to_json(self) -> dict[str, Any]:
        return {"fraction": list(self.fraction), "deletion": {k: list(v) for k, v in self.deletion.items()},
                "insertion": {k: list(v) for k, v in self.insertion.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Curves:
        return cls(tuple(data["fraction"]), {k: tuple(v) for k, v in data["deletion"].items()},
                   {k: tuple(v) for k, v in data["insertion"].items()})


@dataclass(frozen=True)
class WordCounts:
    words: int
    unsupported: int


@dataclass(frozen=True)
class ChosenRule:
    """The suspect-word rule the evaluation chose, how, and how well it separated the words it was chosen on."""

    rule: SuspectRule
    chosen_on: str
    selection_auc: float

    def to_json(self) -> dict[str, Any]:
        return {**self.rule.to_json(), "describe": self.rule.describe(), "chosen_on": self.chosen_on,
                "selection_auc": self.selection_auc}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChosenRule:
        return cls(SuspectRule.from_json(data), data["chosen_on"], float(data["selection_auc"]))


@dataclass(frozen=True)
class HeldOut:
    """The chosen rule on the images it was not chosen on."""

    words: int
    auc: float | None
    true_positive_rate: float | None
    false_positive_rate: float | None
    precision: float | None


@dataclass(frozen=True, kw_only=True)
class HallucinationMeasures:
    """Which generated content words no object supports, and how well each statistic separates them."""

    words: int
    unsupported: int
    by_class: Mapping[str, WordCounts]
    log_prob_auc: float | None
    log_prob_auc_interval: tuple[float | None, float | None]
    auc: Mapping[str, Mapping[str, float | None]]   # method -> statistic -> ROC AUC
    rule: ChosenRule | None
    rule_reason: str | None = None                  # why no rule was chosen
    held_out: HeldOut | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "words": self.words, "unsupported": self.unsupported,
            "by_class": {k: dataclasses.asdict(v) for k, v in self.by_class.items()},
            "log_prob_auc": self.log_prob_auc, "log_prob_auc_interval": list(self.log_prob_auc_interval),
            "auc": {m: dict(table) for m, table in self.auc.items()}}
        if self.rule is None:
            return {**data, "rule": None, "rule_reason": self.rule_reason}
        return {**data, "rule": self.rule.to_json(),
                "held_out": None if self.held_out is None else dataclasses.asdict(self.held_out)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HallucinationMeasures:
        return cls(words=data["words"], unsupported=data["unsupported"],
                   by_class={k: WordCounts(**v) for k, v in data["by_class"].items()},
                   log_prob_auc=data["log_prob_auc"], log_prob_auc_interval=tuple(data["log_prob_auc_interval"]),
                   auc=data["auc"], rule=ChosenRule.from_json(data["rule"]) if data.get("rule") else None,
                   rule_reason=data.get("rule_reason"),
                   held_out=HeldOut(**data["held_out"]) if data.get("held_out") else None)


@dataclass(frozen=True)
class Insight:
    """One of the seed notebook's claims and what the numbers say of it."""

    claim: str
    finding: str


@dataclass(frozen=True, kw_only=True)
class ExplanationEvaluation:
    """Everything `evaluate_explanations` measured (keys of `to_json` in the README), and the explained
    captions (`explanations`: not part of the JSON; `viz.evaluation.save_evaluation` writes their report)."""

    dataset: EvaluatedData
    config: EvaluationConfig
    methods: Mapping[str, MethodMeasures]
    curves: Curves
    hallucination: HallucinationMeasures | None = None
    insights: tuple[Insight, ...] = ()
    seconds: float = 0.0
    explanations: tuple[CaptionExplanation, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dataset": self.dataset.to_json(), "settings": self.config.to_json(),
                                "methods": {name: m.to_json() for name, m in self.methods.items()},
                                "curves": self.curves.to_json()}
        if self.hallucination is not None:
            data["hallucination"] = self.hallucination.to_json()
        data["insights"] = [dataclasses.asdict(i) for i in self.insights]
        data["seconds"] = self.seconds
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExplanationEvaluation:
        return cls(dataset=EvaluatedData.from_json(data["dataset"]),
                   config=EvaluationConfig.from_json(data["settings"]),
                   methods={name: MethodMeasures.from_json(m) for name, m in data["methods"].items()},
                   curves=Curves.from_json(data["curves"]),
                   hallucination=(HallucinationMeasures.from_json(data["hallucination"])
                                  if data.get("hallucination") else None),
                   insights=tuple(Insight(**i) for i in data.get("insights", [])), seconds=data.get("seconds", 0.0))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """evaluation.json, strict JSON, written atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExplanationEvaluation:
        """An evaluation.json; one ValueError naming the file when it is not one."""
        data = read_json(Path(path))
        if not isinstance(data, dict) or "methods" not in data:
            raise ValueError(f"{path}: not an explanation evaluation (no 'methods')")
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a readable explanation evaluation ({type(exc).__name__}: {exc})") from None


def load_suspect_rule(path: str | os.PathLike[str]) -> SuspectRule:
    """The suspect-word rule an evaluation.json chose (its hallucination section's), or the rule a JSON
    file holds on its own."""
    data = read_json(Path(path))
    try:
        if isinstance(data, dict) and "hallucination" in data:
            section = data["hallucination"] or {}
            if not section.get("rule"):
                raise ValueError(f"{path}: the evaluation chose no suspect rule (too few unsupported words)")
            return ChosenRule.from_json(section["rule"]).rule
        return SuspectRule.from_json(data)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a suspect rule ({type(exc).__name__}: {exc})") from None
