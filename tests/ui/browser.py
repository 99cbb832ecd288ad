"""Headless Debian Chromium driven by selenium through Debian's chromedriver; never downloads a
browser or a driver (Selenium Manager is kept offline)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
DRIVER_NAMES = ("chromedriver",)


def find(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in extra if Path(p).is_file()), None)


def chromium_path() -> str | None:
    return os.environ.get("TOV_CHROMIUM") or find(CHROMIUM_NAMES)


def chromedriver_path() -> str | None:
    return os.environ.get("TOV_CHROMEDRIVER") or find(
        DRIVER_NAMES, ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver")
    )


@contextmanager
def headless_chromium(profile: Path, width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A fresh headless Chromium with its own profile and browser console logging on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path() or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--mute-audio",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver_path()))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """Browser console entries of level SEVERE (JS errors, failed loads) since the last call."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def browser_or_skip(profile: Path, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium for a module's tests, or a skip that names what to install (CI
    installs both: .ci/run)."""
    import pytest

    if not chromium_path() or not chromedriver_path():
        pytest.skip(
            "Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
        )
    pytest.importorskip("selenium", reason="selenium is not installed (pip install .[test])")
    with headless_chromium(profile, height=height) as driver:
        yield driver
