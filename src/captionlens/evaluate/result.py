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
from captionlens.data.records import check_types, describe, read_json
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
    target_layer: str | None = None         # the gradient methods' layer (None: the last stage; the result names it)
    limit: int | None = 40                  # images explained and localised
    beam_size: int = 3
    max_length: int = 20
    faithfulness_images: int | None = 16    # of those, the first N get deletion / insertion / disappearance
    steps: int = 8                          # deletion / insertion points after the first
    grid: int = 8                           # word disappearance: cells per side ...
    cells: int = 6                          # ... and how many are hidden
    sanity_images: int = 4
    report_images: int | None = 200         # the first N explained images kept for the report (None: all)
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
    """Maps compared after one cumulative randomisation step (`randomised`: what has been randomised so
    far); `required`: the verdict reads this step."""

    randomised: str
    spearman: float | None
    ssim: float | None
    required: bool = False


@dataclass(frozen=True)
class SanityResult:
    """A method's cascading-randomisation curve, its verdict ("pass" / "fail"), the rule that gave it and
    the required step it failed at (None when it passed)."""

    layers: tuple[SanityStep, ...]
    verdict: str
    rule: str
    failed_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"layers": [dataclasses.asdict(step) for step in self.layers], "verdict": self.verdict,
                "rule": self.rule, "failed_at": self.failed_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SanityResult:
        return cls(tuple(SanityStep(**step) for step in data["layers"]), data["verdict"], data["rule"],
                   data.get("failed_at"))


def _rate_json(rate: Rate) -> dict[str, Any]:
    return {"interval": [rate.low, rate.high], "words": rate.n}


def _rate(data: Mapping[str, Any], value_key: str, interval_key: str = "interval", words_key: str = "words") -> Rate:
    low, high = data.get(interval_key) or (None, None)
    return Rate(data.get(value_key), low, high, int(data.get(words_key) or 0))


@dataclass(frozen=True)
class WordRandomisation:
    """Rank correlation of the word's map with the map for another word at the same place, and its verdict."""

    spearman: Rate
    verdict: str
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"spearman": self.spearman.value, **_rate_json(self.spearman), "verdict": self.verdict,
                "rule": self.rule}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WordRandomisation:
        return cls(_rate(data, "spearman"), data["verdict"], data.get("rule", ""))


@dataclass(frozen=True)
class LocalisationMargin:
    """The method's pointing-game hit rate minus the better word-blind baseline's (`baseline`), per word."""

    pointing_game: Rate
    baseline: str                           # "caption_mean" or "activation"

    def to_json(self) -> dict[str, Any]:
        return {"pointing_game": self.pointing_game.value, **_rate_json(self.pointing_game), "baseline": self.baseline}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalisationMargin:
        return cls(_rate(data, "pointing_game"), data["baseline"])


@dataclass(frozen=True)
class Selectivity:
    """How much more deleting (or hiding) the word's own region hurts the word than the caption's other
    words, against a random region of the same size (`evaluate.faithfulness`)."""

    deletion: Rate
    deletion_random: Rate
    disappearance: Rate
    disappearance_random: Rate

    def to_json(self) -> dict[str, Any]:
        """"deletion" with its "interval" and "words" first (the headline), then each other rate with its own."""
        data: dict[str, Any] = {"deletion": self.deletion.value, "deletion_random": self.deletion_random.value,
                                **_rate_json(self.deletion)}
        for name in ("deletion_random", "disappearance", "disappearance_random"):
            rate = getattr(self, name)
            data.update({name: rate.value, f"{name}_interval": [rate.low, rate.high], f"{name}_words": rate.n})
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Selectivity:
        return cls(_rate(data, "deletion"), *(_rate(data, name, f"{name}_interval", f"{name}_words")
                                              for name in ("deletion_random", "disappearance", "disappearance_random")))


@dataclass(frozen=True)
class Verdict:
    """Whether a method's maps can be trusted, and for each test it fails, why (`evaluate.trust`)."""

    trusted: bool
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"trusted": self.trusted, "reasons": list(self.reasons)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(bool(data["trusted"]), tuple(data.get("reasons", ())))


