"""The live page in a real headless Chromium against a real server on 127.0.0.1 (the shipped reference model,
held-out scenes): upload an image, click a word, switch method, type a caption, ask a contrast, click an
alternative, change the beam; the maps that arrive equal `captionlens.explain` on the same inputs, and
the canvas shows them in the report's colours. Skipped without a browser unless CAPTIONLENS_REQUIRE_BROWSER=1
(CI), as the report's browser test. The screenshot is kept under the test's tmp_path; with
CAPTIONLENS_SCREENSHOTS=DIR it is also written there as serve.png (how docs/images/serve.png was made)."""
from __future__ import annotations

import base64
import io
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from serving import running

from captionlens.explain import explain
from captionlens.explain.registry import is_signed
from captionlens.models.checkpoints import load_checkpoint
from captionlens.models.decoding import decode_features
from captionlens.serve import CaptionService, Gallery, ServeSettings, create_app
from captionlens.viz.overlay import DEFAULT_CMAP, SIGNED_CMAP, colormap_lut, method_maps
from captionlens.viz.page import heat_sprite

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viz"))
import test_report_browser  # noqa: E402

driver = test_report_browser.driver      # the report test's headless Chromium, with its skip / require rule

SETTINGS = {"lime": {"num_samples": 60}, "occlusion": {"window": 24, "stride": 24}}
SCENES = 6


@pytest.fixture
def scenes(reference, tmp_path: Path) -> tuple[Path, Path]:
    """(a gallery of held-out scenes, one more scene to upload)."""
    _, data = reference
    files = sorted((data / "Images").glob("*.png"))
    gallery = tmp_path / "scenes"
    gallery.mkdir()
    for path in files[:SCENES]:
        shutil.copy(path, gallery / path.name)
    upload = tmp_path / "upload" / files[SCENES].name
    upload.parent.mkdir()
    shutil.copy(files[SCENES], upload)
    return gallery, upload


@pytest.fixture
def served(reference, scenes) -> Iterator[tuple[str, object]]:
    checkpoint, _ = reference
    model = load_checkpoint(checkpoint, "cpu").model
    service = CaptionService(model, ServeSettings(max_length=12, settings=SETTINGS))
    with running(create_app(service, Gallery(scenes[0]))) as base:
        yield base, model


def sprite_of(model, image: np.ndarray, tokens: list[str], method: str, heat_size, contrast=None) -> str:
    """What the page must receive: the library's maps of the same inputs as the viewer's sprite."""
    expl = explain(model, image, (method,), caption=tokens, settings=SETTINGS, contrast=contrast)
    return heat_sprite(method_maps(expl, method), is_signed(method), (heat_size[1], heat_size[0]))


def canvas_pixels(browser) -> np.ndarray:
    url = browser.execute_script("return document.getElementById('overlay').toDataURL('image/png');")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def coloured(sprite: str, word: int, heat_size, signed: bool) -> np.ndarray:
    """The word's rows of the sprite through the report's colour table: what the canvas must show."""
    stack = np.asarray(Image.open(io.BytesIO(base64.b64decode(sprite.split(",", 1)[1]))))
    w, h = heat_size
    return colormap_lut(SIGNED_CMAP if signed else DEFAULT_CMAP)[stack[word * h:(word + 1) * h]]


