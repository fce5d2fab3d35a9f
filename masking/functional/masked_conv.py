from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor

from ..checks import check_mask_dtype, check_mask_values, check_same_device, check_tensor, shape_str
from ..kernels import ops
from ._conv import check_conv_inputs


def masked_conv2d(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Tensor:
    """``F.conv2d(x, weight ⊙ mask, bias, ...)`` without forming ``weight ⊙ mask`` in the forward.

    On CUDA (``groups == 1``) a Triton implicit GEMM applies the mask while loading each weight tile
    and skips tiles whose mask is all zero; elsewhere, the reference. The backward forms
    ``weight ⊙ mask`` once for the convolution's gradients. Differentiable in ``x``, ``weight``,
    ``bias`` and (floating-point) ``mask``.

    Args:
        x: ``(B, C_in, H, W)`` floating point.
        weight: ``(C_out, C_in / groups, kh, kw)`` in ``x``'s dtype.
        mask: bool, uint8 or floating point in [0, 1] broadcasting to ``weight``: weight-shaped,
            per output channel ``(C_out, 1, 1, 1)``, per input channel ``(1, C_in / groups, 1, 1)``,
            per kernel ``(C_out, C_in / groups, 1, 1)``, ...
        bias, stride, padding, dilation, groups: as in ``F.conv2d`` (zero padding, numbers).

    Example:
        >>> w = torch.ones(2, 1, 3, 3)
        >>> out = masked_conv2d(torch.ones(1, 1, 3, 3), w, torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        >>> out.flatten().tolist()
        [9.0, 0.0]
    """
    stride, padding, dilation = check_conv_inputs(
        x, weight, bias, stride, padding, dilation, groups
    )
    check_tensor("mask", mask)
    check_mask_dtype("mask", mask)
    check_same_device("mask", mask, "weight", weight)
    if mask.dim() != 4 or any(m not in (1, s) for m, s in zip(mask.shape, weight.shape)):
        raise ValueError(
            f"mask of shape {shape_str(mask.shape)} does not broadcast to weight of shape "
            f"{shape_str(weight.shape)}"
        )
    check_mask_values("mask", mask)
    return ops.masked_conv2d(
        x, weight, mask, bias, list(stride), list(padding), list(dilation), groups
    )


__all__ = ["masked_conv2d"]
