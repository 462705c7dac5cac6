"""`evaluate_explanations` end to end: on the shipped reference model and its held-out scenes (numbers
asserted with margin, localisation recomputed with Quantus on the same maps and masks), on a tiny copy of
the Flickr30k Entities layout, and from the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from captionlens.cli import main
from captionlens.data.shapes import load_grounding, load_mask, word_refs
from captionlens.data.vocabulary import Vocabulary
from captionlens.evaluate import EvaluationConfig, ExplanationEvaluation, evaluate_explanations, load_suspect_rule
from captionlens.evaluate.result import Insight, MethodMeasures
from captionlens.evaluate.stats import Rate
from captionlens.explain.registry import method_label
from captionlens.models import load_checkpoint
from captionlens.viz.evaluation import save_evaluation
from zoo import tiny_captioner

METHOD_KEYS = ("pointing_game", "pointing_game_random", "relevance_mass", "relevance_mass_random",
               "deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random",
               "disappearance_rate", "sanity", "by_class", "pointing_game_caption_mean", "pointing_game_activation",
               "relevance_mass_caption_mean", "relevance_mass_activation", "relevance_rank_caption_mean",
               "relevance_rank_activation", "mask_auc_caption_mean", "mask_auc_activation", "localisation_margin",
               "selectivity", "word_randomisation", "verdict")   # keys the README documents
ALL_METHODS = {"gradcam", "gradcam++", "attention", "lime", "occlusion", "hirescam", "layercam", "xgradcam",
               "eigencam", "integrated-gradients"}


@pytest.fixture(scope="module")
def reference_evaluation(reference):
    checkpoint, data = reference
    model = load_checkpoint(checkpoint).model
    config = EvaluationConfig(limit=40, faithfulness_images=6, sanity_images=2)
    return evaluate_explanations(model, data, config=config), data


def test_the_result_is_typed_and_its_json_has_the_documented_keys(reference_evaluation, tmp_path):
    evaluation = reference_evaluation[0]
    assert evaluation.dataset.format == "shapes" and evaluation.dataset.images == 40
    assert set(evaluation.methods) == ALL_METHODS
    for measures in evaluation.methods.values():
        assert isinstance(measures, MethodMeasures) and isinstance(measures.pointing_game, Rate)
        assert {"shape noun", "colour adjective", "size adjective", "function word"} <= set(measures.by_class)
        assert measures.sanity.verdict in ("pass", "fail") and len(measures.sanity.layers) == 5
        for name, value in vars(measures).items():
            if isinstance(value, Rate) and value.value is not None and value.low is not None:
                assert value.low <= value.value <= value.high, name
    hallucination = evaluation.hallucination
    assert hallucination.words >= hallucination.unsupported and hallucination.rule is not None
    assert len(evaluation.insights) == 5 and all(isinstance(i, Insight) for i in evaluation.insights)
    data = evaluation.to_json()
    json.dumps(data, allow_nan=False)                               # strict JSON: no NaN anywhere
    assert {"format", "images", "captions", "words_scored"} <= set(data["dataset"])
    for method in data["methods"].values():
        assert set(METHOD_KEYS) <= set(method) and {"intervals", "words"} <= set(method)
    assert {"words", "unsupported", "auc", "log_prob_auc", "rule", "held_out"} <= set(data["hallucination"])
    for method in data["methods"].values():
        assert {"layers", "verdict", "rule", "failed_at"} <= set(method["sanity"])
        assert {"spearman", "interval", "verdict"} <= set(method["word_randomisation"])
        assert {"pointing_game", "interval"} <= set(method["localisation_margin"])
        assert {"deletion", "deletion_random", "interval"} <= set(method["selectivity"])
        assert {"trusted", "reasons"} <= set(method["verdict"])
    assert {"recommended", "recommended_because"} <= set(data) and data["settings"]["target_layer"] == "layer3"
    # one round trip through the file: the same types and values, explanations aside
    again = ExplanationEvaluation.load(evaluation.save(tmp_path / "evaluation.json"))
    assert again == evaluation and again.explanations == () and again.to_json() == data
    assert load_suspect_rule(tmp_path / "evaluation.json") == hallucination.rule.rule


def test_a_map_that_ignores_the_word_fails_and_the_recommended_method_passes_everything(reference_evaluation,
                                                                                          tmp_path):
    """EigenCAM (the trunk's first principal component: the same map for every word) and attention (the
    weights of a step are set before its word is chosen) cannot pass word randomisation; EigenCAM also
    fails the sanity check's first step. The recommended method is trusted and beats every word-blind map."""
    evaluation = reference_evaluation[0]
    eigencam, attention = evaluation.methods["eigencam"], evaluation.methods["attention"]
    assert eigencam.word_randomisation.spearman.value == pytest.approx(1.0)
    assert eigencam.word_randomisation.verdict == "fail" and eigencam.sanity.failed_at == "decoder and head"
    assert not eigencam.verdict.trusted and any(r.startswith("word randomisation") for r in eigencam.verdict.reasons)
    assert attention.word_randomisation.spearman.value == pytest.approx(1.0) and not attention.verdict.trusted
    for name, measures in evaluation.methods.items():          # the verdict is exactly the tests' outcomes
        assert measures.verdict.trusted == (not measures.verdict.reasons), name
    best = evaluation.methods[evaluation.recommended]
    assert best.verdict.trusted and best.localisation_margin.pointing_game.low > 0
    assert best.selectivity.deletion.low > 0 and best.word_randomisation.verdict == "pass"
    assert best.sanity.verdict == "pass" and evaluation.recommended_because.startswith(
        method_label(evaluation.recommended))
    from captionlens.cli import methods_and_rule
    path = evaluation.save(tmp_path / "evaluation.json")
    names, rule = methods_and_rule(None, path, None)          # `captionlens explain --evaluation evaluation.json`
    assert names[0] == evaluation.recommended and rule == evaluation.hallucination.rule.rule
    assert methods_and_rule("gradcam", path, None)[0][0] == "gradcam"     # --methods wins


