"""`evaluate_explanations`: can each method's maps be trusted? Measured on a dataset whose referents are
known (the synthetic shapes; Flickr30k Entities), for the model's own captions.

Per method, each with baselines, every rate with a bootstrap interval over words:
  localisation (words that name an annotated object): pointing game, relevance mass, relevance rank,
      ROC AUC of map against mask; baselines: a map of i.i.d. random values (exact expectations), a
      centre-bias map, and two word-blind maps, the caption-mean map and the trunk's activation energy,
      with the method's margin over the better of those (`evaluate.trust`); the mean offset of the map's
      peak from the referent's centre, in box sizes;
  faithfulness (every word): deletion / insertion AUC of the word's log-prob, most salient first
      against a random order, the word-disappearance rate against hiding random cells, and how much
      more each deletion or hiding hurts the word than the caption's other words (selectivity), against
      a random region (`evaluate.faithfulness`);
  word randomisation: the map for another word at the same place must differ (`evaluate.trust`);
  sanity: cascading model-parameter randomisation, step by step, with a verdict (`evaluate.sanity`);
  verdict: trusted or not, with the reasons, and the recommended method (`evaluate.trust`);
  per word class: shape nouns, colour and size adjectives, function words, other (shapes), or
      annotated nouns, function words, other (Flickr30k Entities, also per phrase type);
  hallucination (shapes): which generated words no object supports, and how well explanation
      statistics separate them (`evaluate.hallucination`);
  insights: the seed notebook's claims as sentences made from these numbers (`evaluate.insights`).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from captionlens.data.coco import CocoDataset
from captionlens.data.datasets import detect_format, load_dataset
from captionlens.data.flickr30k_entities import entity_counts, load_entities, word_grounding
from captionlens.data.records import CaptionDataset, CaptionRecord
from captionlens.data.shapes import load_grounding, load_mask
from captionlens.data.vocabulary import END, PAD, START, UNK
from captionlens.evaluate.chair import coco_ground_truth, coco_synonyms
from captionlens.evaluate.faithfulness import (
    cell_ranks,
    deletion_selectivity,
    maps_at_input,
    perturbation_curves,
    random_ranks,
    salience_ranks,
    word_disappearance,
)
from captionlens.evaluate.hallucination import measure_hallucination
from captionlens.evaluate.insights import insights
from captionlens.evaluate.localisation import centre_map, localisation_scores, peak_position, random_map_expectation
from captionlens.evaluate.result import (
    Curves,
    EvaluatedData,
    EvaluationConfig,
    ExplanationEvaluation,
    LocalisationMargin,
    MethodMeasures,
    SanityResult,
    Selectivity,
    WordRandomisation,
    number,
)
from captionlens.evaluate.sanity import map_similarity, sanity_check
from captionlens.evaluate.stats import rate_with_interval
from captionlens.evaluate.trust import (
    RANDOMISATION_BELOW,
    RANDOMISATION_RULE,
    activation_maps,
    alternative_targets,
    recommend,
    verdict,
)
from captionlens.evaluate.words import FUNCTION_WORDS, WordTruth, function_or_other, shapes_truths
from captionlens.explain.api import explain_batch
from captionlens.explain.image_share import image_shares
from captionlens.explain.registry import quick_settings, runnable_methods
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.scoring import padded_captions
from captionlens.explain.statistics import word_statistics
from captionlens.models.protocol import Captioner, eval_mode, model_device, require_vocab

EVALUATION_FORMATS = ("shapes", "flickr30k-entities", "coco")
HALLUCINATION_FORMATS = ("shapes", "coco")   # the formats that say which generated words no object supports
LOCALISATION = ("pointing_game", "relevance_mass", "relevance_rank", "mask_auc")
_LOCALISATION_KEYS = {"pointing": "pointing_game", "mass": "relevance_mass", "rank": "relevance_rank",
                      "auc": "mask_auc"}   # `localisation_scores`' names -> the result's


@dataclass
class _Word:
    image: int
    position: int
    token: str
    truth: WordTruth


# record, tokens, (height, width) of the explained image -> (each token's truth, the pixels of every object)
Truths = Callable[[CaptionRecord, list[str], tuple[int, int]], tuple[list[WordTruth], np.ndarray]]
Item = TypeVar("Item")


def evaluate_explanations(model: Captioner, data: str | os.PathLike, format: str | None = None,
                          config: EvaluationConfig | None = None,
                          progress: Callable[[str], None] | None = None) -> ExplanationEvaluation:
    """Every measurement of the module doc on `config.split` of the dataset at `data`."""
    config = config or EvaluationConfig()
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such file or folder")
    format = format or detect_format(data)
    if format not in EVALUATION_FORMATS:
        raise ValueError(f"explanations are evaluated on data with known referents "
                         f"({', '.join(EVALUATION_FORMATS)}); {data} is {format!r}")
    methods = runnable_methods(model) if config.methods is None else list(dict.fromkeys(config.methods))
    say = progress or (lambda message: None)
    start = time.perf_counter()
    dataset = load_dataset(data, format)
    records = dataset.split(config.split).records[:config.limit]
    if not records:
        raise ValueError(f"{data}: the {config.split!r} split has no images")
    truth_of = _truth_source(data, format, dataset)
    # the methods' cheaper settings for many images (LIME's samples, occlusion's patches), under the given ones
    settings = quick_settings(methods, model.preprocessing.image_size, config.settings)
    kept: list[CaptionExplanation] = []    # the first `keep` images' explanations, for sanity and the report
    keep = len(records) if config.report_images is None else max(config.report_images, config.sanity_images)
    words: list[_Word] = []
    parts: list[dict[str, Any]] = []
    done = 0
    for batch in _chunks(records, config.batch_size):
        say(f"explaining images {done + 1}-{done + len(batch)} of {len(records)}")
        explained = explain_batch(model, [r.image_path for r in batch], methods, beam_size=config.beam_size,
                                  max_length=config.max_length, settings=settings, target_layer=config.target_layer)
        for expl, share in zip(explained, _image_shares(model, explained)):
            expl.image_share = share
        batch_words: list[_Word] = []
        objects = []                        # per image: the pixels of every annotated object
        for j, (record, expl) in enumerate(zip(batch, explained)):
            truths, on_objects = truth_of(record, expl.tokens, expl.image.shape[:2])
            batch_words += [_Word(j, t, token, truth) for t, (token, truth) in enumerate(zip(expl.tokens, truths))]
            objects.append(on_objects)
        # every per-word measure of this batch, then its masks and drawn maps go: memory stays flat
        part = _localisation(explained, batch_words, methods, activation_maps(model, explained, config.target_layer))
        part.update(_faithfulness(model, explained, methods, config, done))
        part.update(_word_randomisation(model, explained, batch_words, methods, settings, config, done))
        part.update(_statistics(explained, objects, batch_words, methods))
        parts.append(part)
        words += [_Word(done + w.image, w.position, w.token, w.truth.without_mask()) for w in batch_words]
        for expl in explained:
            expl.release_maps()
        kept += explained[:max(0, keep - done)]
        done += len(batch)
    say(f"scored {len(words)} words")
    measures = _merge(parts)
    measures.update(_word_groups(words))
    explanations = kept
    shown = [(r, e) for r, e in zip(records, explanations[:config.sanity_images]) if e.tokens]
    say(f"sanity check on {len(shown)} images")
    sanity = sanity_check(model, [r.image_path for r, _ in shown], [e.caption for _, e in shown], methods,
                          settings, config.seed, trained=[e for _, e in shown], target_layer=config.target_layer)
    scored = {m: _method_measures(m, words, measures, sanity[m], config.seed) for m in methods}
    scored = {m: replace(v, verdict=verdict(v)) for m, v in scored.items()}
    recommended, because = recommend(scored)
    layer = explanations[0].decoding.target_layer if explanations else config.target_layer
    evaluation = ExplanationEvaluation(
        dataset=_evaluated_data(data, format, config.split, records, words),
        config=replace(config, methods=methods, settings=settings, target_layer=layer),
        methods=scored, curves=_mean_curves(measures, config.steps),
        hallucination=measure_hallucination(
            [w.truth.supported for w in words], [w.truth.word_class for w in words], [w.image for w in words],
            measures["stats"], measures["log_prob"], measures["image_share"], config.seed)
        if format in HALLUCINATION_FORMATS else None,
        recommended=recommended, recommended_because=because, explanations=tuple(explanations))
    return replace(evaluation, insights=tuple(insights(evaluation.methods)),
                   seconds=round(time.perf_counter() - start, 1))


def _merge(parts: Sequence[Any]) -> Any:
    """The batches' per-word measures as one: arrays concatenated along words, dicts merged key by key."""
    first = parts[0]
    if isinstance(first, dict):
        return {key: _merge([part[key] for part in parts]) for key in first}
    return np.concatenate(parts)


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _truth_source(data: Path, format: str, dataset: CaptionDataset) -> Truths:
    """record, tokens -> (what is known of each token (see `evaluate.words`), the pixels of all objects);
    `dataset` is `data` as loaded (COCO's ground truth comes with it)."""
    if format == "shapes":
        grounding = load_grounding(data)

        def shapes(record: CaptionRecord, tokens: list[str], hw: tuple[int, int]
                   ) -> tuple[list[WordTruth], np.ndarray]:
            labels = load_mask(data, record.image_path.name)
            return shapes_truths(grounding, labels, record.image_path.name, tokens), labels > 0
        return shapes

    if isinstance(dataset, CocoDataset):
        return _coco_truths(dataset)

    def entities(record: CaptionRecord, tokens: list[str], hw: tuple[int, int]) -> tuple[list[WordTruth], np.ndarray]:
        image_entities = load_entities(data, record.image_id)
        out = []
        for token, grounded in zip(tokens, word_grounding(image_entities, tokens)):
            if grounded is None:
                out.append(WordTruth(function_or_other(token)))
            else:
                box = tuple(float(v) for v in grounded.bbox)
                out.append(WordTruth("annotated noun", image_entities.mask(grounded.chains), box,  # type: ignore[arg-type]
                                     None, tuple(grounded.types)))
        return out, image_entities.mask(list(image_entities.boxes))
    return entities


