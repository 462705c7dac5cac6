"""What is known of each generated word on the shapes data (class, referent, support), and the
hallucination report's AUCs and chosen rule against scikit-learn and hand counts."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from captionlens.evaluate import hallucination, stats
from captionlens.evaluate.hallucination import bootstrap_auc, measure_hallucination
from captionlens.evaluate.words import phrase_shapes, shapes_class, shapes_support, shapes_truths
from captionlens.explain.suspect import SuspectRule

OBJECTS = [{"id": 0, "shape": "circle", "colour": "red", "size": "small", "bbox": [1, 1, 4, 4]},
           {"id": 1, "shape": "square", "colour": "blue", "size": "large", "bbox": [5, 2, 9, 8]}]


def test_word_classes_and_noun_phrases():
    tokens = "there is a small red circle and a large blue square".split()
    assert [shapes_class(t) for t in tokens] == ["function word", "function word", "function word",
                                                "size adjective", "colour adjective", "shape noun", "function word",
                                                "function word", "size adjective", "colour adjective",
                                                "shape noun"]
    assert phrase_shapes("a red blue square red".split()) == [None, "square", "square", "square", None]
    assert shapes_class("picture") == "other"


@pytest.mark.parametrize("caption, expected", [
    ("a small red circle", [None, True, True, True]),
    ("a blue circle", [None, False, True]),                   # a colour bound to the wrong shape
    ("a small triangle", [None, False, False]),               # a shape that is not there, and its size
    ("a large red square", [None, True, False, True]),        # red exists, but no red square
    ("red", [True]),                                          # a dangling adjective: any object
])
def test_support_of_each_content_word(caption, expected):
    assert shapes_support(OBJECTS, caption.split()) == expected


def test_truths_give_the_referent_mask_and_box():
    labels = np.zeros((10, 10), np.uint8)
    labels[1:4, 1:4] = 1
    labels[2:8, 5:9] = 2
    grounding = {"images": {"x.png": {"objects": OBJECTS}}}
    truths = shapes_truths(grounding, labels, "x.png", "a red circle and a green square".split())
    red, circle = truths[1], truths[2]
    assert red.word_class == "colour adjective" and circle.word_class == "shape noun"
    assert circle.mask is not None and circle.mask.sum() == 9 and circle.box == (1.0, 1.0, 4.0, 4.0)
    assert truths[5].supported is False and truths[6].supported is True and truths[6].mask is None  # no green square
    assert truths[0].supported is None and truths[0].mask is None


def test_report_aucs_equal_sklearn_and_the_rule_is_judged_on_the_other_half():
    rng = np.random.default_rng(0)
    n = 200
    supported = [bool(s) for s in rng.random(n) > 0.3]
    images = rng.integers(0, 40, n)
    unsupported = ~np.asarray(supported)
    log_prob = np.where(unsupported, rng.normal(-2.0, 1.0, n), rng.normal(-0.5, 1.0, n))
    entropy = rng.random(n)                                    # carries no signal
    classes = ["colour adjective"] * n
    measures = measure_hallucination(supported, classes, images.tolist(), {"m": {"entropy": entropy}}, log_prob)
    assert measures.words == n and measures.unsupported == int(unsupported.sum())
    assert measures.log_prob_auc == pytest.approx(roc_auc_score(unsupported, log_prob))
    assert measures.auc["m"]["entropy"] == pytest.approx(roc_auc_score(unsupported, entropy))
    low, high = measures.log_prob_auc_interval
    assert low < measures.log_prob_auc < high
    rule = measures.rule.rule
    assert (rule.statistic, rule.direction, rule.method) == ("log_prob", "below", None)
    # the held-out rates, counted by hand on the odd images with the chosen threshold
    test = images % 2 == 1
    flagged = log_prob[test] <= rule.threshold
    held = measures.held_out
    assert held.words == int(test.sum())
    assert held.true_positive_rate == pytest.approx(flagged[unsupported[test]].mean())
    assert held.false_positive_rate == pytest.approx(flagged[~unsupported[test]].mean())
    assert held.auc == pytest.approx(roc_auc_score(unsupported[test], -log_prob[test]))


def test_suspect_rule_flags_at_or_past_the_threshold_and_checks_itself():
    rule = SuspectRule(statistic="log_prob", direction="below", threshold=-1.0)
    assert rule.flagged(np.array([-2.0, -1.0, 0.0])).tolist() == [True, True, False]
    assert SuspectRule.from_json(rule.to_json()) == rule
    with pytest.raises(ValueError, match="statistic 'entropy' is a method's: name the method"):
        SuspectRule(statistic="entropy", direction="below", threshold=0.5)
    with pytest.raises(ValueError, match="direction must be"):
        SuspectRule(statistic="log_prob", direction="under", threshold=0.5)


def test_bootstrap_aucs_equal_sklearn_on_each_resample():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 60)
    values = np.round(rng.normal(size=60), 1)                    # ties included
    draws = rng.integers(0, 60, size=(40, 60))
    ours = bootstrap_auc(labels, values, draws)
    expected = [roc_auc_score(labels[d], values[d]) if len(set(labels[d])) > 1 else np.nan for d in draws]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert np.isnan(bootstrap_auc(np.zeros(5, int), np.arange(5.0), np.arange(5)[None])[0])   # one class only


def test_the_auc_interval_is_a_bootstrap_of_sklearns_auc_drawn_in_bounded_blocks(monkeypatch):
    """The interval's resamples are drawn a few at a time (memory bounded for many words), and equal a plain
    loop of sklearn's AUC over the same seeded resamples."""
    rng = np.random.default_rng(9)
    labels = (rng.random(80) < 0.3).astype(int)
    values = rng.normal(size=80) + labels
    draws = np.random.default_rng(4).integers(0, 80, size=(200, 80))
    aucs = [roc_auc_score(labels[d], values[d]) for d in draws if len(set(labels[d])) > 1]
    expected = tuple(np.quantile(aucs, [0.025, 0.975]))
    monkeypatch.setattr(stats, "_MAX_DRAWS", 80 * 200)                 # all resamples at once
    np.testing.assert_allclose(hallucination._auc_interval(labels, values, 4, resamples=200), expected, rtol=1e-12)
    monkeypatch.setattr(stats, "_MAX_DRAWS", 80 * 8)                   # eight at a time: the same stream
    np.testing.assert_allclose(hallucination._auc_interval(labels, values, 4, resamples=200), expected, rtol=1e-12)


