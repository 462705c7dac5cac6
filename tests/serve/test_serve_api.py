"""The page's API over the application (in-process): captions (the model's with any beam, the model's
continuation of a prefix, typed ones) against decoding and teacher forcing done here; maps against
`captionlens.explain` on the same inputs, with and without a contrast; one computation per distinct
request (cached, and shared by a request that arrives while the first runs); progress and cancelling of
long requests; errors as one JSON line, after which the server goes on; an evaluation's suspect words and
recommended method."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from serving import FAST, finished, make_client, opened

import captionlens.serve.service as service_module
from captionlens.evaluate.result import (
    ChosenRule,
    Curves,
    EvaluatedData,
    EvaluationConfig,
    ExplanationEvaluation,
    HallucinationMeasures,
)
from captionlens.explain import explain
from captionlens.explain.registry import is_signed
from captionlens.explain.scoring import caption_tensor
from captionlens.explain.statistics import flag_words, word_statistics
from captionlens.explain.suspect import SuspectRule
from captionlens.models.decoding import decode_features
from captionlens.viz.overlay import method_maps
from captionlens.viz.page import heat_sprite


def pixels(name: str = "a.png", gallery=None) -> np.ndarray:
    return np.asarray(Image.open(gallery / name).convert("RGB"))


def teacher_forced(model, image: np.ndarray, ids: list[int]) -> torch.Tensor:
    """(T + 1, V) log-probabilities of the next word along `<START> ids <END>`, computed here."""
    x = model.preprocessing.transform(Image.fromarray(image))[None]
    with torch.no_grad():
        hidden, _ = model.teacher_forced_hidden(model.encode(x), caption_tensor(ids, model.vocab))
        return model.output_logits(hidden)[0].log_softmax(-1)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_models_caption_with_every_words_probability_and_alternatives(client, model, gallery_dir, beam_size):
    image = opened(client, "b.jpg")
    assert (image["width"], image["height"]) == (64, 48) and image["name"] == "b.jpg"
    view = client.post("/api/caption", json={"image": image["id"], "beam_size": beam_size}).json()
    photo = pixels("b.jpg", gallery_dir)
    x = model.preprocessing.transform(Image.fromarray(photo))[None]
    with torch.no_grad():
        expected = decode_features(model, model.encode(x), model.vocab, max_length=6, beam_size=beam_size)[0]
    assert view["tokens"] == expected.words and len(view["tokens"]) >= 2
    assert view["source"] == "generated" and view["beam_size"] == beam_size
    log_probs = teacher_forced(model, photo, expected.token_ids)
    np.testing.assert_allclose(view["log_probs"], [float(log_probs[t, i]) for t, i in enumerate(expected.token_ids)],
                               atol=1e-4)
    assert view["end_log_prob"] == pytest.approx(float(log_probs[-1, model.vocab.end_idx]), abs=1e-4)
    assert len(view["alternatives"]) == len(view["tokens"]) + 1                 # and what may follow the last word
    for t, row in enumerate(view["alternatives"]):
        ranked = log_probs[t].clone()
        ranked[[model.vocab.start_idx, model.vocab.pad_idx]] = float("-inf")
        top = ranked.topk(5)
        assert [a["word"] for a in row] == [model.vocab.idx2word[int(i)] for i in top.indices]
        np.testing.assert_allclose([a["log_prob"] for a in row], top.values.numpy(), atol=1e-4)


def test_an_alternative_re_decodes_the_rest_from_that_prefix(client, model, gallery_dir):
    image = opened(client)
    first = client.post("/api/caption", json={"image": image["id"], "beam_size": 2}).json()
    alternative = next(a["word"] for a in first["alternatives"][1] if a["word"] not in (first["tokens"][1], "<END>"))
    prefix = [first["tokens"][0], alternative]
    view = client.post("/api/caption", json={"image": image["id"], "beam_size": 2, "prefix": prefix}).json()
    x = model.preprocessing.transform(Image.fromarray(pixels("a.png", gallery_dir)))[None]
    with torch.no_grad():
        expected = decode_features(model, model.encode(x), model.vocab, max_length=6, beam_size=2,
                                   prefix=[model.vocab(w) for w in prefix])[0]
    assert view["tokens"][:2] == prefix and view["tokens"] == expected.words and view["prefix"] == 2


def test_a_typed_caption_is_teacher_forced_and_unknown_words_are_named(client, model, gallery_dir):
    image = opened(client)
    view = client.post("/api/caption", json={"image": image["id"], "text": "A red zebra, above the square!"}).json()
    assert view["tokens"] == ["a", "red", "<UNK>", "above", "the", "square"] and view["unknown"] == ["zebra"]
    assert view["source"] == "given"
    ids = [model.vocab(w) for w in view["tokens"]]
    log_probs = teacher_forced(model, pixels("a.png", gallery_dir), ids)
    np.testing.assert_allclose(view["log_probs"], [float(log_probs[t, i]) for t, i in enumerate(ids)], atol=1e-4)
    exact = client.post("/api/caption", json={"image": image["id"], "words": view["tokens"][:3]}).json()
    assert exact["tokens"] == ["a", "red", "<UNK>"] and exact["log_probs"] == view["log_probs"][:3]  # "end it here"
    assert exact["unknown"] == [] and exact["source"] == "given"
    for body, message in (({"words": ["a", "zebra"]}, "caption word(s) not in the model's vocabulary: 'zebra'"),
                          ({"words": ["a"], "text": "a"}, "give one of a typed caption, its words or a prefix"),
                          ({"prefix": ["<END>"]}, "prefix word(s) not in the model's vocabulary: '<END>'")):
        refused = client.post("/api/caption", json={"image": image["id"], **body})
        assert refused.status_code == 400 and message in refused.json()["error"], refused.text


@pytest.mark.parametrize("method", ["gradcam", "attention", "lime", "occlusion"])
def test_maps_equal_captionlens_explain_on_the_same_inputs(client, model, gallery_dir, method):
    image = opened(client, "c.png")
    tokens = ["a", "red", "circle", "above", "the", "square"]
    result = finished(client, client.post("/api/maps", json={"image": image["id"], "tokens": tokens,
                                                             "method": method}))
    expl = explain(model, pixels("c.png", gallery_dir), (method,), caption=" ".join(tokens), settings=FAST)
    maps = method_maps(expl, method)
    w, h = image["heat_size"]
    assert result["sprite"] == heat_sprite(maps, is_signed(method), (h, w))
    assert result["signed"] == is_signed(method) and result["tokens"] == tokens
    np.testing.assert_allclose(result["ranges"], np.stack([maps.reshape(len(maps), -1).min(1),
                                                           maps.reshape(len(maps), -1).max(1)], 1), rtol=1e-5)


def test_a_contrast_gives_the_maps_of_the_difference(client, model, gallery_dir):
    image = opened(client, "c.png")
    tokens = ["a", "red", "circle", "above", "the", "square"]
    body = {"image": image["id"], "tokens": tokens, "method": "gradcam", "contrast": {"1": "blue"}}
    result = finished(client, client.post("/api/maps", json=body))
    photo = pixels("c.png", gallery_dir)
    expl = explain(model, photo, ("gradcam",), caption=tokens, settings=FAST, contrast={1: "blue"})
    plain = explain(model, photo, ("gradcam",), caption=tokens, settings=FAST)
    w, h = image["heat_size"]
    assert result["sprite"] == heat_sprite(method_maps(expl, "gradcam"), False, (h, w))
    assert result["sprite"] != heat_sprite(method_maps(plain, "gradcam"), False, (h, w))
    log_probs = teacher_forced(model, photo, [model.vocab(t) for t in tokens])
    (foil,) = result["contrast"]
    assert (foil["position"], foil["word"]) == (1, "blue")
    assert foil["log_prob"] == pytest.approx(float(log_probs[1, model.vocab("blue")]), abs=1e-4)
    for bad, message in (({"1": "red"}, "is the word at position 1 itself"), ({"9": "red"}, "past the caption"),
                         ({"x": "red"}, "contrast positions must be word indices"),
                         ({"1": "zebra"}, "not a word of the model's vocabulary")):
        refused = client.post("/api/maps", json={**body, "contrast": bad})
        assert refused.status_code == 400 and message in refused.json()["error"]


def count_explanations(monkeypatch, gate: threading.Event | None = None) -> list[str]:
    """Record (and, with a gate, hold until it opens) every explanation the service computes."""
    calls: list[str] = []
    real = service_module.explain

    def counted(model, image, methods, **options):
        calls.append(",".join(methods))
        if gate is not None:
            assert gate.wait(10)
        return real(model, image, methods, **options)

    monkeypatch.setattr(service_module, "explain", counted)
    return calls


def test_a_request_is_computed_once_and_then_answered_from_the_cache(client, monkeypatch):
    calls = count_explanations(monkeypatch)
    image = opened(client)
    body = {"image": image["id"], "tokens": ["a", "red", "circle"], "method": "gradcam"}
    first, again = client.post("/api/maps", json=body).json(), client.post("/api/maps", json=body).json()
    assert first == again and first["status"] == "done" and calls == ["gradcam"]
    client.post("/api/maps", json={**body, "method": "gradcam++"})
    client.post("/api/maps", json={**body, "contrast": {"2": "square"}})
    client.post("/api/maps", json={**body, "tokens": ["a", "red", "square"]})
    assert calls == ["gradcam", "gradcam++", "gradcam", "gradcam"]     # each distinct request once


def test_a_second_identical_request_waits_for_the_first(client, monkeypatch):
    gate = threading.Event()
    calls = count_explanations(monkeypatch, gate)
    image = opened(client)
    body = {"image": image["id"], "tokens": ["a", "blue", "square"], "method": "gradcam"}
    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(client.post, "/api/maps", json=body) for _ in range(2)]
        while not calls:                                  # the first has started and is held at the gate
            threading.Event().wait(0.01)
        threading.Event().wait(0.2)                       # the second has arrived meanwhile
        gate.set()
        results = [finished(client, a.result()) for a in answers]
    assert calls == ["gradcam"] and results[0] == results[1]


def test_long_requests_report_progress_and_can_be_cancelled(model, gallery_dir):
    settings = {**FAST, "lime": {"num_samples": 4000, "batch_size": 8}}
    with make_client(model, gallery_dir, settings=settings) as client:
        image = opened(client)
        body = {"image": image["id"], "tokens": ["a", "red", "circle"], "method": "lime"}
        answer = client.post("/api/maps", json=body)
        assert answer.status_code == 202 and answer.json()["status"] == "running"
        job = answer.json()["job"]
        seen = []
        for _ in range(50):
            progress = client.get(f"/api/jobs/{job}?wait=0.2").json()["progress"]
            if progress and progress["done"] >= 80:
                seen.append(progress)
                break
        assert seen and seen[0]["method"] == "lime" and seen[0]["total"] == 4000
        caption = client.post("/api/caption", json={"image": image["id"]})      # answered between LIME's batches
        assert caption.status_code == 200 and client.get(f"/api/jobs/{job}").json()["status"] == "running"
        assert client.delete(f"/api/jobs/{job}").json() == {"status": "cancelled", "job": job}
        assert client.get(f"/api/jobs/{job}?wait=5").json()["status"] == "cancelled"
        again = client.post("/api/maps", json=body).json()                       # asked again: a new computation
        assert again["job"] != job
        client.delete(f"/api/jobs/{again['job']}")


def test_errors_are_one_json_line_and_the_server_goes_on(client, monkeypatch):
    image = opened(client)
    body = {"image": image["id"], "tokens": ["a", "red", "circle"], "method": "gradcam"}
    cases = [
        (client.post("/api/maps", json={**body, "method": "gradcam+++"}), 400, "unknown method 'gradcam+++'"),
        (client.post("/api/maps", json={**body, "image": "nope"}), 404, "no image 'nope' on the server"),
        (client.post("/api/maps", json={**body, "tokens": ["a", "zebra"]}), 400, "not in the model's vocabulary"),
        (client.post("/api/caption", json={"image": image["id"], "beam_size": 99}), 400, "beam size must be"),
        (client.post("/api/caption", content=b"{not json", headers={"Content-Type": "application/json"}), 400,
         "not JSON"),
        (client.post("/api/caption", json={"image": image["id"], "text": "!!!"}), 400, "has no words"),
        (client.get("/api/jobs/j999999"), 404, "no job"),
        (client.post("/api/caption", content=b"x" * 70_000), 413, "the request is 68 KB, more than the 64 KB"),
    ]
    for response, status, message in cases:
        assert response.status_code == status and message in response.json()["error"], response.text

    def broken(*args, **kwargs):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(service_module, "explain", broken)
    failed = client.post("/api/maps", json=body)
    assert failed.status_code == 500 and failed.json() == {"error": "internal error: RuntimeError: the model fell over"}
    monkeypatch.undo()
    assert finished(client, client.post("/api/maps", json=body))["method"] == "gradcam"   # computed afresh, served


def test_an_evaluation_marks_suspect_words_and_preselects_its_method(model, gallery_dir, tmp_path):
    caption = "a red circle above the square"
    expl = explain(model, pixels("a.png", gallery_dir), ("gradcam++",), caption=caption, settings=FAST)
    peaks = word_statistics(expl, "gradcam++")["peak"]
    rule = SuspectRule("peak", "above", float(np.median(peaks)), method="gradcam++")   # flags some words, not all
    flags = flag_words(rule, expl)
    assert {f.suspect for f in flags} == {True, False}
    evaluation = ExplanationEvaluation(
        dataset=EvaluatedData(path="x", format="shapes", split="test", images=1, captions=1, captions_explained=1,
                              words_scored=1, words_grounded=1),
        config=EvaluationConfig(), methods={}, curves=Curves((0.0,), {}, {}), recommended="gradcam++",
        hallucination=HallucinationMeasures(words=1, unsupported=1, by_class={}, log_prob_auc=None,
                                            log_prob_auc_interval=(None, None), auc={},
                                            rule=ChosenRule(rule, "even-indexed images", 0.9)))
    path = evaluation.save(tmp_path / "evaluation.json")
    with make_client(model, gallery_dir, evaluation=path) as client:
        info = client.get("/api/info").json()
        assert info["recommended"] == "gradcam++" and info["suspect_rule"] == rule.describe()
        assert '"recommended":"gradcam++"' in client.get("/").text
        image = opened(client)
        view = client.post("/api/caption", json={"image": image["id"], "text": caption}).json()
        assert view["suspect"] == [f.to_json() for f in flags] and view["suspect_rule"] == rule.describe()
    with make_client(model, gallery_dir) as plain:
        assert plain.get("/api/info").json()["recommended"] is None
        image = opened(plain)
        assert plain.post("/api/caption", json={"image": image["id"], "text": caption}).json()["suspect"] is None


def test_the_same_pixels_are_the_same_image(client, gallery_dir):
    uploaded = client.post("/api/upload", files={"file": ("mine.png", (gallery_dir / "a.png").read_bytes())}).json()
    again = opened(client, "a.png")
    assert uploaded["id"] == again["id"] and uploaded["name"] == "mine.png" and again["name"] == "a.png"
    photo = client.get(f"/api/image/{uploaded['id']}")
    assert photo.headers["content-type"] == "image/jpeg"
    assert opened(client, "b.jpg")["id"] != uploaded["id"]
