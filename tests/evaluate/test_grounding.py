"""Do the explanations of the trained demo model point at the object a shape noun names?

Ground truth: the synthetic scenes' exact boxes (data/shapes.py). Baseline: the exact hit rate of a
uniformly random point. The rates are printed (run with -s to see them) and the best method must
beat the baseline by a wide margin and hit in a clear majority of cases.
"""
from captionlens.evaluate.grounding import shapes_grounding
from captionlens.models import load_checkpoint

METHODS = ("gradcam", "gradcam++", "attention", "lime", "occlusion")


def test_best_method_points_at_the_named_object(demo_model):
    checkpoint, data = demo_model
    model = load_checkpoint(checkpoint).model
    results = shapes_grounding(model, data, METHODS, limit=40,
                               settings={"lime": {"num_samples": 300, "n_segments": 40}})
    for name, result in results.items():
        print(f"{name:10s} pointing {result.rate:.2f}  random point {result.baseline_rate:.2f}  "
              f"({result.hits}/{result.total} shape nouns)")
    assert all(r.total >= 30 for r in results.values()), "too few grounded shape nouns in the captions"
    best = max(results.values(), key=lambda r: r.rate)
    assert best.rate >= 0.6
    assert best.rate >= best.baseline_rate + 0.4
