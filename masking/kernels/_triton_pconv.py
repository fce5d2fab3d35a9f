"""Convolution kernels in Triton: the fused partial convolution and the masked-weight convolution.

**Fused partial convolution**: one kernel for ``conv(x ⊙ m) · ratio + bias · new_mask``.

An implicit GEMM over an NCHW input: each program owns a tile of output pixels of one image and a
tile of output channels. It first sums the mask over each pixel's window (the valid count, fp32,
exact for 0/1 masks). **Hole-tile skipping**: when no pixel of the tile sees a valid input, the
convolution is not computed at all and the tile is written as zeros (no bias either, as the reference
does for holes). Otherwise it accumulates ``x ⊙ m`` times the weight over ``(kh, kw, C_in)`` in fp32
and applies the ratio ``window / count`` and the bias in the epilogue. The first output-channel tile
also writes the fp32 ratio and the new mask, which the backward pass reuses.

Scope: a ``(B, 1, H, W)`` mask, ``groups == 1``, contiguous NCHW fp32/fp16/bf16; anything else returns
``None`` and the unfused path serves. Checked against the reference under ``TRITON_INTERPRET=1``.

**Masked-weight convolution**: ``conv(x, W ⊙ M)`` for learned weight masks, the same implicit GEMM
with the mask applied as each weight tile is loaded; a tile whose mask is all zero is skipped.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..checks import conv_output_size
from ._triton_sparse import dot_acc
from .ops import MIN_VALID_COUNT
from .ops._shared import ConvArgs

BLOCK_P, BLOCK_CO, BLOCK_CI = 32, 32, 16


@triton.jit
def _output_tile(OH, OW, C_OUT, BP: tl.constexpr, BCO: tl.constexpr):
    """This program's image, output pixels (flat, row and column) and output channels."""
    b = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    co = tl.program_id(1) * BCO + tl.arange(0, BCO)
    return b, p, p < OH * OW, p // OW, p % OW, co, co < C_OUT


@triton.jit
def _tap(oh, ow, p_ok, kh, kw, H, W, SH, SW, PH, PW, DH, DW):
    """The input pixel under kernel tap (kh, kw) of each output pixel, and whether it is inside."""
    ih = oh * SH - PH + kh * DH
    iw = ow * SW - PW + kw * DW
    return ih * W + iw, p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)


@triton.jit
def _store_tile(out_ptr, values, b, p, p_ok, co, co_ok, C_OUT, OH, OW):
    offs = (b * C_OUT + co[None, :].to(tl.int64)) * OH * OW + p[:, None]
    tl.store(
        out_ptr + offs, values.to(out_ptr.dtype.element_ty), mask=p_ok[:, None] & co_ok[None, :]
    )


@triton.jit
def _pconv_kernel(
    x_ptr,
    m_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    scale_ptr,
    valid_ptr,
    C_IN,
    H,
    W,
    C_OUT,
    OH,
    OW,
    KH,
    KW,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    window,
    min_count,
    HAS_BIAS: tl.constexpr,
    IEEE: tl.constexpr,
    BP: tl.constexpr,
    BCO: tl.constexpr,
    BCI: tl.constexpr,
):
    b, p, p_ok, oh, ow, co, co_ok = _output_tile(OH, OW, C_OUT, BP, BCO)
    mask_base = m_ptr + b * H * W
    # valid count of every pixel's window
    count = tl.zeros((BP,), dtype=tl.float32)
    for kh in range(0, KH):
        for kw in range(0, KW):
            pix, inb = _tap(oh, ow, p_ok, kh, kw, H, W, SH, SW, PH, PW, DH, DW)
            count += tl.load(mask_base + pix, mask=inb, other=0).to(tl.float32)
    valid = count >= min_count
    acc = tl.zeros((BP, BCO), dtype=tl.float32)
    if tl.max(valid.to(tl.int32), axis=0) > 0:  # else: an all-hole tile, skip the convolution
        x_base = x_ptr + b * C_IN * H * W
        for kh in range(0, KH):
            for kw in range(0, KW):
                pix, inb = _tap(oh, ow, p_ok, kh, kw, H, W, SH, SW, PH, PW, DH, DW)
                m = tl.load(mask_base + pix, mask=inb, other=0)
                for c0 in range(0, C_IN, BCI):
                    ci = c0 + tl.arange(0, BCI)
                    ci_ok = ci < C_IN
                    xt = tl.load(
                        x_base + ci[None, :].to(tl.int64) * H * W + pix[:, None],
                        mask=inb[:, None] & ci_ok[None, :],
                        other=0.0,
                    )
                    # x ⊙ m as mask_product: in fp32, rounded once to x's dtype
                    xt = (xt.to(tl.float32) * m[:, None].to(tl.float32)).to(xt.dtype)
                    wt = tl.load(
                        w_ptr + ((co[None, :] * C_IN + ci[:, None]) * KH + kh) * KW + kw,
                        mask=ci_ok[:, None] & co_ok[None, :],
                        other=0.0,
                    )
                    acc = dot_acc(acc, xt, wt, IEEE)
    scale = tl.where(valid, window / tl.maximum(count, min_count), 0.0)
    out = acc * scale[:, None]
    if HAS_BIAS:
        bias = tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)
        out += tl.where(valid[:, None], bias[None, :], 0.0)
    _store_tile(out_ptr, out, b, p, p_ok, co, co_ok, C_OUT, OH, OW)
    if tl.program_id(1) == 0:
        tl.store(scale_ptr + b * OH * OW + p, scale, mask=p_ok)
        tl.store(valid_ptr + b * OH * OW + p, valid.to(valid_ptr.dtype.element_ty), mask=p_ok)