@dataclass(frozen=True, kw_only=True)
class MethodMeasures:
    """A method's rates over a set of words (all of them, or one word class / phrase type), each with its
    interval and word count; the `_random` / `_centre` rates are the baselines over the same words."""

    pointing_game: Rate
    pointing_game_random: Rate
    pointing_game_centre: Rate
    pointing_game_caption_mean: Rate
    pointing_game_activation: Rate
    relevance_mass: Rate
    relevance_mass_random: Rate
    relevance_mass_centre: Rate
    relevance_mass_caption_mean: Rate
    relevance_mass_activation: Rate
    relevance_rank: Rate
    relevance_rank_random: Rate
    relevance_rank_centre: Rate
    relevance_rank_caption_mean: Rate
    relevance_rank_activation: Rate
    mask_auc: Rate
    mask_auc_random: Rate
    mask_auc_centre: Rate
    mask_auc_caption_mean: Rate
    mask_auc_activation: Rate
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
    localisation_margin: LocalisationMargin | None = None
    selectivity: Selectivity | None = None
    word_randomisation: WordRandomisation | None = None
    sanity: SanityResult | None = None
    verdict: Verdict | None = None                         # the whole's only
    by_class: Mapping[str, MethodMeasures] | None = None   # None below the whole (a class's own measures)
    by_type: Mapping[str, MethodMeasures] = field(default_factory=dict)           # Flickr30k Entities
    by_category: Mapping[str, MethodMeasures] = field(default_factory=dict)       # COCO
    by_supercategory: Mapping[str, MethodMeasures] = field(default_factory=dict)  # COCO
    by_size: Mapping[str, MethodMeasures] = field(default_factory=dict)           # COCO: small, medium, large

    def to_json(self) -> dict[str, Any]:
        rates = _rates(self)
        data: dict[str, Any] = {name: rate.value for name, rate in rates.items()}
        data["probability_object_mass_spearman"] = self.probability_object_mass_spearman
        data["intervals"] = {name: [rate.low, rate.high] for name, rate in rates.items()}
        data["words"] = {name: rate.n for name, rate in rates.items()}
        for name in ("localisation_margin", "selectivity", "word_randomisation", "sanity", "verdict"):
            part = getattr(self, name)
            if part is not None:
                data[name] = part.to_json()
        if self.by_class is not None:
            data["by_class"] = {name: m.to_json() for name, m in self.by_class.items()}
        for group in ("by_type", "by_category", "by_supercategory", "by_size"):
            if getattr(self, group):
                data[group] = {name: m.to_json() for name, m in getattr(self, group).items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MethodMeasures:
        rates: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.type in ("Rate", Rate):
                low, high = data["intervals"].get(f.name, (None, None))
                rates[f.name] = Rate(data.get(f.name), low, high, data["words"].get(f.name, 0))
        groups: dict[str, Any] = {group: {k: cls.from_json(v) for k, v in data.get(group, {}).items()}
                                  for group in ("by_type", "by_category", "by_supercategory", "by_size")}
        parts: dict[str, Any] = {name: kind.from_json(data[name]) for name, kind in (
            ("localisation_margin", LocalisationMargin), ("selectivity", Selectivity),
            ("word_randomisation", WordRandomisation), ("verdict", Verdict)) if data.get(name)}
        return cls(**rates, **parts, probability_object_mass_spearman=data.get("probability_object_mass_spearman"),
                   sanity=SanityResult.from_json(data["sanity"]) if data.get("sanity") else None,
                   by_class=({k: cls.from_json(v) for k, v in data["by_class"].items()}
                             if "by_class" in data else None),
                   **groups)


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
    """The chosen rule on the images it was not chosen on, the rates with bootstrap intervals."""

    words: int
    auc: float | None
    true_positive_rate: float | None
    false_positive_rate: float | None
    precision: float | None
    true_positive_rate_interval: tuple[float | None, float | None] = (None, None)
    false_positive_rate_interval: tuple[float | None, float | None] = (None, None)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {**data, "true_positive_rate_interval": list(self.true_positive_rate_interval),
                "false_positive_rate_interval": list(self.false_positive_rate_interval)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeldOut:
        return cls(**{**data, **{k: tuple(data[k]) for k in ("true_positive_rate_interval",
                                                             "false_positive_rate_interval") if k in data}})


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
    auc_intervals: Mapping[str, Mapping[str, tuple[float | None, float | None]]] = field(default_factory=dict)
    image_share_auc: float | None = None
    image_share_auc_interval: tuple[float | None, float | None] = (None, None)
    rule_reason: str | None = None                  # why no rule was chosen
    held_out: HeldOut | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "words": self.words, "unsupported": self.unsupported,
            "by_class": {k: dataclasses.asdict(v) for k, v in self.by_class.items()},
            "log_prob_auc": self.log_prob_auc, "log_prob_auc_interval": list(self.log_prob_auc_interval),
            "image_share_auc": self.image_share_auc, "image_share_auc_interval": list(self.image_share_auc_interval),
            "auc": {m: dict(table) for m, table in self.auc.items()},
            "auc_intervals": {m: {s: list(v) for s, v in table.items()} for m, table in self.auc_intervals.items()}}
        if self.rule is None:
            return {**data, "rule": None, "rule_reason": self.rule_reason}
        return {**data, "rule": self.rule.to_json(),
                "held_out": None if self.held_out is None else self.held_out.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HallucinationMeasures:
        return cls(words=data["words"], unsupported=data["unsupported"],
                   by_class={k: WordCounts(**v) for k, v in data["by_class"].items()},
                   log_prob_auc=data["log_prob_auc"], log_prob_auc_interval=tuple(data["log_prob_auc_interval"]),
                   auc=data["auc"], rule=ChosenRule.from_json(data["rule"]) if data.get("rule") else None,
                   auc_intervals={m: {s: tuple(v) for s, v in table.items()}
                                  for m, table in data.get("auc_intervals", {}).items()},
                   image_share_auc=data.get("image_share_auc"),
                   image_share_auc_interval=tuple(data.get("image_share_auc_interval") or (None, None)),
                   rule_reason=data.get("rule_reason"),
                   held_out=HeldOut.from_json(data["held_out"]) if data.get("held_out") else None)


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
    recommended: str | None = None             # the method that passes every test with the best margin
    recommended_because: str = ""
    seconds: float = 0.0
    explanations: tuple[CaptionExplanation, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dataset": self.dataset.to_json(), "settings": self.config.to_json(),
                                "methods": {name: m.to_json() for name, m in self.methods.items()},
                                "curves": self.curves.to_json()}
        if self.hallucination is not None:
            data["hallucination"] = self.hallucination.to_json()
        data["insights"] = [dataclasses.asdict(i) for i in self.insights]
        data["recommended"] = self.recommended
        data["recommended_because"] = self.recommended_because
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
                   insights=tuple(Insight(**i) for i in data.get("insights", [])),
                   recommended=data.get("recommended"), recommended_because=data.get("recommended_because", ""),
                   seconds=data.get("seconds", 0.0))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """evaluation.json, strict JSON, written atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExplanationEvaluation:
        """An evaluation.json; one ValueError naming the file when it is not one whole (every field of its type)."""
        data = read_json(Path(path))
        if not isinstance(data, dict) or "methods" not in data:
            raise ValueError(f"{path}: not an explanation evaluation (no 'methods')")
        try:
            evaluation = cls.from_json(data)
            check_types(evaluation, "evaluation")
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
            raise ValueError(f"{path}: not a readable explanation evaluation ({describe(exc)})") from None
        return evaluation


def load_suspect_rule(path: str | os.PathLike[str]) -> SuspectRule:
    """The suspect-word rule an evaluation.json chose (its hallucination section's), or the rule a JSON
    file holds on its own."""
    data = read_json(Path(path))
    try:
        if isinstance(data, dict) and "hallucination" in data:
            section = data["hallucination"] or {}
            if not section.get("rule"):
                raise ValueError(f"{path}: the evaluation chose no suspect rule (too few unsupported words)")
            rule = ChosenRule.from_json(section["rule"]).rule
        else:
            rule = SuspectRule.from_json(data)
        check_types(rule, "rule")
        return rule
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a suspect rule ({describe(exc)})") from None
