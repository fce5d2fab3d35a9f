"""Input checks shared by the networks."""

from __future__ import annotations

from torch import Tensor

from ..checks import check_floating, shape_str


def check_image_and_mask(image: Tensor, mask: Tensor, *, multiple: int, hint: str = "") -> None:
    """``image`` is float ``(B, C, H, W)`` with H, W multiples of ``multiple``; ``mask`` ``(B, 1, H, W)``."""
    check_floating("image", image)
    if image.dim() != 4 or image.shape[2] % multiple or image.shape[3] % multiple:
        raise ValueError(
            f"image must be (B, C, H, W) with H and W multiples of {multiple}, got "
            f"{shape_str(image.shape)}{hint}"
        )
    if (
        not isinstance(mask, Tensor)
        or mask.dim() != 4
        or mask.shape[1] != 1
        or mask.shape[0] != image.shape[0]
        or mask.shape[2:] != image.shape[2:]
    ):
        got = shape_str(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        expected = shape_str((image.shape[0], 1, *image.shape[2:]))
        raise ValueError(f"mask must be {expected} to match image, got {got}")