def partial_conv2d_fused(
    x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, conv: ConvArgs
) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(out, scale, new_mask)`` as ``ops.partial_conv2d`` returns them, or ``None`` outside scope;
    ``conv`` is ``(stride, padding, dilation, groups)``."""
    stride, padding, dilation, groups = conv
    if (
        groups != 1
        or mask.shape[1] != 1
        or x.dtype not in (torch.float32, torch.float16, torch.bfloat16)
        or weight.dtype != x.dtype
        or not (x.is_contiguous() and weight.is_contiguous())
        or x.numel() == 0
    ):
        return None
    m = mask.contiguous()
    m = m.view(torch.uint8) if m.dtype == torch.bool else m
    b, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    out_h, out_w = conv_output_size((h, w), (kh, kw), stride, padding, dilation)
    out = torch.empty(b, c_out, out_h, out_w, dtype=x.dtype, device=x.device)
    scale = torch.empty(b, 1, out_h, out_w, dtype=torch.float32, device=x.device)
    valid = torch.empty(b, 1, out_h, out_w, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(out_h * out_w, BLOCK_P), triton.cdiv(c_out, BLOCK_CO), b)
    _pconv_kernel[grid](
        x,
        m,
        weight,
        bias if bias is not None else weight,
        out,
        scale,
        valid,
        c_in,
        h,
        w,
        c_out,
        out_h,
        out_w,
        kh,
        kw,
        *stride,
        *padding,
        *dilation,
        float(kh * kw),
        MIN_VALID_COUNT,
        HAS_BIAS=bias is not None,
        IEEE=x.dtype == torch.float32,
        BP=BLOCK_P,
        BCO=BLOCK_CO,
        BCI=BLOCK_CI,
    )
    return out, scale, valid


@triton.jit
def _masked_conv_kernel(
    x_ptr,
    w_ptr,
    m_ptr,
    b_ptr,
    out_ptr,
    C_IN,
    H,
    W,
    C_OUT,
    OH,
    OW,
    KH,
    KW,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    smo,
    smi,
    smh,
    smw,
    HAS_BIAS: tl.constexpr,
    IEEE: tl.constexpr,
    BP: tl.constexpr,
    BCO: tl.constexpr,
    BCI: tl.constexpr,
):
    # conv(x, W ⊙ M) as an implicit GEMM; the mask is read through broadcast strides (0 along its
    # broadcast dims) while each weight tile is loaded, and a tile whose mask is all zero is skipped
    # before x or W is read.
    b, p, p_ok, oh, ow, co, co_ok = _output_tile(OH, OW, C_OUT, BP, BCO)
    acc = tl.zeros((BP, BCO), dtype=tl.float32)
    x_base = x_ptr + b * C_IN * H * W
    for kh in range(0, KH):
        for kw in range(0, KW):
            pix, inb = _tap(oh, ow, p_ok, kh, kw, H, W, SH, SW, PH, PW, DH, DW)
            for c0 in range(0, C_IN, BCI):
                ci = c0 + tl.arange(0, BCI)
                tile_ok = (ci < C_IN)[:, None] & co_ok[None, :]
                m = tl.load(
                    m_ptr + co[None, :] * smo + ci[:, None] * smi + kh * smh + kw * smw,
                    mask=tile_ok,
                    other=0,
                ).to(tl.float32)
                if tl.max(tl.max(tl.abs(m), axis=1), axis=0) > 0:
                    wt = tl.load(
                        w_ptr + ((co[None, :] * C_IN + ci[:, None]) * KH + kh) * KW + kw,
                        mask=tile_ok,
                        other=0.0,
                    )
                    wt = (wt.to(tl.float32) * m).to(wt.dtype)  # as mask_product: one rounding
                    xt = tl.load(
                        x_base + ci[None, :].to(tl.int64) * H * W + pix[:, None],
                        mask=inb[:, None] & (ci < C_IN)[None, :],
                        other=0.0,
                    )
                    acc = dot_acc(acc, xt, wt, IEEE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    _store_tile(out_ptr, acc, b, p, p_ok, co, co_ok, C_OUT, OH, OW)


def masked_conv2d(
    x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None, conv: ConvArgs
) -> Tensor | None:
    """``conv2d(x, weight ⊙ mask, bias)`` without forming ``weight ⊙ mask``, or ``None`` outside
    scope (``groups != 1``, non-contiguous NCHW, dtypes other than fp32/fp16/bf16); ``conv`` is
    ``(stride, padding, dilation, groups)``."""
    stride, padding, dilation, groups = conv
    if (
        groups != 1
        or x.dtype not in (torch.float32, torch.float16, torch.bfloat16)
        or weight.dtype != x.dtype
        or not (x.is_contiguous() and weight.is_contiguous())
        or x.numel() == 0
    ):
        return None
    m = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
    m = m.expand(weight.shape)
    b, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    out_h, out_w = conv_output_size((h, w), (kh, kw), stride, padding, dilation)
    out = torch.empty(b, c_out, out_h, out_w, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(out_h * out_w, BLOCK_P), triton.cdiv(c_out, BLOCK_CO), b)
    _masked_conv_kernel[grid](
        x,
        weight,
        m,
        bias if bias is not None else weight,
        out,
        c_in,
        h,
        w,
        c_out,
        out_h,
        out_w,
        kh,
        kw,
        *stride,
        *padding,
        *dilation,
        *m.stride(),
        HAS_BIAS=bias is not None,
        IEEE=x.dtype == torch.float32,
        BP=BLOCK_P,
        BCO=BLOCK_CO,
        BCI=BLOCK_CI,
    )
    return out
