from __future__ import annotations

import torch
from torch import Tensor

from ..checks import (
    check_floating,
    check_mask_dtype,
    check_mask_values,
    check_same_device,
    check_tensor,
    shape_str,
    value_checks_active,
)
from ..kernels import ops, reference


class PackedMask:
    """A 0/1 mask stored 8 entries per byte along its last dimension: 1/8 of a bool mask's memory.

    Build it with :func:`pack_mask`; pass it to :func:`mask_product` like any mask. Broadcasting
    follows the unpacked shape.

    Attributes:
        bits: uint8 tensor, the mask's shape with the last dimension ``ceil(L / 8)``.
        shape: the unpacked mask's shape.
    """

    def __init__(self, bits: Tensor, shape: tuple[int, ...]) -> None:
        self.bits = bits
        self.shape = torch.Size(shape)

    @property
    def device(self) -> torch.device:
        return self.bits.device

    def unpack(self) -> Tensor:
        """The bool mask."""
        return reference.unpack_bits(self.bits, self.shape[-1])

    def to(self, device: torch.device | str) -> PackedMask:
        return PackedMask(self.bits.to(device), tuple(self.shape))

    def __repr__(self) -> str:
        return f"PackedMask(shape={shape_str(self.shape)}, device={self.device})"


def pack_mask(mask: Tensor) -> PackedMask:
    """Pack a bool or 0/1 mask (at least 1-D) into a :class:`PackedMask`, least significant bit first.

    Example:
        >>> packed = pack_mask(torch.tensor([[1, 0, 1]], dtype=torch.bool))
        >>> packed.bits.tolist(), mask_product(torch.ones(2, 3), packed).tolist()
        ([[5]], [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    """
    check_tensor("mask", mask)
    check_mask_dtype("mask", mask)
    if mask.dim() == 0:
        raise ValueError("mask must have at least one dimension to pack, got a 0-d tensor")
    binary = mask.dtype == torch.bool or not value_checks_active(mask)
    if not binary and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1 to be packed into bits")
    return PackedMask(reference.pack_bits(mask), tuple(mask.shape))


def mask_product(x: Tensor, mask: Tensor | PackedMask) -> Tensor:
    """Hadamard product ``x ⊙ mask``, the primitive under every masked op in this package.

    The mask broadcasts to ``x`` (a pixel mask ``(B, 1, H, W)``, a channel mask ``(1, C, 1, 1)``, a
    per-output-channel weight mask ``(C_out, 1, 1, 1)`` or a full weight-shaped mask) and is never
    expanded in memory. The result has ``x``'s shape, dtype and layout. It is differentiable in ``x``
    and, for floating-point masks, in ``mask`` (the gradient is summed over broadcast dimensions). On
    CUDA it runs a single-pass Triton kernel; elsewhere, the pure-torch reference.

    Args:
        x: floating-point tensor.
        mask: bool, uint8 or floating-point tensor with values in [0, 1] (1 = keep) that broadcasts to
            ``x``'s shape, or a :class:`PackedMask` (bit-packed, not differentiable).

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
    check_floating("x", x)
    if isinstance(mask, PackedMask):
        _check_broadcast(mask.shape, x.shape)
        check_same_device("mask", mask, "x", x)
        return ops.mask_product_packed(x, mask.bits, mask.shape[-1])
    check_tensor("mask", mask)
    check_mask_dtype("mask", mask)
    check_same_device("mask", mask, "x", x)
    _check_broadcast(mask.shape, x.shape)
    check_mask_values("mask", mask)
    return ops.mask_product(x, mask)


def _check_broadcast(mask_shape: torch.Size, x_shape: torch.Size) -> None:
    if len(mask_shape) > len(x_shape) or any(
        m not in (1, s) for m, s in zip(reversed(mask_shape), reversed(x_shape))
    ):
        raise ValueError(
            f"mask of shape {shape_str(mask_shape)} does not broadcast to x of shape "
            f"{shape_str(x_shape)}"
        )


__all__ = ["PackedMask", "mask_product", "pack_mask"]
