"""``masking::partial_conv2d``: the partial convolution's forward (fused Triton kernel or the torch
path of ``_partial_conv_cpu``) and its autograd formula."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import reference, table
from ..dispatch import run_kernel, triton_kernels
from . import _partial_conv_cpu as torch_path
from ._shared import conv_args, conv_grads, conv_memory_format, output_size


@torch.library.custom_op("masking::partial_conv2d", mutates_args=())
def partial_conv2d(
    x: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns the output, ``valid_scale`` (fp32; fp64 for fp64 ``x``) and the new mask (0/1 in
    ``x``'s dtype), the last two ``(B, 1 or groups, H', W')``.

    The fused Triton kernel serves where ``table.choose`` picks it (a measured table or an override);
    otherwise the convolution runs in torch with the ratio and bias in an epilogue.
    """
    with torch.autocast(x.device.type, enabled=False):
        conv = (stride, padding, dilation, groups)
        if _fused_chosen(x, mask, weight):
            fused = run_kernel("partial_conv2d_fused", x, mask, weight, bias, conv)
            if fused is not None:
                return fused
        return torch_path.partial_conv2d(x, mask, weight, bias, conv)


def _fused_chosen(x: Tensor, mask: Tensor, weight: Tensor) -> bool:
    if triton_kernels(x) is None:
        return False  # the reference serves x (a CPU tensor, or the reference backend): no lookup
    b, c_out, c_in, kh, kw = x.shape[0], *weight.shape
    shape = (c_out, c_in * kh * kw, b * x.shape[2] * x.shape[3])

    def hole_ratio(path: str) -> float | None:
        # reading the mask back would break a CUDA graph capture: there, only an override picks
        if path != "fused" or (mask.is_cuda and torch.cuda.is_current_stream_capturing()):
            return None
        return 1.0 - mask.float().mean().item()

    choice = table.choose("partial_conv2d", x.device, x.dtype, shape, hole_ratio, "unfused")
    return choice.path == "fused"


@partial_conv2d.register_fake
def _(x, mask, weight, bias, stride, padding, dilation, groups):
    out_h, out_w = output_size(x, weight, stride, padding, dilation)
    out = x.new_empty((x.shape[0], weight.shape[0], out_h, out_w))
    out = out.contiguous(memory_format=conv_memory_format(x))
    mask_shape = (x.shape[0], 1 if mask.shape[1] == 1 else groups, out_h, out_w)
    return out, x.new_empty(mask_shape, dtype=torch_path.scale_dtype(x)), x.new_empty(mask_shape)


def _setup(ctx, inputs, output) -> None:
    x, mask, weight, _bias, stride, padding, dilation, groups = inputs
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.conv_args = conv_args(stride, padding, dilation, groups)
    ctx.save_for_backward(x, mask, weight, output[1], output[2])


def _backward(ctx, grad_out: Tensor, _grad_scale: Tensor, _grad_valid: Tensor):
    """``out = conv(x ⊙ m) · scale + bias · valid``: the convolution sees ``grad_out · scale``, the
    input gradient is masked, the bias gradient counts valid outputs; the mask takes none.

    Traced by ``torch.compile`` (AOTAutograd) into the backward graph, so every branch here depends
    on shapes and on what is traced, never on values (``no_holes`` answers ``False`` while tracing).
    """
    x, mask, weight, scale, valid = ctx.saved_tensors
    need_x, _, need_weight, need_bias = ctx.needs_input_grad[:4]
    scale = reference.expand_groups(scale, grad_out.shape[1])
    grad_x = grad_weight = grad_bias = None
    if need_x or need_weight:
        grad_conv = torch_path.scratch_mul(grad_out, scale.to(grad_out.dtype), "pconv_grad")
        without_holes = torch_path.no_holes(mask)
        # x ⊙ m is recomputed (one cheap pass) instead of being kept alive from the forward
        conv_input = torch_path.masked_input(x, mask, without_holes) if need_weight else x
        grad_input, grad_weight = conv_grads(
            grad_conv, conv_input, weight, ctx.conv_args, need_x, need_weight
        )
        if need_x and without_holes:
            grad_x = grad_input
        elif need_x:
            grad_x = grad_input * mask if torch.is_grad_enabled() else grad_input.mul_(mask)
    if need_bias:
        valid = valid.to(grad_out.dtype)
        if valid.shape[1] == 1:
            grad_bias = torch_path.masked_channel_sum(grad_out, valid)
        else:
            valid = reference.expand_groups(valid, grad_out.shape[1])
            grad_bias = (grad_out * valid).sum((0, 2, 3))
    return grad_x, None, grad_weight, grad_bias, None, None, None, None


partial_conv2d.register_autograd(_backward, setup_context=_setup)
