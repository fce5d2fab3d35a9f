"""Reading images from folders: any common format, converted to RGB, bad files reported not fatal."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file that cannot be decoded."""


def list_images(root: str | Path, *, argument: str = "root") -> list[Path]:
    """Image files under ``root`` (recursively, sorted, by suffix); a clear error naming
    ``argument`` for a missing folder or one without image files. Files with other suffixes are
    ignored."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{argument} must be an existing folder of images, got {str(root)!r}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{argument} {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: str | Path | BinaryIO, *, name: str | None = None) -> Tensor:
    """A float ``(3, H, W)`` RGB image in [0, 1], from a file or an open binary stream.

    EXIF orientation is applied; grey, grey+alpha, palette, RGBA (alpha dropped, not composited) and
    16-bit images are converted. Raises ``ImageReadError`` for a file that is not a readable image,
    naming ``name`` (default: the path).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    source = path if hasattr(path, "read") else Path(path)
    name = name or str(source)
    try:
        with Image.open(source) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float32)
                # 16-bit modes span 0..65535 even when the image is dark; a 32-bit "I" image
                # carries no range, so values above 255 are taken as 16-bit
                wide = image.mode != "I" or array.max() > 255
                scale = 65535.0 if wide else 255.0
                array = np.repeat((array / scale)[..., None], 3, axis=2)
            else:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(
            f"{name} is not a readable image ({type(err).__name__}: {err})"
        ) from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).clamp(0, 1).contiguous()


def readable_images(files: list[Path], *, strict: bool) -> list[Path]:
    """The files that decode. Bad ones raise when ``strict``, else are skipped with one warning.

    Every file is decoded once (JPEGs at reduced scale, which still reads all their data):
    ``Image.verify`` alone passes truncated JPEG, WebP, BMP and TIFF files, which would then fail
    in the middle of training.
    """
    from PIL import Image, UnidentifiedImageError

    good, bad = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                image.draft("RGB", (1, 1))  # JPEG only: decode at 1/8 scale
                image.load()
            good.append(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            if strict:
                raise ImageReadError(
                    f"{path} is not a readable image ({type(err).__name__}: {err}); "
                    "remove it or set strict=false to skip such files"
                ) from None
            bad.append(path)
    if bad:
        shown = ", ".join(p.name for p in bad[:5]) + (" ..." if len(bad) > 5 else "")
        log.warning("skipped %d unreadable image file(s) of %d: %s", len(bad), len(files), shown)
    if not good:
        where = f" under {os.path.commonpath([str(p.parent) for p in files])!r}" if files else ""
        raise ValueError(f"none of the {len(files)} image files{where} could be read")
    return good
