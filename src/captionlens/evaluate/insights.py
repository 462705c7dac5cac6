"""The seed notebook's "key insights", computed: each claim becomes a sentence made from an explanation
evaluation's numbers (`evaluate_explanations`' result), for the user's model and data — never fixed text.

Claims (the seed's wording) and what measures them:
  "nouns focus, function words are diffuse"       normalised entropy of noun maps against function words'
  "attention shifts as the caption progresses"    rank correlation of consecutive words' maps, and the
                                                  pointing rate of a word naming another object than the last
  "can miss small objects"                        pointing rate on referents below / above the median size
  "attends to background when uncertain"          rank correlation of the word's probability with its map's
                                                  mass on objects (positive: less on objects when unsure)
  "strong spatial correspondence"                 pointing rate against the random and centre baselines and,
                                                  what a map that ignores the word also reaches, the word-blind
                                                  maps (caption-mean, activation energy: `evaluate.trust`)
"""
from __future__ import annotations

from collections.abc import Mapping

from captionlens.evaluate.result import Insight, MethodMeasures
from captionlens.explain.registry import method_label

NOUN_CLASSES = ("shape noun", "annotated noun")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _noun_class(method: MethodMeasures) -> str | None:
    return next((c for c in NOUN_CLASSES if c in (method.by_class or {})), None)


def insights(methods: Mapping[str, MethodMeasures]) -> list[Insight]:
    """One `Insight` for each of the seed's claims, from an evaluation's per-method measures."""
    labels = {m: method_label(m) for m in methods}
    out: list[Insight] = []
    if not methods:
        return out

    rows = []
    for m, v in methods.items():
        noun, classes = _noun_class(v), v.by_class or {}
        if noun and "function word" in classes:
            rows.append((m, classes[noun].entropy.value, classes["function word"].entropy.value))
    if rows:
        focused = [m for m, noun, function in rows if noun is not None and function is not None and noun < function]
        detail = "; ".join(f"{labels[m]} {_fmt(n)} vs {_fmt(f)}" for m, n, f in rows)
        out.append(Insight("Nouns: the model focuses on specific objects; function words get diffuse maps",
                           f"Noun maps are more concentrated than function words' for {len(focused)} of "
                           f"{len(rows)} methods (normalised entropy, 0 = one pixel, 1 = uniform: {detail})."))

    detail = "; ".join(f"{labels[m]} {_fmt(v.consecutive_similarity.value)}" for m, v in methods.items())
    follows = "; ".join(f"{labels[m]} {_fmt(v.pointing_game_after_shift.value)} of {v.pointing_game_after_shift.n}"
                        for m, v in methods.items())
    out.append(Insight("Attention shifts as the caption progresses",
                       f"Consecutive words' maps have a mean rank correlation of {detail} (1 = the same "
                       f"map); when a word names another object than the previous one, its map's peak lands "
                       f"on the new object at a rate of {follows} words."))

    sizes = [(m, v.pointing_game_small.value, v.pointing_game_large.value) for m, v in methods.items()]
    missed = [m for m, small, large in sizes if small is not None and large is not None and small < large]
    detail = "; ".join(f"{labels[m]} {_fmt(s)} vs {_fmt(large)}" for m, s, large in sizes)
    out.append(Insight("Can miss small objects",
                       f"Pointing-game hit rate on objects smaller than the median referent vs larger ones: "
                       f"{detail}; lower on small objects for {len(missed)} of {len(sizes)} methods."))

    uncertain = [(m, v.probability_object_mass_spearman) for m, v in methods.items()]
    positive = [m for m, r in uncertain if r is not None and r > 0]
    detail = "; ".join(f"{labels[m]} {_fmt(r)}" for m, r in uncertain)
    out.append(Insight("Attends to background when uncertain",
                       f"Rank correlation of a word's probability with its map's share of mass on objects: "
                       f"{detail}; positive (less mass on objects when less sure) for {len(positive)} of "
                       f"{len(uncertain)} methods."))

    pointing = [(m, v.pointing_game.value, v.pointing_game_random.value, v.pointing_game_centre.value)
                for m, v in methods.items()]
    beats = [m for m, p, r, c in pointing if p is not None and p > max(x for x in (r, c, -1.0) if x is not None)]
    detail = "; ".join(f"{labels[m]} {_fmt(p)}" for m, p, _, _ in pointing)
    _, _, random_rate, centre_rate = pointing[0]
    first = next(iter(methods.values()))
    blind = [m for m, v in methods.items() if v.localisation_margin is not None
             and v.localisation_margin.pointing_game.low is not None and v.localisation_margin.pointing_game.low > 0]
    out.append(Insight("Strong spatial correspondence between words and image regions",
                       f"Pointing-game hit rates {detail}, against {_fmt(random_rate)} for a random map and "
                       f"{_fmt(centre_rate)} for a centre-bias map: {len(beats)} of {len(pointing)} methods beat "
                       f"both. But a map that ignores the word also points at objects: the trunk's activation energy "
                       f"reaches {_fmt(first.pointing_game_activation.value)}, and each method's own caption-mean "
                       f"map is as word-blind; {len(blind)} of {len(pointing)} methods beat the better word-blind "
                       f"map with an interval above 0 ({', '.join(labels[m] for m in blind) or 'none'})."))
    return out