def _coco_truths(dataset: CocoDataset) -> Truths:
    """COCO: every generated word that names a category (`evaluate.chair`'s synonym table; the last word of a
    multi-word name) is scored against the union of that category's instance masks, at the image's size (masks
    drawn at the explained image's size); a category the image's ground truth lacks (its instances and what
    its references mention, as CHAIR counts) makes the word unsupported, with no mask."""
    table = coco_synonyms()

    def truths(record: CaptionRecord, tokens: list[str], hw: tuple[int, int]) -> tuple[list[WordTruth], np.ndarray]:
        image = dataset.image(record.image_id)
        present = coco_ground_truth([image], table)[image.file_name]
        out = [WordTruth(function_or_other(token)) for token in tokens]
        for mention in table.find(tokens):
            instances = image.instances_of(mention.category)
            if not instances:
                out[mention.stop - 1] = WordTruth("object word", supported=mention.category in present,
                                                  category=mention.category)
                continue
            mask = image.category_mask(mention.category, size=hw)
            rows, cols = np.nonzero(mask)
            box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)) \
                if len(rows) else None
            largest = max(instances, key=lambda i: i.area)
            out[mention.stop - 1] = WordTruth("object word", mask if box else None, box, True,
                                              category=mention.category,
                                              supercategory=instances[0].category.supercategory,
                                              size=largest.size_class)
        everything = np.zeros(hw, bool)
        for category in image.categories:
            everything |= image.category_mask(category, size=hw)
        return out, everything
    return truths


