"""Triton GEMMs for masked and sparse weights. Imported lazily, never at package import.

- ``masked_linear``: ``x @ (W ⊙ M)ᵀ`` with the mask applied while each weight tile is loaded (no
  ``W ⊙ M`` tensor in memory) and weight tiles whose mask is entirely zero skipped. The same kernel
  computes the input gradient ``g @ (W ⊙ M)`` by reading ``W`` and ``M`` through transposed strides.
- ``bsr_linear``: ``x @ Wᵀ`` for ``W`` in block-sparse rows (BSR) with square ``b×b`` blocks, one
  program per (row tile of ``x``, block row of ``W``), looping over that block row's stored blocks.

fp32 inputs multiply in IEEE fp32 (not TF32), to match ``F.linear``; fp16/bf16 accumulate in fp32.
Under ``TRITON_INTERPRET=1`` both run on CPU tensors (tests use fp32/fp16: the interpreter's bf16
dot is wrong).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

# tile of the masked GEMM; also the granularity of its skip table
BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 32


@triton.jit
def dot_acc(acc, a, b, IEEE: tl.constexpr):
    """``acc + a @ b`` in fp32; IEEE fp32 products (not TF32) for fp32 inputs, like torch."""
    if IEEE:
        acc += tl.dot(a, b, input_precision="ieee")
    else:
        acc += tl.dot(a, b)
    return acc


@triton.jit
def _masked_mm_kernel(
    x_ptr,
    w_ptr,
    m_ptr,
    live_ptr,
    y_ptr,
    M,
    N,
    K,
    sxm,
    sxk,
    swn,
    swk,
    smn,
    smk,
    sln,
    slk,
    sym,
    syn,
    IEEE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BK)):
        if tl.load(live_ptr + pid_n * sln + kb * slk) != 0:  # else an all-zero mask tile
            kk = (kb * BK + rk).to(tl.int64)
            a = tl.load(
                x_ptr + rm[:, None] * sxm + kk[None, :] * sxk,
                mask=(rm[:, None] < M) & (kk[None, :] < K),
                other=0.0,
            )
            inside = (rn[:, None] < N) & (kk[None, :] < K)
            w = tl.load(w_ptr + rn[:, None] * swn + kk[None, :] * swk, mask=inside, other=0.0)
            m = tl.load(m_ptr + rn[:, None] * smn + kk[None, :] * smk, mask=inside, other=0)
            # as mask_product: the product in fp32, rounded once to the weight's dtype
            w = (w.to(tl.float32) * m.to(tl.float32)).to(w.dtype)
            acc = dot_acc(acc, a, tl.trans(w), IEEE)
    tl.store(
        y_ptr + rm[:, None] * sym + rn[None, :] * syn,
        acc.to(y_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )


def live_blocks(mask: Tensor, shape: tuple[int, int]) -> Tensor:
    """``(ceil(N / BLOCK_N), ceil(K / BLOCK_K))`` uint8: whether each weight tile has a non-zero mask
    entry (one pass over the mask, broadcast to the weight's ``(N, K)``)."""
    n, k = shape
    rows, cols = triton.cdiv(n, BLOCK_N), triton.cdiv(k, BLOCK_K)
    padded = torch.zeros(rows * BLOCK_N, cols * BLOCK_K, dtype=torch.bool, device=mask.device)
    padded[:n, :k] = mask.expand(shape).ne(0)
    return padded.view(rows, BLOCK_N, cols, BLOCK_K).any(3).any(1).to(torch.uint8)


def _masked_mm(x: Tensor, w: Tensor, m: Tensor, live: Tensor) -> Tensor:
    """``x (M, K) @ (w ⊙ m)ᵀ`` for ``w`` and the broadcast-expanded ``m`` both viewed ``(N, K)``."""
    rows, k = x.shape
    n = w.shape[0]
    y = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    if k == 0:
        return y.zero_()
    m = m.view(torch.uint8) if m.dtype == torch.bool else m
    grid = (triton.cdiv(rows, BLOCK_M), triton.cdiv(n, BLOCK_N))
    _masked_mm_kernel[grid](
        x,
        w,
        m,
        live,
        y,
        rows,
        n,
        k,
        *x.stride(),
        *w.stride(),
        *m.stride(),
        *live.stride(),
        *y.stride(),
        IEEE=x.dtype == torch.float32,
        BM=BLOCK_M,
        BN=BLOCK_N,
        BK=BLOCK_K,
    )
    return y


def _supported(x: Tensor, weight: Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float16, torch.bfloat16) and weight.dtype == x.dtype


def masked_linear(x: Tensor, weight: Tensor, mask: Tensor) -> Tensor | None:
    """``x @ (weight ⊙ mask)ᵀ`` for a 2-D ``x``; ``mask`` broadcasts to ``weight``."""
    if not _supported(x, weight):
        return None
    m = mask.expand(weight.shape)
    return _masked_mm(x, weight, m, live_blocks(mask, tuple(weight.shape)))


def masked_linear_grad_input(grad: Tensor, weight: Tensor, mask: Tensor) -> Tensor | None:
    """``grad @ (weight ⊙ mask)``: the same kernel reading the weight and mask transposed."""
    if not _supported(grad, weight):
        return None
    m = mask.expand(weight.shape)
    live = live_blocks(mask, tuple(weight.shape))
    # the transposed problem tiles N by BLOCK_N and K by BLOCK_K the other way round; with square
    # tiles the skip table is the transpose of the forward's
    assert BLOCK_N == BLOCK_K
    return _masked_mm(grad, weight.t(), m.t(), live.t())


@triton.jit
def _bsr_kernel(
    x_ptr,
    crow_ptr,
    col_ptr,
    v_ptr,
    y_ptr,
    n,
    k,
    out_features,
    IEEE: tl.constexpr,
    BM: tl.constexpr,
    B: tl.constexpr,
):
    pid_m = tl.program_id(0)
    block_row = tl.program_id(1)
    rows = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)
    inner = tl.arange(0, B)
    row_ok = rows < n
    acc = tl.zeros((BM, B), dtype=tl.float32)
    start = tl.load(crow_ptr + block_row)
    end = tl.load(crow_ptr + block_row + 1)
    for p in range(start, end):
        col = tl.load(col_ptr + p).to(tl.int64)
        a = tl.load(
            x_ptr + rows[:, None] * k + col * B + inner[None, :], mask=row_ok[:, None], other=0.0
        )
        w = tl.load(v_ptr + p * (B * B) + inner[:, None] * B + inner[None, :])
        acc = dot_acc(acc, a, tl.trans(w), IEEE)
    out = y_ptr + rows[:, None] * out_features + block_row * B + inner[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None])


def bsr_linear(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, out_features: int) -> Tensor:
    """``x (n, k) @ Wᵀ`` for ``W`` given as int32 BSR indices and ``(nnz_blocks, b, b)`` values."""
    n, k = x.shape
    b = values.shape[-1]
    y = torch.empty(n, out_features, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    block_m = 16 if n <= 16 else 64
    grid = (triton.cdiv(n, block_m), out_features // b)
    _bsr_kernel[grid](
        x,
        crow,
        col,
        values,
        y,
        n,
        k,
        out_features,
        IEEE=x.dtype == torch.float32,
        BM=block_m,
        B=b,
    )
    return y
