from __future__ import annotations

from torch import Tensor

from .._checks import (
    check_floating,
    check_mask_dtype,
    check_mask_values,
    check_same_device,
    check_tensor,
    shape_str,
)
from ..kernels import ops


def mask_product(x: Tensor, mask: Tensor) -> Tensor:
    """Hadamard product ``x ⊙ mask``, the primitive under every masked op in this package.

    The mask broadcasts to ``x`` (a pixel mask ``(B, 1, H, W)``, a channel mask ``(1, C, 1, 1)``, a
    per-output-channel weight mask ``(C_out, 1, 1, 1)`` or a full weight-shaped mask) and is never
    expanded in memory. The result has ``x``'s shape, dtype and layout. It is differentiable in ``x``
    and, for floating-point masks, in ``mask`` (the gradient is summed over broadcast dimensions). On
    CUDA it runs a single-pass Triton kernel; elsewhere, the pure-torch reference.

    Args:
        x: floating-point tensor.
        mask: bool, uint8 or floating-point tensor with values in [0, 1] (1 = keep) that broadcasts to
            ``x``'s shape.

    Returns:
        ``x ⊙ mask`` with ``x``'s shape and dtype.

    Shape:
        - x: ``(*)``
        - mask: any shape that broadcasts to ``x.shape`` without growing it
        - output: ``x.shape``

    Example:
        >>> x = torch.ones(2, 3, 4, 4)
        >>> mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
        >>> mask[..., :2] = True
        >>> mask_product(x, mask).sum().item()
        48.0
    """
    check_tensor("x", x)
    check_tensor("mask", mask)
    check_floating("x", x)
    check_mask_dtype("mask", mask)
    check_same_device("mask", mask, "x", x)
    if mask.dim() > x.dim() or any(
        m not in (1, s) for m, s in zip(reversed(mask.shape), reversed(x.shape))
    ):
        raise ValueError(
            f"mask of shape {shape_str(mask.shape)} does not broadcast to x of shape "
            f"{shape_str(x.shape)}"
        )
    check_mask_values("mask", mask)
    return ops.mask_product(x, mask)


__all__ = ["mask_product"]
