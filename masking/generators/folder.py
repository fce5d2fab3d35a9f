from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import MaskGenerator

MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _check_mask_reading(holes_are_white: object, threshold: object) -> None:
    # a string such as "false" would read as True, silently swapping holes and valid pixels
    if not isinstance(holes_are_white, bool):
        raise TypeError(f"holes_are_white must be a bool, got {holes_are_white!r}")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold < 1
    ):
        raise ValueError(f"threshold must be a grey level in [0, 1), got {threshold!r}")


def load_mask_file(
    path: str | Path, *, holes_are_white: bool = False, threshold: float = 0.5
) -> Tensor:
    """A mask image as a bool ``(H, W)`` tensor of holes.

    White (bright) pixels are valid by default; pass ``holes_are_white=True`` for datasets where
    white marks the hole (the NVIDIA irregular-mask set, for instance). Colour images are read as
    grey and an alpha channel is ignored; grey levels (anti-aliased edges, JPEG noise) are split at
    ``threshold`` in [0, 1): brighter is white. A file holding only the values 0 and 1 (a bool
    array saved as 8-bit) is read with 1 as white, with a warning. Raises ``ValueError`` naming the
    file when it is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    _check_mask_reading(holes_are_white, threshold)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mask file {path} does not exist")
    try:
        with Image.open(path) as image:
            grey = torch.frombuffer(bytearray(image.convert("L").tobytes()), dtype=torch.uint8)
            grey = grey.view(image.height, image.width)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"mask file {path} is not a readable image ({type(err).__name__}: {err})"
        ) from None
    if grey.max() == 1:  # 0 and 1 only: a bool array saved as 8-bit, whose 1 is the bright value
        warnings.warn(
            f"mask file {path} holds only the values 0 and 1: read 1 as white, 0 as black",
            UserWarning,
            stacklevel=2,
        )
        bright = grey == 1
    else:
        bright = grey.float() / 255 > threshold
    return bright if holes_are_white else ~bright


class FolderMasks(MaskGenerator):
    """Masks read from image files under ``root`` (recursively), one drawn per image.

    Each file is resized to the requested size (nearest neighbour, so it stays binary): a mask of
    another size than the images is stretched to fit, not rejected. Files are read once and kept in
    memory at their own size; an unreadable one raises ``ValueError`` naming it when drawn.

    Args:
        root: folder of mask images.
        holes_are_white: read white as hole instead of valid.
        threshold: grey level in [0, 1) above which a pixel is white.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        holes_are_white: bool = False,
        threshold: float = 0.5,
        hole_ratio: tuple[float, float] | None = None,
        max_tries: int = 50,
        ramp_start: float = 1.0,
    ) -> None:
        super().__init__(hole_ratio=hole_ratio, max_tries=max_tries, ramp_start=ramp_start)
        _check_mask_reading(holes_are_white, threshold)
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root must be an existing folder of mask images, got {str(root)!r}")
        self.files = sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in MASK_SUFFIXES
        )
        if not self.files:
            raise ValueError(
                f"root {str(root)!r} holds no mask images ({', '.join(MASK_SUFFIXES)})"
            )
        self.holes_are_white = holes_are_white
        self.threshold = float(threshold)
        self._cache: dict[int, Tensor] = {}

    def holes(self, height, width, scale, generator, device) -> Tensor:
        index = int(torch.randint(len(self.files), (), generator=generator))
        if index not in self._cache:
            self._cache[index] = load_mask_file(
                self.files[index], holes_are_white=self.holes_are_white, threshold=self.threshold
            )
        canvas = self._cache[index]
        if canvas.shape != (height, width):
            canvas = F.interpolate(canvas[None, None].float(), size=(height, width), mode="nearest")
            canvas = canvas[0, 0] > 0.5
        return canvas.to(device)

    def extra_repr(self) -> str:
        return f"root={str(self.root)!r}, files={len(self.files)}, holes_are_white={self.holes_are_white}"
