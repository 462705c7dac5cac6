"""Tests a map that ignores the word cannot pass, and the verdict that reads them.

- Word randomisation: for each scored word, the method's map for another target at the same place (the
  same image and caption prefix; `explain_batch(..., targets=...)`): a content word of the caption that
  names a different object where there is one, else a random vocabulary word. A map that explains the
  word must change with it; a word-independent map keeps a rank correlation of 1.
- Word-blind baselines for localisation: the caption-mean map (the mean of the method's own maps over
  the caption's words: everything a map shares across words) and the trunk's activation energy at the
  target layer (ReLU, summed over channels, drawn like the CAMs). A method's localisation margin is its
  pointing-game hit rate minus the better of the two, per word, with an interval.
- The verdict: a method is trusted when it passes the sanity check (`evaluate.sanity`, step by step),
  word randomisation (`RANDOMISATION_BELOW`), beats the word-blind baselines (the margin's interval
  above 0) and is word-selective under deletion (its selectivity interval above the random region's).
  The recommended method passes every test with the best margin (deletion selectivity breaks ties).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from captionlens.evaluate.result import MethodMeasures, Verdict
from captionlens.evaluate.words import FUNCTION_WORDS, WordTruth
from captionlens.explain.registry import method_label
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.target import TargetLayer
from captionlens.models.protocol import Captioner, eval_mode, model_device

RANDOMISATION_BELOW = 0.5
RANDOMISATION_RULE = (f"passes when its maps for the generated word and for another word at the same place "
                      f"have a mean Spearman rank correlation below {RANDOMISATION_BELOW}")
VERDICT_RULE = ("trusted when it passes the sanity check (every required step), word randomisation, beats the "
                "better word-blind map (caption-mean or activation energy) at the pointing game (interval above "
                "0) and its deletions hurt the word more than the caption's other words beyond what a random "
                "region does (interval above the random region's selectivity)")


def alternative_targets(tokens: Sequence[str], truths: Sequence[WordTruth], vocabulary: Sequence[str],
                        rng: np.random.Generator) -> list[str]:
    """For each word of a caption, another word to explain at its place: a content word of the same
    caption that names a different object (another referent) when there is one, else a random word of
    `vocabulary` (never the word itself)."""
    out = []
    for token, truth in zip(tokens, truths):
        others = sorted({t for t, other in zip(tokens, truths) if t != token and t not in FUNCTION_WORDS
                         and other.box is not None and other.box != truth.box})
        pool = others or [w for w in vocabulary if w != token]
        out.append(pool[int(rng.integers(len(pool)))])
    return out


def activation_maps(model: Captioner, explanations: Sequence[CaptionExplanation],
                    target_layer: str | int | None = None) -> list[np.ndarray]:
    """Per explanation, (H, W): the trunk's activation energy at the target layer (ReLU, summed over
    channels), drawn on the image as the gradient methods' maps are: a map that no word can change."""
    out = []
    device = model_device(model)
    with eval_mode(model):
        target = TargetLayer(model, target_layer)
        for expl in explanations:
            image = model.preprocessing.transform(Image.fromarray(expl.image))[None].to(device)
            with torch.no_grad():
                energy = target.lower(image).clamp(min=0).sum(1).float().cpu().numpy()     # (1, h, w)
            out.append(target.drawing(energy.shape[1:], expl.image.shape[:2]).render(energy)[0])
    return out


def verdict(measures: MethodMeasures) -> Verdict:
    """Whether a method's maps can be trusted, with a reason for every test it fails (see the module doc)."""
    reasons = []
    sanity = measures.sanity
    if sanity is None or all(step.spearman is None for step in sanity.layers):
        reasons.append("sanity: not measured")
    elif sanity.verdict != "pass":
        step = next((s for s in sanity.layers if s.randomised == sanity.failed_at), None)
        value = f" (rank correlation {step.spearman:.2f})" if step is not None and step.spearman is not None else ""
        reasons.append(f"sanity: its maps survive randomising the {sanity.failed_at}{value}")
    randomisation = measures.word_randomisation
    if randomisation is None or randomisation.spearman.value is None:
        reasons.append("word randomisation: not measured")
    elif randomisation.verdict != "pass":
        reasons.append(f"word randomisation: its map for another word at the same place has rank correlation "
                       f"{randomisation.spearman.value:.2f} with the word's own (>= {RANDOMISATION_BELOW})")
    margin = measures.localisation_margin
    if margin is None or margin.pointing_game.low is None:
        reasons.append("localisation: no grounded words to measure")
    elif margin.pointing_game.low <= 0:
        reasons.append(f"localisation: no better than the {margin.baseline.replace('_', '-')} map (pointing-game "
                       f"margin {margin.pointing_game.value:.2f} [{margin.pointing_game.low:.2f}, "
                       f"{margin.pointing_game.high:.2f}])")
    selectivity = measures.selectivity
    if selectivity is None or selectivity.deletion.low is None:
        reasons.append("selectivity: not measured")
    else:
        random = selectivity.deletion_random.value if selectivity.deletion_random.value is not None else 0.0
        if selectivity.deletion.low <= max(random, 0.0):
            reasons.append(f"selectivity: deleting its region hurts the word no more than the caption's other words "
                           f"beyond a random region ({selectivity.deletion.value:.2f} "
                           f"[{selectivity.deletion.low:.2f}, {selectivity.deletion.high:.2f}] vs {random:.2f})")
    return Verdict(not reasons, tuple(reasons))


def recommend(methods: Mapping[str, MethodMeasures]) -> tuple[str | None, str]:
    """(the method to trust, why): among the trusted, the best localisation margin, then the best deletion
    selectivity; None when no method passes every test."""
    trusted = [name for name, m in methods.items() if m.verdict is not None and m.verdict.trusted]
    if not trusted:
        return None, "no method passes every test (see each method's reasons)"

    def key(name: str) -> tuple[float, float]:
        m = methods[name]
        margin = m.localisation_margin.pointing_game.value if m.localisation_margin else None
        selectivity = m.selectivity.deletion.value if m.selectivity else None
        return (margin if margin is not None else -np.inf, selectivity if selectivity is not None else -np.inf)

    best = max(trusted, key=key)
    m = methods[best]
    assert m.localisation_margin is not None and m.selectivity is not None
    margin, selectivity = m.localisation_margin.pointing_game, m.selectivity.deletion
    others = [method_label(n) for n in trusted if n != best]
    return best, (f"{method_label(best)} passes every test with the best localisation margin, "
                  f"{margin.value:.2f} [{margin.low:.2f}, {margin.high:.2f}] over the "
                  f"{m.localisation_margin.baseline.replace('_', '-')} map, deletion selectivity "
                  f"{selectivity.value:.2f}" + (f"; also trusted: {', '.join(others)}" if others else ""))
