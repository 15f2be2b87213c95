"""Drive a written viewer in headless Chromium, for the tests and ``benchmarks/view_frames.py``.

Uses Selenium (the ``test`` extra) with the system's Chromium and chromedriver found on the
``PATH`` (Debian: ``apt-get install chromium chromium-driver``); both paths are given to
Selenium, so it never tries to download a browser or a driver. The page is opened as a user
would open it, with file:// at its default restrictions. With ``--disable-gpu`` Chromium renders
WebGL in software (SwiftShader), where the viewer's ``page.renderer=auto`` draws on a 2-D canvas.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CHROMEDRIVER", "CHROMIUM", "WINDOW", "browser_missing", "chromium", "open_viewer"]

CHROMIUM = "chromium"  # the browser's and the driver's program names (Debian's packages)
CHROMEDRIVER = "chromedriver"
WINDOW = (1280, 900)  # CSS pixels of the headless window
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",  # WebGL on the CPU when there is no GPU
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-device-scale-factor=1",
)


def browser_missing() -> str | None:
    """Why the viewer cannot be driven here (no Chromium, chromedriver or Selenium), or None."""
    for name in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(name) is None:
            return f"{name} not found on the PATH (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator:
    """A headless Chromium WebDriver with a fresh profile, console messages logged
    (``driver.get_log("browser")``); quit and its profile removed on leaving."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ttvis-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={window[0]},{window[1]}")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_viewer(driver, index: str | Path, timeout: float = 30.0, query: str = "") -> dict:
    """Load ``index`` (an index.html) from ``file://`` (``query``: e.g. ``"renderer=canvas"``) and
    wait until the page has read all its data; return ``window.ttvisView.state()``."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(Path(index).resolve().as_uri() + (f"?{query}" if query else ""))
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "return !!window.ttvisView && (window.ttvisView.state().ready "
            "|| window.ttvisView.state().errors.length > 0)"
        )
    )
    return driver.execute_script("return window.ttvisView.state()")
