"""The report in a real headless Chromium: open an image, pick words and methods, check what is drawn.

Skipped when /usr/bin/chromium or /usr/bin/chromedriver is missing, unless CAPTIONLENS_REQUIRE_BROWSER=1
(CI), where a missing browser fails the test. The final screenshot is saved under the test's tmp_path.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from viz_synthetic import blob_centre, make

from captionlens.viz import write_report

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1100,900")
IMAGE_HW = (96, 128)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        message = (f"browser test needs {' and '.join(missing)} "
                   "(Debian: apt-get install chromium chromium-driver; pip install selenium)")
        if os.environ.get("CAPTIONLENS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CAPTIONLENS_REQUIRE_BROWSER=1 but the browser is required and missing: {message}")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()


def canvas_pixels(browser) -> np.ndarray:
    """The overlay canvas read back through toDataURL (fails if the canvas were tainted)."""
    url = browser.execute_script("return document.getElementById('overlay').toDataURL('image/png');")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_words_methods_and_keys_drive_the_overlay(driver, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    expl = make(7, shape=IMAGE_HW, methods=("gradcam", "lime", "occlusion"))
    index = write_report([make(3), expl], tmp_path / "report", image_names=["first.jpg", "second.jpg"],
                         heat_size=64)
    driver.get(index.as_uri())
    overlay = driver.find_element(By.ID, "overlay")

    def shown(word: int, method: str) -> None:
        WebDriverWait(driver, 5).until(lambda _: (overlay.get_attribute("data-word-index"),
                                                  overlay.get_attribute("data-method")) == (str(word), method))

    driver.find_elements(By.CSS_SELECTOR, ".card")[1].click()
    shown(0, "gradcam")
    words = driver.find_elements(By.CSS_SELECTOR, "#words .word")
    assert [w.text for w in words] == expl.tokens and [w.get_attribute("data-index") for w in words] == [
        str(i) for i in range(7)]

    words[3].click()
    shown(3, "gradcam")
    logprob = driver.find_element(By.ID, "logprob").text
    assert expl.tokens[3] in logprob and f"{expl.log_probs[3]:.3f}" in logprob
    assert words[3].get_attribute("aria-pressed") == "true"
    gradcam_3 = canvas_pixels(driver)
    cy, cx = (c // 2 for c in blob_centre(3, IMAGE_HW))          # heat is stored at half resolution here
    assert gradcam_3.shape == (48, 64, 3)
    red, green, blue = gradcam_3[cy, cx].astype(int)
    assert red > 100 and green < 30 and blue < 30                 # jet's top colour at the word's blob
    assert tuple(gradcam_3[47, 0]) == (0, 0, 128)                 # jet's bottom colour far away from it

    ActionChains(driver).move_to_element(words[5]).perform()      # hover previews another word ...
    shown(5, "gradcam")
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "photo")).perform()
    shown(3, "gradcam")                                           # ... and leaving restores the selection

    driver.find_element(By.CSS_SELECTOR, "#methods input[value='lime']").click()
    shown(3, "lime")
    lime_3 = canvas_pixels(driver)
    assert not np.array_equal(lime_3, gradcam_3)

    ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()
    shown(4, "lime")
    assert expl.tokens[4] in driver.find_element(By.ID, "logprob").text
    assert words[4].get_attribute("aria-pressed") == "true"
    lime_4 = canvas_pixels(driver)
    assert np.abs(lime_4.astype(int) - lime_3.astype(int)).max() > 100   # a different word, a different map
    ActionChains(driver).send_keys(Keys.ARROW_DOWN).perform()
    shown(4, "occlusion")

    screenshot = tmp_path / "report-screenshot.png"
    driver.find_element(By.ID, "viewer").screenshot(str(screenshot))
    print(f"report screenshot: {screenshot}")
    assert screenshot.stat().st_size > 1000


def test_a_page_of_ten_thousand_images_loads_few_thumbnails_and_opens_the_last(driver, tmp_path: Path) -> None:
    """A generated run of 10,000 images, as `captionlens explain` lays it out (entries pointing into the
    image folders): the page loads, lazy-loads only the thumbnails in view, filters, and opens image 10,000."""
    import dataclasses

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from captionlens.viz.report import Sizes, write_entry, write_page

    base = make(3, shape=(16, 16), methods=("gradcam",))
    last = dataclasses.replace(base, tokens=["zebra", "on", "grass"])
    entries = []
    for i in range(10_000):
        stem = f"img{i:05d}"
        entry = write_entry(last if i == 9_999 else base, tmp_path / "run" / stem / "report", stem, Sizes(heat=16))
        entries.append(entry.placed(stem, f"{stem}/report"))
    index = write_page(entries, tmp_path / "run")
    driver.get(index.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    cards = driver.find_elements(By.CSS_SELECTOR, "#gallery .card")
    assert len(cards) == 10_000
    loaded = "return [...document.querySelectorAll('#gallery img')].filter(img => img.naturalWidth > 0).length;"
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(loaded) > 0)
    assert driver.execute_script(loaded) < 500  # lazy: the thumbnails in view, not 10,000 images

    search = driver.find_element(By.ID, "filter")
    search.send_keys("zebra")
    visible = driver.execute_script("return [...document.querySelectorAll('#gallery li')].filter(li => !li.hidden)"
                                    ".map(li => li.textContent);")
    assert visible == ["zebra on grass"]
    driver.execute_script("document.querySelector('[data-entry=\"9999\"]').click();")
    overlay = driver.find_element(By.ID, "overlay")
    WebDriverWait(driver, 10).until(lambda _: overlay.get_attribute("data-word-index") == "0")
    assert [w.text for w in driver.find_elements(By.CSS_SELECTOR, "#words .word")] == ["zebra", "on", "grass"]
    assert driver.find_element(By.ID, "viewer-title").text.startswith("img09999")
