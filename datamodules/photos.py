"""Real photographs that the install brings (scikit-image, scikit-learn, matplotlib): no download.

The training photos are scikit-image's; the held-out ones, which the default inpainting job
validates on and never trains on, come from the other two packages, so a photo of either set can
never leak into the other by a change of split.
"""

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
    "motorcycle",  # the left view of scikit-image's stereo pair
)
GREY_PHOTOS = ("brick", "camera", "clock", "coins", "grass", "gravel", "moon")
BUNDLED_PHOTOS = COLOR_PHOTOS + GREY_PHOTOS
# Colour photographs from scikit-learn (``china``, ``flower``, 427 x 640) and matplotlib
# (``grace_hopper``, 600 x 512): the default job's validation set, outside its training photos.
HELD_OUT_PHOTOS = ("china", "flower", "grace_hopper")


def _photo_array(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    if name == "grace_hopper":
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
            return np.array(image.convert("RGB"))
    import skimage.data  # deferred: importing skimage costs about a second

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    return np.asarray(getattr(skimage.data, name)())


def load_bundled_photo(name: str, size: int | None = None) -> Tensor:
    """One bundled photo as a float ``(3, H, W)`` tensor in [0, 1].

    Args:
        name: one of ``BUNDLED_PHOTOS`` or ``HELD_OUT_PHOTOS``.
        size: if given, resize the shorter side to ``size`` (antialiased) and centre-crop a square.

    Example:
        >>> load_bundled_photo("camera", size=64).shape
        torch.Size([3, 64, 64])
    """
    if name not in BUNDLED_PHOTOS + HELD_OUT_PHOTOS:
        raise ValueError(
            f"name must be one of {list(BUNDLED_PHOTOS + HELD_OUT_PHOTOS)}, got {name!r}"
        )
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    array = _photo_array(name)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    image = torch.from_numpy(np.array(array[..., :3])).permute(2, 0, 1).float() / 255
    if size is None:
        return image
    return resize_square(image, size)


def resize_square(image: Tensor, size: int) -> Tensor:
    """``image`` ``(3, H, W)`` with its shorter side resized to ``size`` (antialiased bilinear),
    the centre square of it."""
    h, w = image.shape[1:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        image = F.interpolate(
            image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[:, top : top + size, left : left + size].clamp(0, 1).contiguous()
