"""`evaluate_explanations` on COCO: object words scored against their category's instance masks (checked
with pycocotools' own masks and Quantus' metrics), per category, supercategory and size, and CHAIR's labels
as the hallucination section's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pycocotools.coco import COCO

from captionlens.cli import main
from captionlens.data.coco import load_coco
from captionlens.data.vocabulary import tokenize
from captionlens.evaluate import EvaluationConfig, evaluate_explanations
from captionlens.evaluate.chair import chair, coco_ground_truth
from captionlens.models.checkpoints import save_checkpoint
from coco_layout import CATEGORIES, generated_coco
from zoo import tiny_captioner

CATEGORY_WORDS = {c["name"] for c in CATEGORIES if " " not in c["name"]}
WORDS = sorted(CATEGORY_WORDS | {"a", "picture", "of", "next", "to"})


@pytest.fixture(scope="module")
def coco_evaluation(tmp_path_factory):
    root = generated_coco(tmp_path_factory.mktemp("coco"), images=24, size=(160, 120), photo_size=(160, 120),
                          objects_per_image=12)
    model = tiny_captioner("show-attend-tell", vocab=WORDS, image_size=32, seed=3)
    with torch.no_grad():          # an untrained model that writes long captions of object names
        model.decoder.fc.bias[[model.vocab(w) for w in WORDS if w in CATEGORY_WORDS]] += 3.0
        model.decoder.fc.bias[model.vocab.end_idx] -= 5.0
    config = EvaluationConfig(limit=12, faithfulness_images=3, sanity_images=1, max_length=8,
                              methods=("gradcam", "eigencam"))
    return root, evaluate_explanations(model, root, config=config)


def test_object_words_are_scored_per_category_supercategory_and_size(coco_evaluation):
    root, evaluation = coco_evaluation
    assert evaluation.dataset.format == "coco" and evaluation.dataset.words_grounded > 0
    gradcam = evaluation.methods["gradcam"]
    supercategories = {c["supercategory"] for c in CATEGORIES}
    assert gradcam.by_category and set(gradcam.by_category) <= {c["name"] for c in CATEGORIES}
    assert gradcam.by_supercategory and set(gradcam.by_supercategory) <= supercategories
    assert set(gradcam.by_size) <= {"small", "medium", "large"} and gradcam.by_size
    assert sum(m.pointing_game.n for m in gradcam.by_category.values()) == gradcam.pointing_game.n
    data = evaluation.to_json()
    assert {"by_category", "by_supercategory", "by_size"} <= set(data["methods"]["gradcam"])
    json.dumps(data, allow_nan=False)


def test_localisation_equals_quantus_against_pycocotools_masks(coco_evaluation):
    quantus = pytest.importorskip("quantus")
    root, evaluation = coco_evaluation
    api = COCO(str(root / "annotations" / "instances_val2014.json"))
    names = {c["id"]: c["name"] for c in api.loadCats(api.getCatIds())}
    by_file = {img["file_name"]: img["id"] for img in api.loadImgs(api.getImgIds())}
    maps, masks = [], []
    for expl in evaluation.explanations:
        image_id = by_file[expl.image_path.rsplit("/", 1)[-1]]
        anns = api.loadAnns(api.getAnnIds(imgIds=[image_id]))
        for t, token in enumerate(expl.tokens):
            found = [a for a in anns if names[a["category_id"]] == token]
            if found:      # the oracle: pycocotools' own masks of the category's instances, united
                maps.append(expl["gradcam"].maps[t])
                masks.append(np.any([api.annToMask(a) > 0 for a in found], axis=0))
    a = np.stack(maps)[:, None].astype(np.float64)
    s = np.stack(masks)[:, None].astype(np.float64)
    x, y = np.zeros_like(a), np.zeros(len(a), int)
    kwargs = {"abs": False, "normalise": False, "disable_warnings": True}
    gradcam = evaluation.methods["gradcam"]
    assert gradcam.pointing_game.n == len(a)
    aucs = quantus.AUC(**kwargs)(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    assert gradcam.mask_auc.value == pytest.approx(np.mean(aucs), abs=1e-6)


def test_hallucination_labels_are_chairs(coco_evaluation):
    root, evaluation = coco_evaluation
    annotations = load_coco(root)
    truth = coco_ground_truth([annotations.image(e.image_path.rsplit("/", 1)[-1]) for e in evaluation.explanations])
    captions = {e.image_path.rsplit("/", 1)[-1]: " ".join(tokenize(e.caption)) for e in evaluation.explanations}
    expected = chair(captions, truth)
    hallucination = evaluation.hallucination
    assert hallucination is not None and hallucination.words == expected.mentions
    assert hallucination.unsupported == expected.mentions_hallucinated > 0
    assert set(hallucination.by_class) == {"object word"}


def test_the_word_independent_control_fails_on_coco_too(coco_evaluation):
    _, evaluation = coco_evaluation
    eigencam = evaluation.methods["eigencam"]
    assert eigencam.word_randomisation.verdict == "fail" and not eigencam.verdict.trusted


def test_the_command_evaluates_a_coco_folder(coco_evaluation, tmp_path):
    root, evaluation = coco_evaluation
    model = tiny_captioner("show-attend-tell", vocab=WORDS, image_size=32, seed=3)
    with torch.no_grad():
        model.decoder.fc.bias[[model.vocab(w) for w in WORDS if w in CATEGORY_WORDS]] += 3.0
        model.decoder.fc.bias[model.vocab.end_idx] -= 5.0
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", model, model.vocab)
    args = ["evaluate-explanations", "--checkpoint", str(checkpoint), "--data", str(root), "--format", "coco",
            "--limit", "4", "--faithfulness-images", "0", "--sanity-images", "0", "--methods", "gradcam", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["dataset"]["format"] == "coco" and printed["dataset"]["images"] == 4
    assert printed["dataset"]["words_grounded"] > 0 and "by_category" in printed["methods"]["gradcam"]
