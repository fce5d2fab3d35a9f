"""The page's endpoint on a real server: the result at the photo's size with its known pixels
unchanged (large photos in tiles too), and every bad upload answered with one line and a 4xx."""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from PIL import Image

from masking.models import PConvUNet
from tests.helpers.models import inpaint_checkpoint
from tests.helpers.serve import serving
from tests.hydra_config import REPO, error_line, run_cli


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def strokes(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : h // 2, w // 5 : w // 2] = 255  # painted = hole
    mask[h - 8 :, :6] = 255
    return mask


@pytest.fixture(scope="module")
def net():
    return PConvUNet(depth=3, base_width=8, max_width=32).eval()


def post(url: str, image: bytes, mask: bytes | None, name: str = "photo.png"):
    files = {"image": (name, image)}
    if mask is not None:
        files["mask"] = ("mask.png", mask)
    return requests.post(url + "inpaint", files=files, timeout=300)


@pytest.mark.parametrize("tile", [1024, 48], ids=["whole", "tiled"])
def test_the_result_has_the_photos_size_and_its_known_pixels(net, tile):
    image, mask = photo(75, 101), strokes(75, 101)
    with serving(net, tile=tile, overlap=16) as url:
        assert "Inpaint a photo" in requests.get(url, timeout=60).text
        reply = post(url, png(image), png(mask))
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(reply.content)).convert("RGB"))
    assert out.shape == image.shape
    known = mask == 0
    assert (out[known] == image[known]).all()
    assert (out[~known] != image[~known]).any(axis=1).mean() > 0.5


def test_a_jpeg_with_exif_rotation_comes_back_upright(net):
    image = photo(40, 64)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: the browser shows it 40 wide, 64 high, and paints on that
    Image.fromarray(image).save(buffer, "JPEG", quality=95, exif=exif)
    with serving(net) as url:
        reply = post(url, buffer.getvalue(), png(strokes(64, 40)), "photo.jpg")
    assert reply.status_code == 200, reply.text
    assert Image.open(io.BytesIO(reply.content)).size == (40, 64)


def test_bad_uploads_get_one_line_and_a_client_error(net):
    image = photo(40, 48)
    good = png(image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG")
    truncated = buffer.getvalue()[: buffer.tell() // 2]  # its header reads; its pixels do not
    with serving(net, max_megapixels=0.002, max_upload_mb=0.05) as url:
        cases = {
            "not an image": (
                post(url, b"GIF89a-not-really", png(strokes(40, 48))),
                400,
                "is not an image",
            ),
            "truncated": (post(url, truncated, png(strokes(40, 48))), 400, "not a readable image"),
            "mask of another size": (
                post(url, good, png(strokes(20, 48))),
                400,
                "the mask is 48×20 px but the image is 48×40 px",
            ),
            "nothing painted": (
                post(url, good, png(np.zeros((40, 48), np.uint8))),
                400,
                "nothing is painted",
            ),
            "no mask": (post(url, good, None), 400, "the request has no mask file"),
            "mask not an image": (
                post(url, good, b"\x00" * 10),
                400,
                "the mask is not a readable PNG",
            ),
            "too many pixels": (
                post(url, png(photo(60, 60)), png(strokes(60, 60))),
                413,
                "60×60 = 0.0036 megapixels; this server takes at most 0.002",
            ),
            "too many bytes": (
                post(url, png(photo(40, 48)) + b"\x00" * 60_000, png(strokes(40, 48))),
                413,
                "this server takes at most 0.05 MB",
            ),
        }
        broken = requests.post(
            url + "inpaint",
            data=b"--x\r\nnot a part",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
            timeout=60,
        )
        cases["malformed multipart"] = (broken, 400, "the upload could not be read")
    for name, (reply, status, text) in cases.items():
        assert reply.status_code == status, (name, reply.text)
        message = reply.json()["error"]
        assert text in message and "\n" not in message and "Traceback" not in message, name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return inpaint_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt")


def test_task_serve_serves_the_page_until_interrupted(tmp_path, checkpoint):
    port = free_port()
    command = [
        sys.executable,
        "run.py",
        "task=serve",
        f"ckpt_path={checkpoint}",
        f"task.port={port}",
    ]
    process = subprocess.Popen(
        [*command, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # generous: starting Python, torch and the network takes seconds, more on a loaded machine
        deadline = time.monotonic() + 300
        while True:
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.5)
        assert page.status_code == 200 and "Inpaint a photo" in page.text
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-2000:]
    assert f"inpainting page at http://127.0.0.1:{port}/" in output


def test_task_serve_on_a_busy_port_is_one_line(tmp_path, checkpoint):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = run_cli(
            "task=serve",
            f"ckpt_path={checkpoint}",
            f"task.port={port}",
            f"hydra.run.dir={tmp_path}",
        )
    assert f"task.host/task.port 127.0.0.1:{port} cannot be served" in error_line(result)


def test_task_serve_without_a_checkpoint_is_one_line(tmp_path):
    result = run_cli("task=serve", f"hydra.run.dir={tmp_path}")
    assert "ckpt_path is required for task=serve" in error_line(result)