def _localisation(explanations: Sequence[CaptionExplanation], words: Sequence[_Word], methods: Sequence[str],
                  energy: Sequence[np.ndarray]) -> dict[str, Any]:
    """Per method and localisation metric, a value per word (nan where the word has no referent) and the
    method's own caption-mean baseline; the random, centre and activation-energy baselines; peak offsets
    from the referent's centre in box widths / heights."""
    n = len(words)
    values = {m: {k: np.full(n, np.nan) for k in (*LOCALISATION, *(f"{key}_caption_mean" for key in LOCALISATION),
                                                  "offset_x", "offset_y")} for m in methods}
    baselines = {f"{k}_{b}": np.full(n, np.nan) for k in LOCALISATION for b in ("random", "centre", "activation")}
    by_image: dict[int, list[int]] = {}
    for i, word in enumerate(words):
        if word.truth.mask is not None:
            by_image.setdefault(word.image, []).append(i)
    for image, rows in by_image.items():
        expl = explanations[image]
        masks = np.stack([words[i].truth.mask for i in rows])  # type: ignore[misc]
        positions = [words[i].position for i in rows]
        centre = np.repeat(centre_map(*masks.shape[1:])[None], len(rows), 0)
        for key, scores in localisation_scores(centre, masks).items():
            baselines[f"{_LOCALISATION_KEYS[key]}_centre"][rows] = scores
        for row, mask in zip(rows, masks):
            for key, value in random_map_expectation(mask).items():
                baselines[f"{_LOCALISATION_KEYS[key]}_random"][row] = value
        blind = np.repeat(energy[image][None], len(rows), 0)
        for key, scores in localisation_scores(blind, masks).items():
            baselines[f"{_LOCALISATION_KEYS[key]}_activation"][rows] = scores
        for m in methods:
            maps = expl[m].maps[positions]
            for key, scores in localisation_scores(maps, masks).items():
                values[m][_LOCALISATION_KEYS[key]][rows] = scores
            mean = np.repeat(expl[m].maps.mean(0)[None], len(rows), 0)     # what the map shares across words
            for key, scores in localisation_scores(mean, masks).items():
                values[m][f"{_LOCALISATION_KEYS[key]}_caption_mean"][rows] = scores
            for row, heat in zip(rows, maps):
                box = words[row].truth.box
                assert box is not None
                r, c = peak_position(heat)
                values[m]["offset_x"][row] = (c - (box[0] + box[2]) / 2) / (box[2] - box[0])
                values[m]["offset_y"][row] = (r - (box[1] + box[3]) / 2) / (box[3] - box[1])
    return {"localisation": values, "baselines": baselines}