def test_upload_click_switch_type_contrast_and_re_decode(driver, served, scenes, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, model = served
    gallery, upload = scenes
    wait = WebDriverWait(driver, 30)
    driver.set_window_size(1280, 1100)
    driver.get(base + "/")
    overlay = driver.find_element(By.ID, "overlay")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#gallery .card")) == SCENES

    def page_state() -> dict:
        return driver.execute_script("const s = window.captionlensServe; return {caption: s.caption, image: s.image,"
                                     " results: s.results};")

    def shown(word: int, method: str, contrast: str = "") -> dict:
        wait.until(lambda _: (overlay.get_attribute("data-word-index"), overlay.get_attribute("data-method"))
                   == (str(word), method) and overlay.get_attribute("data-key").endswith(f"/{method}/{contrast}"))
        return page_state()

    def words() -> list[str]:
        return driver.execute_script("return [...document.querySelectorAll('#words .word')]"
                                     ".map(button => button.firstChild.textContent);")

    def arrived(state: dict, method: str, contrast: str = "") -> dict:
        key = f"{state['image']['id']}|{' '.join(state['caption']['tokens'])}/{method}/{contrast}"
        return state["results"][key]

    # upload a scene (the file input the drop zone also feeds)
    driver.find_element(By.ID, "upload").send_keys(str(upload))
    state = shown(0, "gradcam")
    picture = np.asarray(Image.open(upload).convert("RGB"))
    x = model.preprocessing.transform(Image.fromarray(picture))[None]
    with torch.no_grad():
        expected = decode_features(model, model.encode(x), model.vocab, max_length=12, beam_size=3)[0]
    tokens = state["caption"]["tokens"]
    assert tokens == expected.words and words() == tokens and len(tokens) >= 3
    heat_size = state["image"]["heat_size"]

    # click a word: its Grad-CAM map arrives equal to the library's, and the canvas shows it in the report's colours
    driver.find_elements(By.CSS_SELECTOR, "#words .word")[2].click()
    state = shown(2, "gradcam")
    result = arrived(state, "gradcam")
    assert result["sprite"] == sprite_of(model, picture, tokens, "gradcam", heat_size)
    assert np.array_equal(canvas_pixels(driver), coloured(result["sprite"], 2, heat_size, False))
    assert tokens[2] in driver.find_element(By.ID, "logprob").text
    alternatives = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#alternatives .alt")]
    assert len(alternatives) == 5 and tokens[2] in alternatives

    # switch method: LIME (a long one: progress, then the maps)
    driver.find_element(By.CSS_SELECTOR, "#methods input[value='lime']").click()
    state = shown(2, "lime")
    lime = arrived(state, "lime")
    assert lime["sprite"] == sprite_of(model, picture, tokens, "lime", heat_size)
    assert np.array_equal(canvas_pixels(driver), coloured(lime["sprite"], 2, heat_size, True))
    ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()                  # the keyboard walk
    shown(1, "lime")
    ActionChains(driver).send_keys(Keys.ARROW_UP).perform()                    # up: the method before LIME
    shown(1, "attention")

    # type a caption: teacher-forced, explained with the method in use
    driver.find_element(By.CSS_SELECTOR, "#methods input[value='gradcam']").click()
    typed = driver.find_element(By.ID, "typed")
    typed.clear()
    typed.send_keys("a small red circle")
    driver.find_element(By.ID, "explain-typed").click()
    wait.until(lambda _: words() == ["a", "small", "red", "circle"])
    state = shown(0, "gradcam")
    assert state["caption"]["source"] == "given"
    driver.find_elements(By.CSS_SELECTOR, "#words .word")[2].click()
    state = shown(2, "gradcam")
    assert arrived(state, "gradcam")["sprite"] == sprite_of(model, picture, ["a", "small", "red", "circle"], "gradcam",
                                                           heat_size)

    # ask a contrast: why "red" and not "blue"?
    foil = driver.find_element(By.ID, "foil")
    foil.send_keys("blue")
    driver.find_element(By.ID, "contrast-go").click()
    state = shown(2, "gradcam", "2:blue")
    contrasted = arrived(state, "gradcam", "2:blue")
    assert contrasted["sprite"] == sprite_of(model, picture, ["a", "small", "red", "circle"], "gradcam", heat_size,
                                             {2: "blue"})
    assert contrasted["sprite"] != arrived(state, "gradcam")["sprite"]
    (asked,) = contrasted["contrast"]
    difference = state["caption"]["log_probs"][2] - asked["log_prob"]
    wait.until(lambda _: f"= {difference:.3f}" in driver.find_element(By.ID, "logprob").text)
    assert "vs \u201cblue\u201d" in driver.find_element(By.ID, "logprob").text
    assert "contrasted" in driver.find_elements(By.CSS_SELECTOR, "#words .word")[2].get_attribute("class")
    screenshot = tmp_path / "serve.png"
    driver.set_window_size(1280, 1250)                    # the whole page: photo, words, controls, questions
    driver.save_screenshot(str(screenshot))
    with Image.open(screenshot) as shot:
        small = shot.convert("RGB").resize((shot.width // 2, shot.height // 2), Image.Resampling.LANCZOS)
        small.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(screenshot, optimize=True)
    if os.environ.get("CAPTIONLENS_SCREENSHOTS"):
        shutil.copy(screenshot, Path(os.environ["CAPTIONLENS_SCREENSHOTS"]) / "serve.png")
    driver.find_element(By.ID, "contrast-clear").click()
    shown(2, "gradcam")

    # click an alternative: the model goes on from that prefix
    choice = next(b for b in driver.find_elements(By.CSS_SELECTOR, "#alternatives .alt")
                  if b.text not in ("red", "(end the caption here)"))
    prefix = ["a", "small", choice.text]
    choice.click()
    wait.until(lambda _: words()[:3] == prefix and page_state()["caption"]["source"] == "generated")
    with torch.no_grad():
        continued = decode_features(model, model.encode(x), model.vocab, max_length=12, beam_size=3,
                                    prefix=[model.vocab(w) for w in prefix])[0]
    assert words() == continued.words

    # another beam, another gallery image
    from selenium.webdriver.support.ui import Select
    Select(driver.find_element(By.ID, "beam")).select_by_value("1")
    wait.until(lambda _: page_state()["caption"]["beam_size"] == 1 and page_state()["caption"]["prefix"] == 0)
    with torch.no_grad():
        greedy = decode_features(model, model.encode(x), model.vocab, max_length=12, beam_size=1)[0]
    assert words() == greedy.words
    driver.find_elements(By.CSS_SELECTOR, "#gallery .card")[1].click()
    wait.until(lambda _: page_state()["image"]["name"] == sorted(os.listdir(gallery))[1])
    assert driver.find_element(By.ID, "error").is_displayed() is False


def test_a_refused_upload_shows_its_message_and_the_page_goes_on(driver, served, scenes, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = served
    notes = tmp_path / "notes.png"
    notes.write_text("not an image at all")
    driver.get(base + "/")
    driver.find_element(By.ID, "upload").send_keys(str(notes))
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, 20).until(lambda _: error.is_displayed())
    assert "notes.png: cannot read image" in error.text
    driver.find_element(By.ID, "upload").send_keys(str(scenes[1]))
    WebDriverWait(driver, 20).until(lambda _: driver.find_elements(By.CSS_SELECTOR, "#words .word"))
    assert not error.is_displayed()
