"""The partial convolution on torch's own convolution: the path of every CPU tensor (and of CUDA
tensors when the fused Triton kernel is not chosen, with the epilogue in Triton).

``out = conv(x ⊙ m) · scale + bias · valid``, with ``scale = window / valid_count`` (0 where nothing
is valid) and ``valid`` the new mask. The convolution dominates the cost, so what is worth doing is
to keep the passes over the activation around it few:

- the valid count is an exact separable box sum over the ``(B, 1, H, W)`` mask (or its per-group
  channel sum), never a ones-kernel convolution over ``C_in`` channels;
- a mask without holes (``mask=None``, the deep layers of an inpainting network) skips ``x ⊙ m``;
  the bias then rides in the convolution and only the windows reaching into the zero padding are
  rescaled (the border epilogue, with the row seams below);
- holes that close no window take the epilogue in one ``out · scale + bias`` pass;
- anything else takes the two-pass reference epilogue (or the Triton one on CUDA).

Temporaries that one convolution reads and drops (the masked input, the rescaled gradient) come
from ``workspace`` scratch buffers. The choices that read the mask's values (``no_holes``,
``one_pass_epilogue``) run only on eager CPU tensors: on CUDA they would cost a synchronisation, and
while ``torch.compile`` traces the backward they would be data-dependent branches the graph cannot
hold. ``docs/design/partial_conv_cpu.md`` has the measurements behind these choices and what was
tried and not kept.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...checks import conv_output_size
from .. import reference
from ..dispatch import run_kernel, traced
from ..workspace import scratch_like
from ._shared import ConvArgs, conv2d, conv_memory_format

# Windows whose valid count is below this are holes, so a soft mask with vanishing values cannot
# overflow the ratio. Counts of 0/1 masks are whole numbers, unaffected.
MIN_VALID_COUNT = 1e-6


def partial_conv2d(
    x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, conv: ConvArgs
) -> tuple[Tensor, Tensor, Tensor]:
    """``(out, scale, valid)`` as ``masking::partial_conv2d`` returns them, from torch's convolution
    and the cheapest epilogue that gives the reference's result."""
    stride, padding, dilation, groups = conv
    scale, valid = valid_scale(
        mask, weight.shape, stride, padding, dilation, groups, scale_dtype(x)
    )
    valid = valid.to(x.dtype)
    without_holes = no_holes(mask)
    # Without holes only the windows reaching into the zero padding are rescaled: the bias rides in
    # the convolution and the epilogue touches the border alone. Half-precision outputs with a bias
    # keep the full epilogue: rescaling a rounded conv + bias would magnify the rounding.
    border_only = without_holes and (bias is None or reference.full_precision(x))
    one_pass = not border_only and one_pass_epilogue(x, scale, valid, bias)
    conv_input = masked_input(x, mask, without_holes)
    out = conv2d(conv_input, weight, bias if border_only else None, conv)
    out = out.contiguous(memory_format=conv_memory_format(x))
    if border_only:
        geometry = (tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
        rescale_border_(out, scale, valid, bias, *geometry)
    elif one_pass:
        torch.addcmul(bias.view(1, -1, 1, 1).to(out.dtype), out, scale.to(out.dtype), out=out)
    elif run_kernel("pconv_epilogue_", out, scale, bias) is None:
        reference.pconv_epilogue_(out, scale, valid, bias)
    return out, scale, valid


# ----------------------------------------------------------------------------- valid count, ratio


def box_sum2d(
    mask: Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tensor:
    """Sum of ``mask`` over every convolution window, in fp32 (fp64 for an fp64 mask); zero padding
    counts as hole.

    Separable: the row taps are summed, then the column taps of that; each sum starts from two
    taps, so no pass copies a slice. Exact for 0/1 masks on every backend, unlike a ones-kernel
    convolution, which may pick Winograd and return 8.9999995, or a tiny non-zero count for a window
    that is entirely hole. Returns a new tensor.
    """
    m = mask if mask.dtype == torch.float64 else mask.float()
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    out_h, out_w = conv_output_size(tuple(m.shape[2:]), (kh, kw), stride, padding, dilation)
    if ph or pw:
        m = F.pad(m, (pw, pw, ph, ph))
    rows = _tap_sum(m, 2, kh, sh, dh, out_h)
    return _tap_sum(rows, 3, kw, sw, dw, out_w)


def _tap_sum(t: Tensor, dim: int, taps: int, stride: int, dilation: int, size: int) -> Tensor:
    """A new tensor: the sum of the ``taps`` dilated, strided slices of ``t`` along ``dim``, each
    ``size`` long."""

    def tap(i: int) -> Tensor:
        index = [slice(None)] * t.dim()
        index[dim] = slice(i * dilation, i * dilation + (size - 1) * stride + 1, stride)
        return t[tuple(index)]

    if taps == 1:
        return tap(0).clone()
    total = tap(0) + tap(1)
    for i in range(2, taps):
        # out of place while traced: torch.export's functional graph holds no in-place add
        total = total + tap(i) if traced(total) else total.add_(tap(i))
    return total


def valid_scale(
    mask: Tensor,
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """``window_size / valid_count`` per output pixel in ``dtype`` (fp32, or fp64 for fp64 inputs),
    0 where the window holds no valid input (or less than ``MIN_VALID_COUNT``); and the new mask,
    0/1 in the same dtype.

    A ``(B, 1, H, W)`` mask gives ``(B, 1, H', W')``. A per-channel ``(B, C_in, H, W)`` mask is summed
    over the channels of each group first, giving ``(B, groups, H', W')``; either way one box-filter
    pass over a few channels, never a ``(C_out, C_in, kh, kw)`` ones-kernel convolution.
    """
    channels_per_group, kh, kw = weight_shape[1], weight_shape[2], weight_shape[3]
    if mask.shape[1] == 1:
        window = kh * kw
        summed = mask.to(dtype)
    else:
        window = channels_per_group * kh * kw
        b, _, h, w = mask.shape
        summed = mask.to(dtype).reshape(b, groups, channels_per_group, h, w).sum(2)
    count = box_sum2d(summed, (kh, kw), stride, padding, dilation)
    if traced(count):  # the same values out of place, for a functional graph (torch.export)
        valid = count >= MIN_VALID_COUNT
        scale = torch.where(valid, window / count.clamp_min(MIN_VALID_COUNT), 0.0)
        return scale, valid.to(count.dtype)
    # A window holding less than MIN_VALID_COUNT of valid input (only possible with soft masks) is a
    # hole: its count becomes inf, so the ratio is 0, stays finite and agrees with the new mask. Two
    # in-place passes and a sign, instead of a compare, a divide and a select that would each
    # allocate a new tensor.
    scale = F.threshold_(count, _below_min_count(count.dtype), math.inf)
    scale = torch.div(torch.tensor(window, dtype=count.dtype), scale, out=scale)
    return scale, torch.sign(scale)


@functools.cache
def _below_min_count(dtype: torch.dtype) -> float:
    """The largest ``dtype`` value below ``MIN_VALID_COUNT``: ``count > it`` is ``count >= MIN``."""
    minimum = torch.tensor(MIN_VALID_COUNT, dtype=dtype)
    return torch.nextafter(minimum, torch.zeros_like(minimum)).item()


def scale_dtype(x: Tensor) -> torch.dtype:
    """The ratio's dtype: fp32, so half precision never overflows, and fp64 for fp64 inputs."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- the masked input


def no_holes(mask: Tensor) -> bool:
    """Whether an eager CPU pixel mask is 1 everywhere, so multiplying by it changes nothing.

    All-valid masks are common: ``mask=None`` (partial-convolution padding), and the deeper layers of
    an inpainting network once the updated masks have closed the holes. Reading the ``(B, 1, H, W)``
    mask costs about 1/C of the pass over ``x`` it saves. ``False`` (do the product; it is exact
    either way) on CUDA, where the answer would cost a device synchronisation; for per-channel
    masks, where the check would cost as much as the product; and while the backward is being traced
    (``torch.compile``), where a branch on the mask's values cannot be part of the graph.
    """
    if mask.device.type != "cpu" or mask.shape[1] != 1 or traced(mask):
        return False
    # amin reads a float mask faster than all() does; an empty batch has no holes to mask
    return mask.numel() == 0 or mask.amin().item() == 1


def masked_input(x: Tensor, mask: Tensor, without_holes: bool) -> Tensor:
    """``x ⊙ mask`` in a scratch buffer, or ``x`` itself when the mask has no holes (``no_holes``,
    asked once per call)."""
    if without_holes:
        return x
    return scratch_mul(
        x, mask if mask.dtype in (torch.bool, x.dtype) else mask.to(x.dtype), "pconv_input"
    )


def scratch_mul(a: Tensor, b: Tensor, slot: str) -> Tensor:
    """``a * b`` (b broadcast) into a scratch buffer; the caller must drop it before returning.

    While autograd records (a double backward), the product is an ordinary tensor instead.
    """
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return a * b
    return torch.mul(a, b, out=scratch_like(a, slot))


# ------------------------------------------------------------------------------------ epilogues


def one_pass_epilogue(x: Tensor, scale: Tensor, valid: Tensor, bias: Tensor | None) -> bool:
    """Whether the epilogue can be the single pass ``out · scale + bias``: on CPU, with a bias, in
    fp32/fp64, one ratio per pixel, and every window holding valid input (thin holes, or holes this
    layer's windows close), so that ``bias · valid`` is ``bias`` everywhere.

    Asked before the convolution, while ``valid`` is still in cache.
    """
    return (
        bias is not None
        and x.device.type == "cpu"
        and scale.shape[1] == 1
        and reference.full_precision(x)
        and not traced(valid)
        and valid.numel() > 0
        and valid.amin().item() == 1
    )


def _inside_span(size: int, kernel: int, stride: int, pad: int, dilation: int, out_size: int):
    """``(first, stop)``: the output indices along one side whose window lies inside the input."""
    first = min(-(-pad // stride), out_size)
    last = (size - 1 + pad - dilation * (kernel - 1)) // stride
    return first, max(first, min(out_size, last + 1))


def rescale_border_(
    out: Tensor,
    scale: Tensor,
    valid: Tensor,
    bias: Tensor | None,
    in_size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> None:
    """In place, for a mask without holes: ``out`` holds ``conv(x) + bias``, final wherever the
    window lies inside the input (``scale`` is 1 there); the windows reaching into the zero padding
    become ``out · scale + bias · (valid - scale)``, in fp32 for half-precision outputs."""
    out_h, out_w = out.shape[2:]
    r0, r1 = _inside_span(in_size[0], kernel[0], stride[0], padding[0], dilation[0], out_h)
    c0, c1 = _inside_span(in_size[1], kernel[1], stride[1], padding[1], dilation[1], out_w)
    if r0 == r1 or c0 == c1:  # no window lies inside: the border is everything
        _rescale_part_(out, scale, valid, bias)
        return
    for rows in (slice(0, r0), slice(r1, out_h)):
        _rescale_part_(out[:, :, rows], scale[:, :, rows], valid[:, :, rows], bias)
    if c0 == 0 and c1 == out_w:
        return
    if r1 - r0 < 2 or not all(t.is_contiguous() for t in (out, scale, valid)):
        for cols in (slice(0, c0), slice(c1, out_w)):
            part = (slice(None), slice(None), slice(r0, r1), cols)
            _rescale_part_(out[part], scale[part], valid[part], bias)
        return
    # In NCHW the right border of one row and the left border of the next lie side by side in
    # memory: one strided view of these seams reads each cache line once, where the two column
    # slices would read it twice.
    first = (slice(None), slice(None), slice(r0, r0 + 1), slice(0, c0))
    last = (slice(None), slice(None), slice(r1 - 1, r1), slice(c1, out_w))
    for part in (first, last):
        _rescale_part_(out[part], scale[part], valid[part], bias)
    runs = [_row_seams(t, r0, r1 - 1, c1, c0) for t in (out, scale, valid)]
    _rescale_part_(*runs, bias)


def _row_seams(t: Tensor, first_row: int, stop_row: int, right: int, left: int) -> Tensor:
    """A view of the NCHW-contiguous ``t``: for each row in ``[first_row, stop_row)``, its columns
    from ``right`` on, followed by the next row's first ``left`` columns."""
    b, c, _, w = t.shape
    return t.as_strided(
        (b, c, stop_row - first_row, w - right + left),
        (t.stride(0), t.stride(1), w, 1),
        t.storage_offset() + first_row * w + right,
    )


def _rescale_part_(part: Tensor, scale: Tensor, valid: Tensor, bias: Tensor | None) -> None:
    """``part = part · scale + bias · (valid - scale)`` in place: the reference epilogue for a
    ``part`` that already holds the bias (whose ``bias · scale`` the ``- scale`` takes back)."""
    if part.numel():
        reference.pconv_epilogue_(part, scale, valid if bias is None else valid - scale, bias)


# ------------------------------------------------------------------------------------- backward


def masked_channel_sum(grad: Tensor, valid: Tensor) -> Tensor:
    """``(grad · valid).sum((0, 2, 3))`` for a ``(B, 1, H, W)`` ``valid``, without a temporary.

    One matrix-vector product per image reads ``grad`` once, where multiply-then-sum writes and
    reads a temporary as large as ``grad``. Large batches use one ``bmm`` to bound the Python loop.
    """
    b, c = grad.shape[:2]
    if grad.numel() == 0:
        return grad.new_zeros(c)
    g, v = grad.reshape(b, c, -1), valid.reshape(b, -1)
    if b > 32:
        return torch.bmm(g, v.unsqueeze(2)).sum((0, 2))
    total = torch.mv(g[0], v[0])
    for i in range(1, b):
        total += torch.mv(g[i], v[i])
    return total
