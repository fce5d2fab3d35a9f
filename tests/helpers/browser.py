"""Headless Chromium (Debian's chromium and chromedriver) driving the inpainting page, as a user:
open a photo, draw strokes with the pointer, press Inpaint, read back what the page shows."""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# the machine's network is closed: Chromium's background connections would only fail and retry
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            return f"{path} not found: install Debian's {package} (apt-get install {package})"
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        # the window size includes the browser's own frame: fix the page's viewport instead
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        try:
            yield driver
        finally:
            driver.quit()


def draw(driver, strokes: Sequence[Sequence[tuple[int, int]]], brush: int) -> None:
    """Each stroke a pointer drag through its points, in image pixels (the page shows the photo at
    its own size when it fits, so they are also CSS pixels from the canvas's top left)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    slider = driver.find_element(By.ID, "size")
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
        slider,
        brush,
    )
    canvas = driver.find_element(By.ID, "strokes")
    left = -canvas.size["width"] / 2  # ActionChains offsets count from the element's centre
    top = -canvas.size["height"] / 2
    for points in strokes:
        actions = ActionChains(driver, duration=20)
        (x0, y0), rest = points[0], points[1:]
        actions.move_to_element_with_offset(canvas, left + x0, top + y0).click_and_hold()
        for x, y in rest:
            actions.move_to_element_with_offset(canvas, left + x, top + y)
        actions.release().perform()


def inpaint_on_page(
    driver, url: str, photo: Path, strokes, brush: int, *, timeout: float = 300
) -> bytes:
    """Open ``photo`` on the page at ``url``, draw ``strokes``, inpaint; the result PNG's bytes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    driver.find_element(By.ID, "file").send_keys(str(photo))
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: d.find_element(By.ID, "strokes").get_attribute("width") not in ("0", None))
    draw(driver, strokes, brush)
    button = driver.find_element(By.ID, "inpaint")
    wait.until(lambda d: button.is_enabled())
    button.click()
    wait.until(ready.visibility_of_element_located((By.ID, "result")))
    wait.until(lambda d: d.execute_script("return document.getElementById('result').naturalWidth"))
    encoded = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById("result").src).then((r) => r.blob()).then((blob) => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result.split(",")[1]);
          reader.readAsDataURL(blob);
        });
        """
    )
    return base64.b64decode(encoded)
