"""The seed notebook's "key insights", computed: each claim becomes a sentence made from an explanation
evaluation's numbers (`evaluate_explanations`' result), for the user's model and data — never fixed text.

Claims (the seed's wording) and what measures them:
  "nouns focus, function words are diffuse"       normalised entropy of noun maps against function words'
  "attention shifts as the caption progresses"    rank correlation of consecutive words' maps, and the
                                                  pointing rate of a word naming another object than the last
  "can miss small objects"                        pointing rate on referents below / above the median size
  "attends to background when uncertain"          rank correlation of the word's probability with its map's
                                                  mass on objects (positive: less on objects when unsure)
  "strong spatial correspondence"                 pointing rate against the random and centre baselines
"""
from __future__ import annotations

from typing import Any

from captionlens.explain.registry import method_label

NOUN_CLASSES = ("shape noun", "annotated noun")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"


def _noun_class(method: dict[str, Any]) -> str | None:
    return next((c for c in NOUN_CLASSES if c in method.get("by_class", {})), None)


def insights(evaluation: dict[str, Any]) -> list[dict[str, str]]:
    """[{"claim", "finding"}] for each of the seed's claims, from `evaluation["methods"]`."""
    methods: dict[str, dict[str, Any]] = evaluation["methods"]
    labels = {m: method_label(m) for m in methods}
    out = []

    nouns = {m: _noun_class(v) for m, v in methods.items()}
    rows = [(m, v["by_class"][nouns[m]]["entropy"], v["by_class"]["function word"]["entropy"])
            for m, v in methods.items() if nouns[m] and "function word" in v.get("by_class", {})]
    if rows:
        focused = [m for m, noun, function in rows if noun < function]
        detail = "; ".join(f"{labels[m]} {_fmt(n)} vs {_fmt(f)}" for m, n, f in rows)
        out.append({"claim": "Nouns: the model focuses on specific objects; function words get diffuse maps",
                    "finding": f"Noun maps are more concentrated than function words' for {len(focused)} of "
                               f"{len(rows)} methods (normalised entropy, 0 = one pixel, 1 = uniform: {detail})."})

    rows2 = [(m, v["consecutive_similarity"], v["pointing_game_after_shift"], v["words"]["pointing_game_after_shift"])
             for m, v in methods.items()]
    detail = "; ".join(f"{labels[m]} {_fmt(s)}" for m, s, _, _ in rows2)
    follows = "; ".join(f"{labels[m]} {_fmt(p)} of {n}" for m, _, p, n in rows2)
    out.append({"claim": "Attention shifts as the caption progresses",
                "finding": f"Consecutive words' maps have a mean rank correlation of {detail} (1 = the same "
                           f"map); when a word names another object than the previous one, its map's peak lands "
                           f"on the new object at a rate of {follows} words."})

    rows3 = [(m, v["pointing_game_small"], v["pointing_game_large"]) for m, v in methods.items()]
    missed = [m for m, small, large in rows3 if small == small and large == large and small < large]
    detail = "; ".join(f"{labels[m]} {_fmt(s)} vs {_fmt(large)}" for m, s, large in rows3)
    out.append({"claim": "Can miss small objects",
                "finding": f"Pointing-game hit rate on objects smaller than the median referent vs larger ones: "
                           f"{detail}; lower on small objects for {len(missed)} of {len(rows3)} methods."})

    rows4 = [(m, v["probability_object_mass_spearman"]) for m, v in methods.items()]
    positive = [m for m, r in rows4 if r == r and r > 0]
    detail = "; ".join(f"{labels[m]} {_fmt(r)}" for m, r in rows4)
    out.append({"claim": "Attends to background when uncertain",
                "finding": f"Rank correlation of a word's probability with its map's share of mass on objects: "
                           f"{detail}; positive (less mass on objects when less sure) for {len(positive)} of "
                           f"{len(rows4)} methods."})

    rows5 = [(m, v["pointing_game"], v["pointing_game_random"], v["pointing_game_centre"]) for m, v in methods.items()]
    beats = [m for m, p, r, c in rows5 if p == p and p > max(r, c)]
    detail = "; ".join(f"{labels[m]} {_fmt(p)}" for m, p, _, _ in rows5)
    _, _, random_rate, centre_rate = rows5[0]
    out.append({"claim": "Strong spatial correspondence between words and image regions",
                "finding": f"Pointing-game hit rates {detail}, against {_fmt(random_rate)} for a random map and "
                           f"{_fmt(centre_rate)} for a centre-bias map: {len(beats)} of {len(rows5)} methods beat "
                           "both baselines."})
    return out
