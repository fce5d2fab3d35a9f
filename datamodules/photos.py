"""Real photographs shipped inside scikit-image, so the default jobs need no download."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Colour photographs, then grey ones (converted to RGB by repeating the channel). Drawings, text
# pages and binary images in skimage.data are left out; so is `cat`, the same photo as `chelsea`.
COLOR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
GREY_PHOTOS = ("brick", "camera", "clock", "coins", "grass", "gravel", "moon")
BUNDLED_PHOTOS = COLOR_PHOTOS + GREY_PHOTOS


def load_bundled_photo(name: str, size: int | None = None) -> Tensor:
    """One bundled photo as a float ``(3, H, W)`` tensor in [0, 1].

    Args:
        name: one of ``BUNDLED_PHOTOS``.
        size: if given, resize the shorter side to ``size`` (antialiased) and centre-crop a square.

    Example:
        >>> load_bundled_photo("camera", size=64).shape
        torch.Size([3, 64, 64])
    """
    if name not in BUNDLED_PHOTOS:
        raise ValueError(f"name must be one of {list(BUNDLED_PHOTOS)}, got {name!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    import skimage.data  # deferred: importing skimage costs about a second

    array = np.asarray(getattr(skimage.data, name)())
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    image = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float() / 255
    if size is None:
        return image
    h, w = image.shape[1:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    image = F.interpolate(
        image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[:, top : top + size, left : left + size].clamp(0, 1).contiguous()