def _faithfulness(model: Captioner, explanations: Sequence[CaptionExplanation], methods: Sequence[str],
                  config: EvaluationConfig, offset: int = 0) -> dict[str, Any]:
    """Per word (nan for the images past `config.faithfulness_images`; `explanations` start at image
    `offset`, whose random orders are seeded by it), for each method and for the random
    baselines: deletion / insertion areas and curves, and whether the word disappeared."""
    generator = torch.Generator().manual_seed(config.seed + offset)
    device = model_device(model)
    keys = (*methods, "random")
    n, points = sum(len(e.tokens) for e in explanations), config.steps + 1
    out: dict[str, Any] = {name: {k: np.full(n, np.nan) for k in keys}
                           for name in ("deletion_auc", "insertion_auc", "disappeared", "deletion_selectivity",
                                        "disappearance_selectivity")}
    out["curves"] = {kind: {k: np.full((n, points), np.nan) for k in keys} for kind in ("deletion", "insertion")}
    start = 0
    for index, expl in enumerate(explanations):
        rows = slice(start, start + len(expl.tokens))
        start += len(expl.tokens)
        if not expl.tokens or (config.faithfulness_images is not None
                               and offset + index >= config.faithfulness_images):
            continue
        image = model.preprocessing.transform(Image.fromarray(expl.image))[None].to(device)
        size = image.shape[-1]
        maps = maps_at_input(np.stack([expl[m].maps for m in methods]), size)
        curves = perturbation_curves(model, image, expl.token_ids, salience_ranks(maps),
                                     random_ranks(1, size * size, generator), config.steps)
        gone = word_disappearance(model, image, expl.token_ids, cell_ranks(maps, config.grid),
                                  random_ranks(1, config.grid * config.grid, generator), config.grid, config.cells,
                                  config.max_length)
        selectivity = deletion_selectivity(curves.deletion_all)
        vanish = _disappearance_selectivity(gone, expl.tokens)
        for k, key in enumerate(keys):
            out["deletion_auc"][key][rows] = curves.deletion_auc[k]
            out["insertion_auc"][key][rows] = curves.insertion_auc[k]
            out["curves"]["deletion"][key][rows] = curves.deletion[k]
            out["curves"]["insertion"][key][rows] = curves.insertion[k]
            out["disappeared"][key][rows] = gone[k].diagonal()
            out["deletion_selectivity"][key][rows] = selectivity[k]
            out["disappearance_selectivity"][key][rows] = vanish[k]
    return out


