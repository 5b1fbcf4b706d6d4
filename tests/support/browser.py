"""Headless Chromium driven by Selenium through Debian's chromedriver (no browser download), for tests
of the web page against the real stack."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60


def require_chromium() -> None:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are needed (scripts/test.sh installs them with apt)")


@contextmanager
def chromium(profile: Path, width: int = 1280, height: int = 900) -> Iterator:
    """A headless Chromium with a fresh profile, offline flags, and the console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition: Callable, message: str, timeout: float = WAIT_S):
    """Waits until `condition(driver)` is truthy (it polls the page; the page's own work sets the pace).
    The page redraws its tables every two seconds, so an element found may be gone when read: that
    poll just counts as not yet."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, message)


def text_of(driver, css: str) -> str:
    """The text of the first element `css` selects, read in one step (no element handle to go stale)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css)


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
