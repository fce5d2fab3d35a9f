"""The screenshot of the inpainting page in docs/deployment.md: a checkpoint served, a photo the
network never trained on (scikit-learn's bundled ``flower.jpg``) opened in headless Chromium,
strokes painted with the pointer, the result shown.

    python docs/serve_screenshot.py --ckpt outputs/inpaint/<date>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sklearn.datasets import load_sample_images

from tasks.runtime.checkpoints import load_inpainting_network
from tests.helpers.browser import chromium, inpaint_on_page, missing_browser
from tests.helpers.serve import serving

REPO = Path(__file__).resolve().parent.parent

# three strokes over the flower's petals and the background, in image pixels of the 640×427 photo
STROKES = [
    [(300, 120), (360, 150), (420, 140)],
    [(180, 300), (240, 330), (300, 320)],
    [(520, 60), (560, 120)],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a task=inpaint checkpoint")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "serve.png")
    args = parser.parse_args()
    if missing_browser():
        sys.exit(f"error: {missing_browser()}")
    photo = next(p for p in map(Path, load_sample_images().filenames) if p.name == "flower.jpg")
    net = load_inpainting_network(args.ckpt)
    with serving(net) as url, chromium(1400, 620) as driver:
        inpaint_on_page(driver, url, photo, STROKES, brush=22)
        driver.save_screenshot(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
