"""The inpainting page in a real browser: headless Chromium opens a photo, draws brush strokes on
the canvas, inpaints, and gets back an image of the photo's size whose pixels away from the strokes
are the photo's own. Skipped, with the reason, where Chromium is not installed (.ci/run installs
it)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from masking.models import PConvUNet
from tests.helpers.browser import chromium, inpaint_on_page, missing_browser
from tests.helpers.models import inpaint_checkpoint
from tests.helpers.serve import serving
from tests.hydra_config import REPO

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))

STROKES = [[(40, 60), (120, 70), (180, 120)], [(200, 30), (210, 150)], [(70, 150)]]
BRUSH = 16


def stroke_region(shape, strokes, radius) -> np.ndarray:
    """Every pixel within ``radius`` of a stroke's polyline."""
    h, w = shape
    path = np.zeros((h, w), bool)
    for points in strokes:
        for (x0, y0), (x1, y1) in zip(points, points[1:] or points):
            for t in np.linspace(0, 1, 200):
                path[round(y0 + t * (y1 - y0)), round(x0 + t * (x1 - x0))] = True
    return ndimage.distance_transform_edt(~path) <= radius


def test_strokes_drawn_in_the_browser_are_inpainted_and_nothing_else_changes(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (180, 260, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    net = PConvUNet(depth=3, base_width=8, max_width=32).eval()
    with serving(net) as url, chromium() as driver:
        result = inpaint_on_page(driver, url, path, STROKES, BRUSH)
        message = driver.find_element("id", "message").text
        driver.save_screenshot(str(tmp_path / "page.png"))
    out = np.asarray(Image.open(io.BytesIO(result)).convert("RGB"))
    assert out.shape == image.shape, "the result is not at the photo's own size"
    changed = (out != image).any(axis=2)
    near = stroke_region(image.shape[:2], STROKES, BRUSH / 2 + 2)  # the brush's edge, antialiased
    assert not changed[~near].any(), "pixels away from the strokes changed"
    core = stroke_region(image.shape[:2], STROKES, BRUSH / 2 - 2)
    assert changed[core].mean() > 0.9, "the painted pixels were not inpainted"
    assert message.startswith("Done")
    assert (tmp_path / "page.png").stat().st_size > 0


def test_the_docs_screenshot_script_writes_a_picture_of_the_page(tmp_path):
    checkpoint = inpaint_checkpoint(tmp_path / "last.ckpt")
    out = tmp_path / "serve.png"
    command = [
        sys.executable,
        "docs/serve_screenshot.py",
        "--ckpt",
        str(checkpoint),
        "--out",
        str(out),
    ]
    # generous: Python, torch and Chromium start in seconds, more on a loaded machine
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(out) as picture:
        assert picture.size == (1400, 620)