def _disappearance_selectivity(gone: np.ndarray, tokens: Sequence[str]) -> np.ndarray:
    """(K, T, T) disappearances (`word_disappearance`) -> (K, T): whether word t vanished when its region
    was hidden, minus the share of the caption's other content words that vanished with it (nan when
    the caption has no other content word)."""
    content = np.asarray([token not in FUNCTION_WORDS for token in tokens])
    t = len(tokens)
    out = np.full(gone.shape[:2], np.nan)
    for i in range(t):
        others = content & (np.arange(t) != i)
        if others.any():
            out[:, i] = gone[:, i, i].astype(float) - gone[:, i, others].mean(1)
    return out


def _word_randomisation(model: Captioner, explanations: Sequence[CaptionExplanation], words: Sequence[_Word],
                        methods: Sequence[str], settings: dict[str, dict[str, Any]],
                        config: EvaluationConfig, offset: int = 0) -> dict[str, Any]:
    """Per method and word of the first `config.faithfulness_images` images (`explanations` start at image
    `offset`), the rank correlation of the word's map with the map for another word at the same place
    (`trust.alternative_targets`)."""
    rng = np.random.default_rng([config.seed, offset])
    vocabulary = [w for w in require_vocab(model).idx2word.values() if w not in (PAD, START, END, UNK)]
    out = {m: np.full(len(words), np.nan) for m in methods}
    by_image: dict[int, list[int]] = {}
    for i, word in enumerate(words):
        by_image.setdefault(word.image, []).append(i)
    limit = len(explanations) if config.faithfulness_images is None else config.faithfulness_images - offset
    chosen = [i for i, e in enumerate(explanations[:max(0, limit)]) if e.tokens]
    for batch in _chunks(chosen, config.batch_size):
        images = [explanations[i] for i in batch]
        targets = [alternative_targets(e.tokens, [words[r].truth for r in by_image[i]], vocabulary, rng)
                   for i, e in zip(batch, images)]
        others = explain_batch(model, [e.image for e in images], methods, captions=[e.caption for e in images],
                               settings=settings, target_layer=config.target_layer, targets=targets)
        for i, own, other in zip(batch, images, others):
            for m in methods:
                out[m][by_image[i]] = map_similarity(own[m].maps, other[m].maps)[0]
    return {"word_randomisation": out}


def _statistics(explanations: Sequence[CaptionExplanation], objects: Sequence[np.ndarray], words: Sequence[_Word],
                methods: Sequence[str]) -> dict[str, Any]:
    """Per method and word: the ground-truth-free statistics (`explain.statistics`), the share of positive
    mass on any object, and the rank correlation with the previous word's map; each word's log-prob."""
    stats: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    on_objects: dict[str, list[float]] = {m: [] for m in methods}
    previous: dict[str, list[float]] = {m: [] for m in methods}
    for expl, mask in zip(explanations, objects):
        if not expl.tokens:
            continue
        for m in methods:
            for key, value in word_statistics(expl, m).items():
                if key != "log_prob":
                    stats[m].setdefault(key, []).extend(value.tolist())
            maps = expl[m].maps
            positive = np.clip(maps, 0, None).reshape(len(maps), -1)
            total = positive.sum(1)
            inside = positive[:, mask.ravel()].sum(1)
            on_objects[m].extend(np.divide(inside, total, out=np.zeros_like(total), where=total > 0).tolist())
            previous[m].extend([np.nan] + [_rank_correlation(a, b) for a, b in zip(maps[:-1], maps[1:])])
    log_prob = np.asarray([float(explanations[w.image].log_probs[w.position]) for w in words])
    shares = [explanations[w.image].image_share for w in words]
    share = np.asarray([np.nan if s is None else float(s[w.position]) for s, w in zip(shares, words)])
    return {"stats": {m: {k: np.asarray(v) for k, v in table.items()} for m, table in stats.items()},
            "log_prob": log_prob, "image_share": share,
            "entropy": {m: np.asarray(stats[m].get("entropy", [])) for m in methods},
            "object_mass": {m: np.asarray(v) for m, v in on_objects.items()},
            "previous_similarity": {m: np.asarray(v) for m, v in previous.items()}}