def test_localisation_equals_quantus_on_the_same_maps_and_masks(reference_evaluation):
    quantus = pytest.importorskip("quantus")
    evaluation, data = reference_evaluation
    grounding = load_grounding(data)
    for name in ("gradcam", "lime"):
        maps, masks = [], []
        for expl in evaluation.explanations:
            filename = expl.image_path.rsplit("/", 1)[-1]
            labels = load_mask(data, filename)
            for t, ref in enumerate(word_refs(grounding, filename, expl.tokens)):
                if ref is not None:
                    maps.append(expl[name].maps[t])
                    masks.append(labels == ref + 1)
        a = np.stack(maps)[:, None].astype(np.float64)
        s = np.stack(masks)[:, None].astype(np.float64)
        x, y = np.zeros_like(a), np.zeros(len(a), int)
        kwargs = {"abs": False, "normalise": False, "disable_warnings": True}
        hits = quantus.PointingGame(**kwargs)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
        # Quantus counts a hit when any of several equal maxima is in the mask, ours the share inside
        tied = sum(int((m == m.max()).sum() > 1) for m in maps)
        method = evaluation.methods[name]
        assert method.pointing_game.n == len(a)
        assert abs(method.pointing_game.value - np.mean(hits)) <= tied / len(a) + 1e-9
        aucs = quantus.AUC(**kwargs)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
        assert method.mask_auc.value == pytest.approx(np.mean(aucs), abs=1e-6)


def test_the_reference_model_points_faithfully_and_beats_every_baseline(reference_evaluation):
    methods = reference_evaluation[0].methods
    best = max(methods.values(), key=lambda m: m.pointing_game.value)
    assert best.pointing_game.low >= 0.55                                 # the interval's low end, not the value
    for name, method in methods.items():
        if name == "eigencam":       # the word-independent control: pointing below the activation map's own
            assert method.pointing_game.value < method.pointing_game_activation.value
            continue
        assert method.pointing_game.value > method.pointing_game_random.value + 0.2, name
        assert method.mask_auc.value > 0.6, name
        assert method.deletion_auc.value < method.deletion_auc_random.value, name      # hiding it hurts more
        assert method.disappearance_rate.value > method.disappearance_rate_random.value, name
    assert methods["gradcam"].sanity.verdict == "pass"


