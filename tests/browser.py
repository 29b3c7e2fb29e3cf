"""A real headless browser for the dashboard tests: Debian's chromium driven through chromedriver."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import not_run

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--enable-unsafe-swiftshader",
)


def start_browser() -> Any:
    """A Selenium Chrome session on /usr/bin/chromium (reported as not run where it is missing)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        not_run("Debian's chromium and chromium-driver are not installed (the README's test command installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "the page") -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # an element not there yet, a page still loading
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.1)


def screenshot_is_not_blank(browser: Any, path: Path) -> None:
    """Save a screenshot and check it shows something: many colours, not one background."""
    from PIL import Image

    browser.save_screenshot(str(path))
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 20, f"{path.name} looks blank ({len(colours)} colours)"