def _image_shares(model: Captioner, explained: Sequence[CaptionExplanation]) -> list[np.ndarray | None]:
    """Each explanation's per-word image share (`explain.image_share`); None for a model whose decoder has
    no token embedding to attribute to."""
    worded = [e for e in explained if e.tokens]
    if not worded or not isinstance(getattr(getattr(model, "decoder", None), "embed", None), torch.nn.Module):
        return [None] * len(explained)
    device = model_device(model)
    vocab = require_vocab(model)
    images = torch.stack([model.preprocessing.transform(Image.fromarray(e.image)) for e in worded]).to(device)
    with eval_mode(model), torch.no_grad():
        features = model.encode(images)
    with eval_mode(model):
        shares = iter(image_shares(model, features, padded_captions([e.token_ids for e in worded], vocab, device),
                                   [len(e.tokens) for e in worded]))
    return [next(shares) if e.tokens else None for e in explained]


def _word_groups(words: Sequence[_Word]) -> dict[str, np.ndarray]:
    """Per word: 1/0 whether its referent is smaller than the median referent (nan: no referent), and
    whether it names another object than the caption's previous word with a referent."""
    areas = np.asarray([np.nan if w.truth.area is None else w.truth.area for w in words])
    median = np.nanmedian(areas) if np.isfinite(areas).any() else np.nan
    small = np.where(np.isnan(areas), np.nan, (areas < median).astype(float))
    shift = np.zeros(len(words), dtype=bool)
    last: dict[int, tuple[float, ...]] = {}
    for i, word in enumerate(words):
        box = word.truth.box
        if box is None:
            continue
        shift[i] = word.image in last and last[word.image] != box
        last[word.image] = box
    return {"small": small, "shift": shift}


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def _method_measures(method: str, words: Sequence[_Word], measures: dict[str, Any], sanity: SanityResult | None,
                     seed: int, rows: np.ndarray | None = None) -> MethodMeasures:
    """The method's rates over `rows` of the words (default all, then also per word class and phrase
    type), with intervals and word counts."""
    whole = rows is None
    rows = np.arange(len(words)) if rows is None else rows
    series: dict[str, np.ndarray] = {}
    for key in LOCALISATION:
        series[key] = measures["localisation"][method][key][rows]
        for base in ("random", "centre"):
            series[f"{key}_{base}"] = measures["baselines"][f"{key}_{base}"][rows]
    series["peak_offset_x"] = measures["localisation"][method]["offset_x"][rows]
    series["peak_offset_y"] = measures["localisation"][method]["offset_y"][rows]
    for key, table in (("deletion_auc", "deletion_auc"), ("insertion_auc", "insertion_auc"),
                       ("disappearance_rate", "disappeared")):
        series[key] = measures[table][method][rows].astype(float)
        series[f"{key}_random"] = measures[table]["random"][rows].astype(float)
    series["entropy"] = measures["entropy"][method][rows]
    series["object_mass"] = measures["object_mass"][method][rows]
    series["consecutive_similarity"] = measures["previous_similarity"][method][rows]
    pointing, small = series["pointing_game"], measures["small"][rows]
    series["pointing_game_small"] = np.where(small == 1, pointing, np.nan)
    series["pointing_game_large"] = np.where(small == 0, pointing, np.nan)
    series["pointing_game_after_shift"] = np.where(measures["shift"][rows], pointing, np.nan)
    for key in LOCALISATION:
        series[f"{key}_caption_mean"] = measures["localisation"][method][f"{key}_caption_mean"][rows]
        series[f"{key}_activation"] = measures["baselines"][f"{key}_activation"][rows]
    probability = np.exp(measures["log_prob"][rows])
    spearman = _rank_correlation(probability, series["object_mass"]) if len(rows) > 2 else None
    fields: dict[str, Any] = {k: rate_with_interval(v, seed=seed) for k, v in series.items()}
    if whole:
        fields["by_class"] = {cls: _method_measures(method, words, measures, None, seed, np.asarray(r))
                              for cls, r in _group(words, lambda w: [w.truth.word_class]).items()}
        groups: dict[str, Callable[[_Word], list[str]]] = {
            "by_type": lambda w: list(w.truth.types),
            "by_category": lambda w: [w.truth.category] if w.truth.category and w.truth.box else [],
            "by_supercategory": lambda w: [w.truth.supercategory] if w.truth.supercategory else [],
            "by_size": lambda w: [w.truth.size] if w.truth.size else []}
        for group, keys in groups.items():
            fields[group] = {name: _method_measures(method, words, measures, None, seed, np.asarray(r))
                             for name, r in _group(words, keys).items()}
    rate = lambda values: rate_with_interval(values, seed=seed)  # noqa: E731
    blind = max(("caption_mean", "activation"),
                key=lambda b: np.nan_to_num(np.nanmean(series[f"pointing_game_{b}"]) if
                                            np.isfinite(series[f"pointing_game_{b}"]).any() else -1.0, nan=-1.0))
    fields["localisation_margin"] = LocalisationMargin(rate(pointing - series[f"pointing_game_{blind}"]), blind)
    fields["selectivity"] = Selectivity(*(rate(measures[table][key][rows])
                                          for table in ("deletion_selectivity", "disappearance_selectivity")
                                          for key in (method, "random")))
    similarity = rate(measures["word_randomisation"][method][rows])
    fields["word_randomisation"] = WordRandomisation(
        similarity, "pass" if similarity.value is not None and similarity.value < RANDOMISATION_BELOW else "fail",
        RANDOMISATION_RULE)
    return MethodMeasures(**fields, probability_object_mass_spearman=number(spearman), sanity=sanity)


