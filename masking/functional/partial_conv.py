from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor

from ..checks import (
    check_mask_dtype,
    check_mask_values,
    check_tensor,
    conv_output_size,
    pair,
    shape_str,
)
from ..kernels import ops
from ._conv import autocast_inputs, check_conv_inputs, check_pixel_mask


def partial_conv2d(
    x: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    multi_channel: bool = False,
) -> tuple[Tensor, Tensor]:
    """Partial convolution (Liu et al., 2018) with mask 1 = valid.

    ``out = W^T (X ⊙ M) · window_size / valid_count + b`` where ``valid_count > 0``, else ``0``, and
    ``new_mask = 1`` where ``valid_count > 0``, else ``0``. ``window_size`` is the number of input
    elements in a window (``C_in / groups · kh · kw`` for a per-channel mask, ``kh · kw`` for a
    ``(B, 1, H, W)`` mask, which gives the same ratio); zero padding counts as hole.

    The valid count is one exact box-filter pass over the (per-group channel-summed) mask, and the
    ratio is computed in fp32, so fp16/bf16 inputs and windows that are entirely hole never produce NaN
    or inf. Nothing is cached between calls. The mask is a constant: no gradient flows into it.

    Args:
        x: ``(B, C_in, H, W)`` floating-point input.
        mask: ``(B, 1, H, W)``, or ``(B, C_in, H, W)`` when ``multi_channel``; bool, uint8 or float
            with values in [0, 1]. Fractional values count fractionally.
        weight: ``(C_out, C_in / groups, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d`` (zero padding).
        multi_channel: accept a per-channel mask and return a per-channel ``(B, C_out, H', W')`` mask
            (a broadcast view when the mask is shared by all channels).

    Returns:
        ``(out, new_mask)``: ``out`` is ``(B, C_out, H', W')`` in ``x``'s dtype; ``new_mask`` is
        ``(B, 1, H', W')`` (``(B, C_out, H', W')`` when ``multi_channel``) in ``mask``'s dtype.

    Shape:
        - x: ``(B, C_in, H, W)``
        - mask: ``(B, 1, H, W)`` or, with ``multi_channel``, ``(B, C_in, H, W)``
        - out: ``(B, C_out, H', W')`` with ``H' = (H + 2·pad - dil·(kh - 1) - 1) // stride + 1``

    Example:
        >>> x = torch.ones(1, 1, 4, 4)
        >>> mask = torch.ones(1, 1, 4, 4)
        >>> mask[..., :, 2:] = 0  # the right half is missing
        >>> out, new_mask = partial_conv2d(x, mask, torch.ones(1, 1, 3, 3), padding=1)
        >>> out[0, 0, 0].tolist()  # every window is renormalised to the full 9 inputs
        [9.0, 9.0, 9.0, 0.0]
        >>> new_mask[0, 0, 0].tolist()
        [1.0, 1.0, 1.0, 0.0]
    """
    x, weight, bias = autocast_inputs(x, weight, bias)
    stride, padding, dilation = check_conv_inputs(
        x, weight, bias, stride, padding, dilation, groups
    )
    check_pixel_mask(mask, x, allowed_channels=(1, x.shape[1]) if multi_channel else (1,))
    out, _, new_mask = ops.partial_conv2d(
        x, mask, weight, bias, list(stride), list(padding), list(dilation), groups
    )
    new_mask = new_mask.to(mask.dtype)
    if multi_channel:
        c_out = weight.shape[0]
        if new_mask.shape[1] == 1:
            new_mask = new_mask.expand(-1, c_out, -1, -1)
        else:
            new_mask = new_mask.repeat_interleave(c_out // new_mask.shape[1], dim=1)
    return out, new_mask


def update_mask2d(
    mask: Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """The partial-convolution mask update on its own: 1 where a window holds any valid input.

    Gives the mask that matches a convolution's output grid, so layers that do not use the mask
    (plain and gated convolutions) pass it along consistently with their stride, padding and dilation.
    A per-channel mask is summed over its channels first.

    Args:
        mask: ``(B, C, H, W)`` bool, uint8 or float mask, 1 = valid.
        kernel_size, stride, padding, dilation: the convolution's geometry.

    Returns:
        ``(B, 1, H', W')`` mask of 0s and 1s in ``mask``'s dtype.

    Example:
        >>> mask = torch.zeros(1, 1, 4, 4)
        >>> mask[0, 0, 0, 0] = 1
        >>> update_mask2d(mask, 3, stride=2, padding=1)[0, 0].tolist()
        [[1.0, 0.0], [0.0, 0.0]]
    """
    check_tensor("mask", mask)
    check_mask_dtype("mask", mask)
    if mask.dim() != 4:
        raise ValueError(f"mask must be (B, C, H, W), got {shape_str(mask.shape)}")
    geometry = (
        pair("kernel_size", kernel_size, minimum=1),
        pair("stride", stride, minimum=1),
        pair("padding", padding, minimum=0),
        pair("dilation", dilation, minimum=1),
    )
    if min(conv_output_size((mask.shape[2], mask.shape[3]), *geometry)) < 1:
        raise ValueError(
            f"mask of spatial size {tuple(mask.shape[2:])} is smaller than the kernel "
            f"{geometry[0]} with padding {geometry[2]} and dilation {geometry[3]}"
        )
    check_mask_values("mask", mask)
    summed = mask if mask.shape[1] == 1 else mask.float().sum(1, keepdim=True)
    return (ops.box_sum2d(summed, *geometry) > 0).to(mask.dtype)


__all__ = ["partial_conv2d", "update_mask2d"]
