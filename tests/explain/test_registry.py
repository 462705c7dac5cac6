"""The method registry: one entry per method carries its facts, everything else reads them from there,
and every setting is checked by name and value before an image is touched."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner

from captionlens.cli import main, method_settings_from, methods_help
from captionlens.explain import explain
from captionlens.explain.registry import (
    METHODS,
    Method,
    MethodSettings,
    check_methods,
    is_signed,
    method_label,
    ordered_methods,
    quick_settings,
    register_method,
    resolve_settings,
)
from captionlens.explain.result import CaptionExplanation, MethodMaps
from captionlens.viz import method_comparison
from captionlens.viz.report import write_report


def test_the_methods_and_their_facts():
    assert ordered_methods(METHODS) == ["gradcam", "gradcam++", "attention", "lime", "occlusion", "hirescam",
                                        "layercam", "xgradcam", "eigencam", "integrated-gradients"]
    assert sorted(n for n in METHODS if METHODS[n].signed) == ["integrated-gradients", "lime", "occlusion"]
    assert [n for n in METHODS if METHODS[n].needs_attention] == ["attention"]
    assert method_label("gradcam++") == "Grad-CAM++" and method_label("unregistered") == "unregistered"
    assert ordered_methods({"occlusion", "zeta", "lime", "gradcam", "attention"}) == [
        "gradcam", "attention", "lime", "occlusion", "zeta"]
    assert is_signed("zeta", np.array([-1.0])) and not is_signed("zeta", np.array([1.0]))


def test_check_methods_names_the_problem(show_tell_model):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['gradcamm'\]; available: gradcam, gradcam\+\+"):
        check_methods(show_tell_model, ["gradcamm"])
    with pytest.raises(ValueError, match="'attention' needs a model with attention; CNNLSTMModel has none"):
        check_methods(show_tell_model, ["gradcam", "attention"])


@pytest.mark.parametrize("settings, match", [
    ({"gradcam": {"max_batch": 0}}, "gradcam: max_batch must be an integer >= 1, got 0"),
    ({"gradcam": {"maxbatch": 2}}, "gradcam: unknown setting.* maxbatch; gradcam takes max_batch, shortcut"),
    ({"lmie": {"num_samples": 5}}, "settings given for lmie, which is not a method; methods are gradcam"),
])
def test_settings_are_checked_before_any_image(attention_model, settings, match):
    with pytest.raises(ValueError, match=match):
        resolve_settings(attention_model, ["gradcam"], settings)
    with pytest.raises(ValueError, match=match):       # explain checks first: the image is never read
        explain(attention_model, "no-such-image.png", methods=("gradcam",), settings=settings)


def test_settings_of_methods_not_requested_are_ignored(attention_model):
    checked = resolve_settings(attention_model, ["gradcam"], {"lime": {"num_samples": 5}, "gradcam": {"max_batch": 2}})
    assert list(checked) == ["gradcam"] and checked["gradcam"].max_batch == 2


@pytest.mark.parametrize("arguments, match", [({"beam_size": 0}, "beam_size must be an integer >= 1, got 0"),
                                              ({"max_length": -1}, "max_length must be"),
                                              ({"score": "prob"}, "score must be 'log_prob' or 'logit'"),
                                              ({"target_layer": "layer9"}, "unknown target layer 'layer9'")])
def test_explain_arguments_are_checked_before_any_image(attention_model, arguments, match):
    with pytest.raises(ValueError, match=match):
        explain(attention_model, "no-such-image.png", methods=("gradcam",), **arguments)


@dataclass(frozen=True, kw_only=True)
class CentreSettings(MethodSettings):
    width: float = 0.5


def centre(contexts, settings: CentreSettings) -> list[MethodMaps]:
    """A map peaked at the image centre for every word: a method defined outside the package."""
    out = []
    for ctx in contexts:
        h, w = ctx.image_hw
        ys, xs = np.mgrid[0:h, 0:w]
        peak = np.exp(-(((ys - h / 2) / (settings.width * h)) ** 2 + ((xs - w / 2) / (settings.width * w)) ** 2))
        maps = np.repeat(peak[None].astype(np.float32), ctx.num_words, 0)
        out.append(MethodMaps(method="centre", maps=maps, raw=maps, settings=settings))
    return out


@pytest.fixture
def centre_method(monkeypatch):
    """The centre method registered for one test (the registry refuses a second entry, `del` removes it)."""
    monkeypatch.setitem(METHODS, "centre", Method("centre", "centre prior", 5, False, False, "a fixed centre map",
                                                  CentreSettings, centre))


def test_a_method_registered_in_one_place_reaches_explain_figures_report_and_cli(centre_method, attention_model,
                                                                                  image, caption, tmp_path):
    expl = explain(attention_model, image, methods=("gradcam", "centre"), caption=caption,
                   settings={"centre": {"width": 0.3}})
    assert expl["centre"].settings == CentreSettings(width=0.3)
    figure = method_comparison(expl)
    assert [ax.get_title() for ax in figure.axes[:2]] == ["Grad-CAM", "centre prior"]
    page = write_report([expl], tmp_path / "report").read_text()
    assert '"centre":"centre prior"' in page
    expl.save(tmp_path / "saved")                                  # and back, settings typed again
    assert CaptionExplanation.load(tmp_path / "saved")["centre"].settings == CentreSettings(width=0.3)
    with pytest.raises(ValueError, match="centre: unknown setting.* wide; centre takes width"):
        explain(attention_model, image, methods=("centre",), caption=caption, settings={"centre": {"wide": 1}})
    assert "centre" in methods_help()          # what `captionlens explain --help` shows for --methods


def test_an_outside_method_runs_from_the_command_line_and_in_the_evaluation(centre_method, attention_model,
                                                                            reference, tmp_path):
    """`captionlens explain --methods centre --setting centre.width=0.2` and `evaluate-explanations`."""
    checkpoint, data = reference
    images = sorted((data / "Images").glob("*.png"))[:2]
    out = tmp_path / "explained"
    result = CliRunner().invoke(main, ["explain", *map(str, images), "--checkpoint", str(checkpoint), "--methods",
                                       "gradcam,centre", "--setting", "centre.width=0.2", "--output-dir", str(out),
                                       "--beam-size", "1", "--max-length", "4"])
    assert result.exit_code == 0, result.output
    saved = CaptionExplanation.load(out / images[0].stem / "explanation")
    assert saved["centre"].settings == CentreSettings(width=0.2)
    assert (out / images[0].stem / "grid-centre.jpg").is_file()
    assert '"centre":"centre prior"' in (out / "index.html").read_text()
    evaluated = CliRunner().invoke(main, ["evaluate-explanations", "--checkpoint", str(checkpoint), "--data", str(data),
                                          "--limit", "2", "--faithfulness-images", "1", "--sanity-images", "1",
                                          "--methods", "gradcam,centre", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    printed = json.loads(evaluated.stdout)
    assert set(printed["methods"]) == {"gradcam", "centre"}
    assert printed["methods"]["centre"]["sanity"]["verdict"] == "fail"      # a map that ignores the model fails


def test_registering_a_method_name_twice_is_refused_naming_both_places():
    with pytest.raises(ValueError, match=r"method 'gradcam' is registered twice: first by "
                                         r"captionlens\.explain\.gradcam\.CAM_VARIANTS\['gradcam'\] "
                                         r"\(.*gradcam\.py:\d+\), again by .*test_registry\.py"):
        register_method("gradcam", label="again", order=9, signed=False, summary="", settings=CentreSettings)(centre)
    assert METHODS["gradcam"].run is not centre


def test_method_settings_from_the_command_line(attention_model, image, tmp_path):
    assert method_settings_from({"setting_pairs": ("lime.num_samples=40", "occlusion.fill=\"blur\"",
                                                   "occlusion.window=8")}) == {
        "lime": {"num_samples": 40}, "occlusion": {"fill": "blur", "window": 8}}
    with pytest.raises(ValueError, match="--setting 'lime=3': expected METHOD.NAME=VALUE"):
        method_settings_from({"setting_pairs": ("lime=3",)})
    bad = CliRunner().invoke(main, ["explain", "x.png", "--checkpoint", "x", "--setting", "lime.num_sample=4",
                                    "--methods", "lime"])
    assert bad.exit_code == 2


def test_quick_settings_come_from_each_entry_and_given_settings_win():
    assert quick_settings(["gradcam", "lime", "occlusion"], 96) == {
        "lime": {"num_samples": 300}, "occlusion": {"window": 24, "stride": 12}}
    assert quick_settings(["lime"], 96, {"lime": {"num_samples": 20}, "gradcam": {"max_batch": 4}}) == {
        "lime": {"num_samples": 20}, "gradcam": {"max_batch": 4}}


def test_cli_help_lists_the_registered_methods():
    help_text = " ".join(CliRunner().invoke(main, ["explain", "--help"]).output.split())
    assert "gradcam, gradcam++, attention (needs attention), lime, occlusion" in help_text
