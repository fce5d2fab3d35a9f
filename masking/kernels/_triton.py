"""Triton kernels. Imported lazily by ``masking.kernels.dispatch``; never at package import.

Every launcher returns ``None`` when its layout preconditions do not hold, so the caller falls back to
the reference in ``masking.kernels.reference``. Under ``TRITON_INTERPRET=1`` the kernels also run on CPU
tensors, which is how CI checks them without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_BLOCK = 1024


@triton.jit
def _mask_product_kernel(
    x_ptr,
    m_ptr,
    out_ptr,
    n,
    d1,
    d2,
    s0,
    s1,
    s2,
    BLOCK: tl.constexpr,
    F64: tl.constexpr,
):
    # x is contiguous and viewed as (d0, d1, d2); the mask is read through broadcast strides (s0, s1,
    # s2), 0 along broadcast dimensions, so a pixel or channel mask is never expanded in memory.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    i2 = offs % d2
    rest = offs // d2
    i1 = rest % d1
    i0 = rest // d1
    x = tl.load(x_ptr + offs, mask=inside)
    m = tl.load(m_ptr + (i0 * s0 + i1 * s1 + i2 * s2), mask=inside)
    # as the reference: the mask in x's dtype, the product in fp32 (fp64 for fp64 x), one rounding
    acc = tl.float64 if F64 else tl.float32
    m = m.to(x.dtype).to(acc)
    tl.store(out_ptr + offs, (x.to(acc) * m).to(x.dtype), mask=inside)


def _collapse_broadcast(
    shape: torch.Size, mask_strides: tuple[int, ...]
) -> list[tuple[int, int]] | None:
    """Merge dims of a contiguous tensor whose broadcast mask is also contiguous across them."""
    dims = [(size, stride) for size, stride in zip(shape, mask_strides) if size != 1]
    merged: list[tuple[int, int]] = []
    for size, stride in dims:
        if merged:
            prev_size, prev_stride = merged[-1]
            if prev_stride == stride * size:  # includes both broadcast (0 == 0 * size)
                merged[-1] = (prev_size * size, stride)
                continue
        merged.append((size, stride))
    if len(merged) > 3:
        return None
    return [(1, 0)] * (3 - len(merged)) + merged


def mask_product(x: Tensor, mask: Tensor) -> Tensor | None:
    if not x.is_contiguous() or x.numel() == 0:
        return None
    m = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
    dims = _collapse_broadcast(x.shape, m.expand(x.shape).stride())
    if dims is None:
        return None
    out = torch.empty_like(x)
    (_, s0), (d1, s1), (d2, s2) = dims
    n = x.numel()
    _mask_product_kernel[(triton.cdiv(n, _BLOCK),)](
        x, m, out, n, d1, d2, s0, s1, s2, BLOCK=_BLOCK, F64=x.dtype == torch.float64
    )
    return out


@triton.jit
def _pconv_epilogue_kernel(
    out_ptr,
    scale_ptr,
    bias_ptr,
    hw,
    c_out,
    channels_per_group,
    groups,
    HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per (batch, channel) row and block of pixels: the channel and its bias are scalars.
    row = tl.program_id(0)
    channel = row % c_out
    batch = row // c_out
    group = channel // channels_per_group
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < hw
    base = row.to(tl.int64) * hw
    scale_base = (batch * groups + group).to(tl.int64) * hw
    scale = tl.load(scale_ptr + scale_base + offs, mask=inside, other=0.0)
    acc = tl.load(out_ptr + base + offs, mask=inside, other=0.0).to(tl.float32) * scale
    if HAS_BIAS:
        bias = tl.load(bias_ptr + channel).to(tl.float32)
        acc += tl.where(scale > 0, bias, 0.0)
    tl.store(out_ptr + base + offs, acc.to(out_ptr.dtype.element_ty), mask=inside)


def pconv_epilogue_(out: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor | None:
    """In place ``out = out · scale + bias · (scale > 0)`` in fp32 registers, one pass.

    ``out`` is the bias-free convolution; see ``reference.pconv_epilogue_``.
    """
    if not out.is_contiguous() or not scale.is_contiguous() or scale.dtype != torch.float32:
        return None
    b, c_out, h, w = out.shape
    groups = scale.shape[1]
    hw = h * w
    if out.numel() == 0:
        return out
    block = min(_BLOCK, triton.next_power_of_2(hw))
    grid = (b * c_out, triton.cdiv(hw, block))
    bias_arg = bias.contiguous() if bias is not None else scale  # unused pointer when no bias
    _pconv_epilogue_kernel[grid](
        out,
        scale,
        bias_arg,
        hw,
        c_out,
        c_out // groups,
        groups,
        HAS_BIAS=bias is not None,
        BLOCK=block,
    )
    return out


@triton.jit
def _mask_product_packed_kernel(
    x_ptr,
    bits_ptr,
    out_ptr,
    n,
    length,
    d1,
    d2,
    s0,
    s1,
    s2,
    PACKED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # x viewed (d0, d1, d2, length); the bits read through broadcast strides (s0, s1, s2) over the
    # leading dims and, when PACKED, one byte per 8 entries along the last (else always bit 0).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    last = offs % length
    rest = offs // length
    i2 = rest % d2
    rest = rest // d2
    i1 = rest % d1
    i0 = rest // d1
    row = i0 * s0 + i1 * s1 + i2 * s2
    if PACKED:
        byte = tl.load(bits_ptr + row + last // 8, mask=inside, other=0)
        bit = (byte >> (last % 8).to(tl.uint8)) & 1
    else:
        bit = tl.load(bits_ptr + row, mask=inside, other=0) & 1
    x = tl.load(x_ptr + offs, mask=inside)
    tl.store(out_ptr + offs, x * bit.to(x.dtype), mask=inside)


def mask_product_packed(x: Tensor, bits: Tensor, length: int) -> Tensor | None:
    if not x.is_contiguous() or not bits.is_contiguous() or x.numel() == 0 or x.dim() == 0:
        return None
    lead = x.shape[:-1]
    lead_bits = (1,) * (len(lead) - bits.dim() + 1) + tuple(bits.shape[:-1])
    strides = bits.reshape(*lead_bits, bits.shape[-1]).expand(*lead, bits.shape[-1]).stride()[:-1]
    dims = _collapse_broadcast(lead, strides)
    if dims is None:
        return None
    (_, s0), (d1, s1), (d2, s2) = dims
    out = torch.empty_like(x)
    n = x.numel()
    _mask_product_packed_kernel[(triton.cdiv(n, _BLOCK),)](
        x, bits, out, n, x.shape[-1], d1, d2, s0, s1, s2, PACKED=length > 1, BLOCK=_BLOCK
    )
    return out


# the GEMM kernels live in their own modules; run_kernel looks every kernel up here
from ._triton_pconv import masked_conv2d, partial_conv2d_fused  # noqa: E402
from ._triton_sparse import bsr_linear, masked_linear, masked_linear_grad_input  # noqa: E402

__all__ = [
    "bsr_linear",
    "mask_product",
    "mask_product_packed",
    "masked_conv2d",
    "masked_linear",
    "masked_linear_grad_input",
    "partial_conv2d_fused",
    "pconv_epilogue_",
]
