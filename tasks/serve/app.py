"""The inpainting page: a Starlette app serving one HTML page and one ``POST /inpaint``.

The page (``page.html``, no external resources) opens a photo, lets the user paint the holes with a
brush, and posts the original file and a mask PNG of the strokes (white = hole, at the image's own
size). The reply is the inpainted PNG at that size, its known pixels the upload's own 8-bit values
(``inference.inpaint_8bit``, the path ``task=predict`` takes, tiles for large images included). A
bad upload gets ``{"error": "..."}`` with a 4xx status and one line the page shows; nothing the
user sends reaches a traceback on the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from torch import nn

from datamodules.images import ImageReadError, read_image

from ..modules.inference import OVERLAP, TILE, inpaint_8bit
from ..runtime.files import encode_png

log = logging.getLogger(__name__)

__all__ = ["BadUpload", "make_app"]


class BadUpload(ValueError):
    """An upload the server refuses, with the HTTP status to answer and a one-line reason."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


_ORIENTATION = 0x0112  # the EXIF tag that read_image applies, as browsers do


def _image_size(data: bytes, what: str, max_pixels: int) -> tuple[int, int]:
    """Width and height as shown (EXIF orientation applied), from the header alone, so a huge
    image is refused before it is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.getexif().get(_ORIENTATION) in (5, 6, 7, 8):  # shown turned by 90°
                width, height = height, width
    except Image.DecompressionBombError:
        raise BadUpload(f"the {what} is too large", 413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadUpload(
            f"the {what} is not an image this server can read (PNG, JPEG, WebP, ...)"
        ) from None
    if width * height > max_pixels:
        raise BadUpload(
            f"the {what} is {width}×{height} = {width * height / 1e6:.3g} megapixels; this server "
            f"takes at most {max_pixels / 1e6:.3g} (task.max_megapixels)",
            413,
        )
    return width, height


def _holes(data: bytes, size: tuple[int, int]) -> torch.Tensor:
    """The painted mask (bright = hole) as a bool ``(H, W)`` tensor at the image's size."""
    try:
        with Image.open(io.BytesIO(data)) as mask:
            mask_size = mask.size
            grey = mask.convert("L").tobytes() if mask_size == size else b""
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadUpload("the mask is not a readable PNG") from None
    if mask_size != size:
        raise BadUpload(
            f"the mask is {mask_size[0]}×{mask_size[1]} px but the image is {size[0]}×{size[1]} px"
        )
    holes = torch.frombuffer(bytearray(grey), dtype=torch.uint8).view(size[1], size[0]) > 127
    if not holes.any():
        raise BadUpload("nothing is painted: paint over what should be filled in, then inpaint")
    return holes


async def _field(form, name: str) -> bytes:
    value = form.get(name)
    if not isinstance(value, UploadFile):
        raise BadUpload(f"the request has no {name} file (the page sends image and mask)")
    return await value.read()


def make_app(
    net: nn.Module,
    *,
    max_upload_mb: float = 50,
    max_megapixels: float = 40,
    tile: int = TILE,
    overlap: int = OVERLAP,
) -> Starlette:
    """The app for ``net`` (an inpainting network in eval mode). Uploads above ``max_upload_mb``
    (both files together) or images above ``max_megapixels`` are refused with 413."""
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    max_bytes = int(max_upload_mb * 1e6)
    max_pixels = int(max_megapixels * 1e6)
    # one inpainting at a time (each already uses every torch thread), on a thread of our own that
    # is joined when the server stops: torch work left on a pool's thread at interpreter exit
    # aborted the process ("terminate called without an active exception")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inpaint")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            executor.shutdown(wait=True)

    def work(image_data: bytes, mask_data: bytes, name: str) -> bytes:
        size = _image_size(image_data, "photo", max_pixels)
        holes = _holes(mask_data, size)
        try:
            image = read_image(io.BytesIO(image_data), name=name)
        except ImageReadError as err:
            raise BadUpload(str(err)) from None
        filled = inpaint_8bit(net, image, holes, tile=tile, overlap=overlap)
        return encode_png(filled)

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def inpaint(request: Request) -> Response:
        try:
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                raise BadUpload("the upload has no length; send it from the page", 411)
            if int(length) > max_bytes:
                raise BadUpload(
                    f"the upload is {int(length) / 1e6:.3g} MB; this server takes at most "
                    f"{max_bytes / 1e6:.3g} MB (task.max_upload_mb)",
                    413,
                )
            async with request.form(max_files=2, max_fields=4, max_part_size=max_bytes) as form:
                image_data = await _field(form, "image")
                mask_data = await _field(form, "mask")
                name = Path(getattr(form.get("image"), "filename", None) or "image").name
            loop = asyncio.get_running_loop()
            png = await loop.run_in_executor(executor, work, image_data, mask_data, name)
        except BadUpload as err:
            log.info("refused an upload: %s", err)
            return JSONResponse({"error": str(err)}, status_code=err.status)
        except HTTPException as err:  # Starlette's own refusal: a malformed multipart body
            return JSONResponse(
                {"error": f"the upload could not be read ({err.detail})"},
                status_code=err.status_code,
            )
        except Exception as err:  # the page gets one line; the log keeps the traceback
            log.exception("inpainting failed")
            return JSONResponse(
                {"error": f"the server could not inpaint this image ({type(err).__name__})"},
                status_code=500,
            )
        return Response(png, media_type="image/png")

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route("/", index),
        Route("/inpaint", inpaint, methods=["POST"]),
        Route("/health", health),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