def _group(words: Sequence[_Word], keys: Callable[[_Word], list[str]]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, word in enumerate(words):
        for key in keys(word):
            groups.setdefault(key, []).append(i)
    return groups


def _mean_curves(measures: dict[str, Any], steps: int) -> Curves:
    curves = measures["curves"]
    means = {kind: {k: tuple(number(round(float(x), 4)) for x in _nanmean_rows(v, steps + 1))
                    for k, v in curves[kind].items()} for kind in ("deletion", "insertion")}
    return Curves(tuple(s / steps for s in range(steps + 1)), means["deletion"], means["insertion"])


def _nanmean_rows(values: np.ndarray, points: int) -> np.ndarray:
    measured = values[~np.isnan(values).any(1)]
    return measured.mean(0) if len(measured) else np.full(points, np.nan)


def _evaluated_data(data: Path, format: str, split: str, records: Sequence[CaptionRecord],
                    words: Sequence[_Word]) -> EvaluatedData:
    counts: dict[str, int] = {}
    if format == "flickr30k-entities":  # the split's own counts, whatever --limit took of it
        split_counts = entity_counts(data, split)
        counts = {"split_images": split_counts.images, "split_captions": split_counts.captions,
                  "phrases": split_counts.phrases, "phrases_with_boxes": split_counts.phrases_with_boxes}
    return EvaluatedData(path=str(data), format=format, split=split, images=len(records),
                         captions=sum(len(r.captions) for r in records), captions_explained=len(records),
                         words_scored=len(words), words_grounded=sum(w.truth.area is not None for w in words),
                         **counts)
