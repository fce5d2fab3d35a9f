"""Inference paths for baked sparse weights: one GEMM ``y = x @ Wᵀ (+ b)`` in several storage formats.

A path packs a dense-with-zeros 2-D weight ``(out, in)`` once and multiplies activations ``(n, in)``
with it on every call. Which path serves a layer is decided by ``masking.kernels.table`` from
measurements; ``dense`` is the reference every other path must match and the fallback everywhere.

Paths (each is correct wherever ``supports`` says so; only the table says whether it is faster):

- ``dense``: ``F.linear`` on the weight with its zeros.
- ``rows``: the rows (output features) that are entirely zero are dropped and their outputs written
  as zeros: a channel-compacted dense GEMM without changing the layer's shape.
- ``csr``: torch.sparse CSR (MKL on CPU, cuSPARSE on CUDA), fp32/fp64.
- ``bsr16``/``bsr32``/``bsr64``: torch.sparse BSR with square blocks; pays when zeros come in blocks.
- ``triton_bsr16``/``32``/``64`` (CUDA, or CPU under ``TRITON_INTERPRET=1``): this package's Triton
  block-sparse matmul, fp16/bf16/fp32.
- ``semi24`` (CUDA with compute capability ≥ 8.0, fp16/bf16): torch's semi-structured 2:4 kernels.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .dispatch import triton_importable
from .ops import bsr_linear

BSR_BLOCKS = (16, 32, 64)
PATHS = (
    "dense",
    "rows",
    "csr",
    *(f"bsr{b}" for b in BSR_BLOCKS),
    *(f"triton_bsr{b}" for b in BSR_BLOCKS),
    "semi24",
)


def block_of(path: str) -> int | None:
    """The block size of a BSR path, ``None`` for the others."""
    for prefix in ("triton_bsr", "bsr"):
        if path.startswith(prefix):
            return int(path[len(prefix) :])
    return None


def path_sparsity(weight: Tensor, path: str) -> float:
    """The fraction of the weight that ``path`` skips: zero entries (csr), zero rows (rows), zero
    ``b×b`` blocks (bsr*), 0 for dense; for ``semi24`` the fraction of zeros if every group of four
    along the input holds at most two non-zeros, else 0 (the path cannot represent the weight)."""
    if path == "dense":
        return 0.0
    nonzero = weight != 0
    if path == "csr":
        return _zero_fraction(nonzero)
    if path == "rows":
        return _zero_fraction(nonzero.any(1))
    if path == "semi24":
        if weight.shape[1] % 4 or (nonzero.view(weight.shape[0], -1, 4).sum(-1) > 2).any():
            return 0.0
        return _zero_fraction(nonzero)
    b = block_of(path)
    if b is None:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if weight.shape[0] % b or weight.shape[1] % b:
        return 0.0
    return _zero_fraction(
        nonzero.view(weight.shape[0] // b, b, weight.shape[1] // b, b).any(3).any(1)
    )


def _zero_fraction(kept: Tensor) -> float:
    """Exact fraction of ``False`` entries (a float32 mean rounds 0.9 to 0.89999998)."""
    return 1.0 - int(kept.count_nonzero()) / max(kept.numel(), 1)


def supports(path: str, weight: Tensor) -> str | None:
    """``None`` if ``path`` can run ``weight`` on its device and dtype, else why not."""
    if path not in PATHS:
        return f"unknown path {path!r}; expected one of {PATHS}"
    if weight.dim() != 2:
        return f"expected a 2-D weight, got shape {tuple(weight.shape)}"
    cuda, dtype = weight.is_cuda, weight.dtype
    if path in ("csr", "bsr16", "bsr32", "bsr64"):
        allowed = (torch.float32, torch.float64) + ((torch.float16, torch.bfloat16) if cuda else ())
        if dtype not in allowed:
            return f"torch.sparse on {weight.device.type} has no {dtype} matmul"
    b = block_of(path)
    if b is not None and (weight.shape[0] % b or weight.shape[1] % b):
        return f"shape {tuple(weight.shape)} is not a multiple of the {b}×{b} block"
    if path.startswith("triton_bsr"):
        if not triton_importable():
            return "triton is not installed"
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return f"the Triton BSR kernel takes fp32/fp16/bf16, not {dtype}"
        if not cuda and not _interpreting():
            return "the Triton BSR kernel runs on CUDA (or on CPU under TRITON_INTERPRET=1)"
    if path == "semi24":
        if not cuda or torch.cuda.get_device_capability(weight.device) < (8, 0):
            return "2:4 semi-structured kernels need a CUDA GPU of compute capability ≥ 8.0"
        if dtype not in (torch.float16, torch.bfloat16):
            return f"2:4 semi-structured kernels take fp16/bf16, not {dtype}"
        if path_sparsity(weight, "semi24") == 0.0:
            return "the weight is not 2:4 sparse along its input dimension"
    return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class Packed:
    """A weight stored for one path; ``packed(x2d)`` is ``x2d @ Wᵀ`` (bias not included)."""

    def __init__(self, weight: Tensor, path: str) -> None:
        why = supports(path, weight)
        if why is not None:
            raise ValueError(f"path {path!r}: {why}")
        self.path = path
        self.shape = tuple(weight.shape)
        self.dtype = weight.dtype
        w = weight.detach()
        b = block_of(path)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse (CSR|BSR) tensor support is in beta")
            self.data = self._pack(w, path, b)

    @staticmethod
    def _pack(w: Tensor, path: str, b: int | None) -> tuple[Tensor, ...]:
        if path == "rows":
            kept = w.ne(0).any(1).nonzero().flatten()
            return (w.index_select(0, kept).contiguous(), kept)
        if path == "csr":
            return (w.to_sparse_csr(),)
        if path.startswith("bsr"):
            return (w.to_sparse_bsr((b, b)),)
        if path.startswith("triton_bsr"):
            blocks = w.to_sparse_bsr((b, b))
            return (
                blocks.crow_indices().to(torch.int32),
                blocks.col_indices().to(torch.int32),
                blocks.values().contiguous(),
            )
        if path == "semi24":
            from torch.sparse import to_sparse_semi_structured

            return (to_sparse_semi_structured(w.contiguous()),)
        return (w.contiguous(),)

    def __call__(self, x: Tensor) -> Tensor:
        path, data = self.path, self.data
        if path in ("dense", "semi24"):
            return F.linear(x, data[0])
        if path == "rows":
            kept_weight, kept = data
            out = x.new_zeros(x.shape[0], self.shape[0])
            return out.index_copy_(1, kept, F.linear(x, kept_weight)) if kept.numel() else out
        if path.startswith("triton_bsr"):
            return bsr_linear(x.contiguous(), *data, self.shape[0])
        # (W xᵀ)ᵀ: MKL and cuSPARSE multiply a sparse left operand
        return torch.sparse.mm(data[0], x.t().contiguous()).t()

    def to(self, device: torch.device | str) -> Packed:
        """The same packed weight on ``device``; the sparse formats are moved, not rebuilt."""
        moved = Packed.__new__(Packed)
        moved.__dict__.update(self.__dict__)
        moved.data = tuple(t.to(device) for t in self.data)
        return moved
