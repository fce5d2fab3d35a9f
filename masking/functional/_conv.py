"""Argument handling shared by the masked convolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..checks import (
    check_floating,
    check_mask_dtype,
    check_mask_values,
    check_same_device,
    check_tensor,
    conv_output_size,
    pair,
    shape_str,
)

Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def check_conv_inputs(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
    *,
    out_channel_multiple: int = 1,
) -> Geometry:
    """Validate a convolution's tensors and geometry; return (stride, padding, dilation) pairs.

    ``out_channel_multiple`` is 2 for a gated convolution, whose weight holds features and gates.
    """
    check_tensor("x", x)
    check_floating("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got {shape_str(x.shape)}")
    check_tensor("weight", weight)
    if weight.dim() != 4:
        raise ValueError(
            f"weight must be (C_out, C_in / groups, kh, kw), got {shape_str(weight.shape)}"
        )
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} does not match x dtype {x.dtype}")
    check_same_device("weight", weight, "x", x)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    c_in = x.shape[1]
    if c_in % groups or weight.shape[1] * groups != c_in:
        raise ValueError(
            f"weight of shape {shape_str(weight.shape)} with groups={groups} expects "
            f"{weight.shape[1] * groups} input channels, but x has {c_in}"
        )
    if weight.shape[0] % (groups * out_channel_multiple):
        raise ValueError(
            f"weight's {weight.shape[0]} output channels must be divisible by "
            f"groups * {out_channel_multiple} = {groups * out_channel_multiple}"
        )
    if bias is not None:
        check_tensor("bias", bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must be ({weight.shape[0]},), got {shape_str(bias.shape)}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias dtype {bias.dtype} does not match x dtype {x.dtype}")
        check_same_device("bias", bias, "x", x)
    geometry = (
        pair("stride", stride, minimum=1),
        pair("padding", padding, minimum=0),
        pair("dilation", dilation, minimum=1),
    )
    kernel = (weight.shape[2], weight.shape[3])
    out_size = conv_output_size((x.shape[2], x.shape[3]), kernel, *geometry)
    if min(out_size) < 1:
        raise ValueError(
            f"x of spatial size {tuple(x.shape[2:])} is smaller than the kernel {kernel} with "
            f"padding {geometry[1]} and dilation {geometry[2]}"
        )
    return geometry


def check_pixel_mask(mask: Tensor, x: Tensor, *, allowed_channels: tuple[int, ...]) -> None:
    """``mask`` is ``(B, c, H, W)`` matching ``x``, with ``c`` in ``allowed_channels``, in [0, 1]."""
    check_tensor("mask", mask)
    check_mask_dtype("mask", mask)
    b, _, h, w = x.shape

    def wrong_shape(hint: str = "") -> ValueError:
        # built only on failure: formatting the shapes would pin symbolic sizes under torch.export
        options = " or ".join(shape_str((b, c, h, w)) for c in dict.fromkeys(allowed_channels))
        return ValueError(
            f"mask must be {options} to match x of shape {shape_str(x.shape)}, "
            f"got {shape_str(mask.shape)}{hint}"
        )

    if mask.dim() != 4 or mask.shape[0] != b or mask.shape[2:] != x.shape[2:]:
        raise wrong_shape()
    if mask.shape[1] not in allowed_channels:
        raise wrong_shape(
            " (pass multi_channel=True for a per-channel mask)" if 1 in allowed_channels else ""
        )
    check_same_device("mask", mask, "x", x)
    check_mask_values("mask", mask)


def autocast_inputs(
    x: Tensor, weight: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Cast like ``conv2d`` does under autocast (the custom ops themselves run with autocast off).

    Runs before the dtype checks: under autocast a bf16 activation meeting fp32 weights is normal.
    """
    check_tensor("x", x)
    check_tensor("weight", weight)
    if bias is not None:
        check_tensor("bias", bias)
    device = x.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device)

    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    return cast(x), cast(weight), None if bias is None else cast(bias)