def test_the_image_share_is_a_candidate_with_an_interval_and_every_auc_has_one():
    """Unsupported words lean on the caption (low image share): the image share separates them, the rule
    can pick it, and every AUC and held-out rate comes with an interval around it."""
    rng = np.random.default_rng(6)
    n = 400
    unsupported = rng.random(n) < 0.2
    share = np.where(unsupported, rng.uniform(0.0, 0.5, n), rng.uniform(0.3, 1.0, n))
    log_prob = rng.normal(size=n)                                  # uninformative
    images = np.arange(n) // 4
    measures = measure_hallucination((~unsupported).tolist(), ["colour adjective"] * n, images.tolist(),
                                     {"m": {"entropy": rng.random(n)}}, log_prob, share)
    assert measures.image_share_auc == pytest.approx(roc_auc_score(unsupported, share))
    low, high = measures.image_share_auc_interval
    assert low < measures.image_share_auc < high and high < 0.3          # low shares flag unsupported words
    assert measures.rule.rule.statistic == "image_share" and measures.rule.rule.direction == "below"
    m_low, m_high = measures.auc_intervals["m"]["entropy"]
    assert m_low < measures.auc["m"]["entropy"] < m_high
    held = measures.held_out
    assert held.true_positive_rate_interval[0] <= held.true_positive_rate <= held.true_positive_rate_interval[1]
    assert held.false_positive_rate_interval[0] <= held.false_positive_rate <= held.false_positive_rate_interval[1]
