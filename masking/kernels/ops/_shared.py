"""What several ops share: the convolution (with its CPU workaround), its geometry and layout, its
gradients through ``convolution_backward``, and the gradient of a broadcast mask."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import conv_output_size
from .. import reference

# a convolution's geometry, (stride, padding, dilation, groups), as the internal paths take it
ConvArgs = tuple[Sequence[int], Sequence[int], Sequence[int], int]


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, conv: ConvArgs) -> Tensor:
    """``F.conv2d`` with the geometry ``conv`` = ``(stride, padding, dilation, groups)``, except
    where torch's CPU kernels are known to be wrong.

    With torch 2.15 on CPU, a bf16/fp16 convolution whose output is one pixel wide (or high) with a
    stride > 1 along that side returns wrong values, at times ~1e18 (16 of 288 small geometries in a
    sweep; ``nn.Conv2d`` has it too). Those convolutions run in fp32 and are rounded back.
    """
    stride, padding, dilation, groups = conv
    if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
        out_h, out_w = output_size(x, weight, stride, padding, dilation)
        if (out_w == 1 and stride[1] > 1) or (out_h == 1 and stride[0] > 1):
            wide = None if bias is None else bias.float()
            out = F.conv2d(x.float(), weight.float(), wide, stride, padding, dilation, groups)
            return out.to(x.dtype)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def output_size(
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int]:
    """``(H', W')`` of ``conv2d(x, weight)`` with this geometry."""
    return conv_output_size(tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)


def conv_memory_format(x: Tensor) -> torch.memory_format:
    """The layout a convolution's output takes after ``x``'s: channels_last for a channels_last
    ``x``, NCHW otherwise (a tensor that is both, such as one with a single channel, counts as NCHW)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def conv_args(
    stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int
) -> ConvArgs:
    """The geometry as an autograd context keeps it for :func:`conv_grads` (lists, not tuples)."""
    return list(stride), list(padding), list(dilation), groups


def conv_grads(
    grad: Tensor,
    conv_input: Tensor,
    weight: Tensor,
    args: ConvArgs,
    need_input: bool,
    need_weight: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """The input and weight gradients of ``conv2d(conv_input, weight)`` (``None`` where not needed),
    from one ``convolution_backward`` call; the bias gradient is each op's own."""
    stride, padding, dilation, groups = args
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad,
        conv_input,
        weight,
        None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [need_input, need_weight, False],
    )
    return grad_input, grad_weight


def mask_grad(grad: Tensor, other: Tensor, mask: Tensor) -> Tensor:
    """The gradient reaching ``mask`` in ``other ⊙ mask`` from ``grad``: summed over the dimensions
    ``mask`` broadcasts along, in ``mask``'s dtype."""
    return reference.sum_to_shape(grad * other, mask.shape).to(mask.dtype)
