"""Debian's Chromium driven by Selenium (its own chromedriver): the page tests and screenshots."""

from __future__ import annotations

import os
import shutil

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1280,900")  # fmt: skip


def missing() -> str | None:
    """Why no browser can be started here, or None."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return ("Debian's chromium and chromium-driver are not installed (.ci/run installs them: "
                "apt-get install chromium chromium-driver)")  # fmt: skip
    return None


def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def search_on_page(browser, url: str, photo: str, min_score: str = "0.5", timeout: int = 120):
    """Open the page, set the score floor, pick ``photo``, wait for the results; the result
    thumbnails (loaded)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    field = browser.find_element(By.ID, "minscore")
    field.clear()
    field.send_keys(min_score)
    browser.find_element(By.ID, "file").send_keys(os.path.abspath(photo))
    WebDriverWait(browser, timeout).until(
        lambda b: b.execute_script("return document.body.dataset.done === '1'")
    )
    results = browser.find_elements(By.CSS_SELECTOR, ".result img")
    WebDriverWait(browser, 60).until(
        lambda b: all(b.execute_script("return arguments[0].complete && "
                                       "arguments[0].naturalWidth > 0", im) for im in results)
    )  # fmt: skip
    return results