def test_saved_files_and_the_report_section(reference_evaluation, tmp_path):
    evaluation, _ = reference_evaluation
    files = save_evaluation(evaluation, tmp_path)
    assert json.loads(files["json"].read_text())["methods"].keys() == evaluation.methods.keys()
    table = files["markdown"].read_text()
    assert "| Grad-CAM |" in table and "random map / order" in table and "Sanity rule" in table
    for figure in ("curves", "sanity"):
        with Image.open(files[figure]) as png:
            assert png.width > 300
    page = files["report"].read_text()
    assert "Can these maps be trusted?" in page and 'src="deletion-insertion.png"' in page


def _entities(root, image_id: str, size: tuple[int, int]) -> None:
    """One image of the Flickr30k Entities layout: a dog and a frisbee with boxes, a notvisual phrase."""
    (root / "Sentences").mkdir(exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    (root / "flickr30k-images").mkdir(exist_ok=True)
    (root / "Sentences" / f"{image_id}.txt").write_text(
        "[/EN#1/animals A dog] catches [/EN#2/other a frisbee] in [/EN#0/notvisual mid-air] .\n"
        "[/EN#1/animals The dog] jumps .\n")
    boxes = {1: (3, 5, 20, 30), 2: (25, 4, 40, 14)}
    objects = "".join(f"<object><name>{c}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                      f"<ymax>{b[3]}</ymax></bndbox></object>" for c, b in boxes.items())
    (root / "Annotations" / f"{image_id}.xml").write_text(
        f"<annotation><filename>{image_id}.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"<depth>3</depth></size>{objects}</annotation>\n")
    rng = np.random.default_rng(int(image_id))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        root / "flickr30k-images" / f"{image_id}.jpg")


def test_flickr30k_entities_words_are_scored_against_their_chains_boxes(tmp_path):
    for image_id in ("11", "12"):
        _entities(tmp_path, image_id, (48, 36))
    for split, ids in (("train", []), ("val", []), ("test", ["11", "12"])):
        (tmp_path / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    vocab = Vocabulary(["dog", "frisbee"])
    model = tiny_captioner("show-attend-tell", vocab=vocab, embed_size=8, hidden_size=16, attention_dim=8,
                           grid_size=2, calibrate=False)
    with torch.no_grad():                     # every word it writes is "dog" or "frisbee": all grounded
        model.decoder.fc.bias[[vocab.end_idx, vocab.unk_idx]] = -20.0
    config = EvaluationConfig(limit=2, faithfulness_images=1, sanity_images=1, max_length=3,
                              settings={"lime": {"num_samples": 20}})
    evaluation = evaluate_explanations(model, tmp_path, config=config)
    dataset = evaluation.dataset
    assert dataset.format == "flickr30k-entities"
    assert (dataset.phrases, dataset.phrases_with_boxes) == (8, 6)          # 4 a caption pair, notvisual boxless
    assert dataset.words_scored == dataset.words_grounded == 6
    gradcam = evaluation.methods["gradcam"]
    assert set(gradcam.by_type) <= {"animals", "other"} and gradcam.by_type
    assert set(gradcam.by_class) == {"annotated noun"}
    assert evaluation.hallucination is None and "hallucination" not in evaluation.to_json()  # shapes only
    assert evaluation.config.settings["lime"] == {"num_samples": 20}        # the given setting over the quick one


def test_command_line_json_and_insights(reference, tmp_path):
    checkpoint, data = reference
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate-explanations", "--checkpoint", str(checkpoint), "--data", str(data),
                                  "--limit", "3", "--faithfulness-images", "1", "--sanity-images", "1",
                                  "--methods", "gradcam,attention", "--json", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed["methods"]) == {"gradcam", "attention"}
    assert (tmp_path / "eval" / "index.html").is_file()
    insights = runner.invoke(main, ["insights", str(tmp_path / "eval" / "evaluation.json")])
    assert insights.exit_code == 0 and insights.output.count("\n- ") + insights.output.startswith("- ") == 5
    bad = runner.invoke(main, ["evaluate-explanations", "--checkpoint", str(checkpoint), "--data", str(tmp_path)])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "cannot tell the dataset format" in bad.stderr
