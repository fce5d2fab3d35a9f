"""Mask granularities: the shape a mask is stored at, and how it expands onto a weight."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Granularity:
    """What one mask entry covers.

    - ``weight``: one entry per weight (unstructured).
    - ``channel``: one entry per output channel, shared by everything coupled to it (structured).
    - ``block``: one entry per ``rows × cols`` tile of the weight's GEMM view ``(C_out, C_in·kh·kw)``.
    - ``n:m``: ``n`` of every ``m`` consecutive input channels kept (2:4 is the GPU sparse pattern).
    """

    kind: str
    block: tuple[int, int] = (1, 1)
    n: int = 0
    m: int = 0

    def __str__(self) -> str:
        if self.kind == "block":
            return f"block{self.block[0]}x{self.block[1]}"
        if self.kind == "n:m":
            return f"{self.n}:{self.m}"
        return self.kind

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity the pattern implies (n:m), or None when the schedule chooses it."""
        return 1.0 - self.n / self.m if self.kind == "n:m" else None


def parse_granularity(value: str | Granularity) -> Granularity:
    """Parse ``weight``, ``channel``, ``block4x4`` (or ``block:16x16``) or ``2:4`` (any ``n:m``).

    Example:
        >>> parse_granularity("block16x16").block, parse_granularity("2:4").m
        ((16, 16), 4)
    """
    if isinstance(value, Granularity):
        return value
    text = str(value).strip().lower()
    if text in ("weight", "unstructured", "element"):
        return Granularity("weight")
    if text in ("channel", "structured", "filter"):
        return Granularity("channel")
    if match := re.fullmatch(r"block:?(\d+)x(\d+)", text):
        rows, cols = int(match[1]), int(match[2])
        if rows >= 1 and cols >= 1:
            return Granularity("block", block=(rows, cols))
    if match := re.fullmatch(r"(\d+):(\d+)", text):
        n, m = int(match[1]), int(match[2])
        if 1 <= n < m:
            return Granularity("n:m", n=n, m=m)
    raise ValueError(
        f"granularity must be 'weight', 'channel', 'block<R>x<C>' (e.g. block4x4) or 'n:m' with "
        f"1 <= n < m (e.g. 2:4), got {value!r}"
    )


def gemm_view(weight: Tensor) -> Tensor:
    """The weight as the ``(C_out, rest)`` matrix of its GEMM (Linear as is, conv flattened)."""
    return weight.reshape(weight.shape[0], -1)


def nm_view(weight: Tensor) -> Tensor:
    """``(C_out, kh·kw, C_in)``: for n:m, groups run along input channels (channels-last GEMM order)."""
    if weight.dim() == 2:
        return weight.unsqueeze(1)
    return weight.flatten(2).transpose(1, 2)


def nm_unview(mask: Tensor, like: Tensor) -> Tensor:
    if like.dim() == 2:
        return mask.squeeze(1)
    return mask.transpose(1, 2).reshape(like.shape)


def mask_shape(granularity: Granularity, weight_shape: torch.Size) -> tuple[int, ...]:
    """The stored mask shape for one weight (``channel`` masks are per group, not per weight)."""
    if granularity.kind == "block":
        rows = weight_shape[0]
        cols = math.prod(weight_shape[1:])
        return (math.ceil(rows / granularity.block[0]), math.ceil(cols / granularity.block[1]))
    return tuple(weight_shape)


def block_scores(weight: Tensor, block: tuple[int, int]) -> Tensor:
    """L2 norm of every ``block`` tile of the GEMM view (edge tiles zero-padded)."""
    view = gemm_view(weight.detach().float())
    rows, cols = view.shape
    pad_r, pad_c = (-rows) % block[0], (-cols) % block[1]
    squared = F.pad(view.square(), (0, pad_c, 0, pad_r))
    pooled = squared.reshape(
        squared.shape[0] // block[0], block[0], squared.shape[1] // block[1], block[1]
    ).sum((1, 3))
    return pooled.sqrt()


def expand_block_mask(mask: Tensor, block: tuple[int, int], weight_shape: torch.Size) -> Tensor:
    """Blow a per-tile mask up to the weight's shape."""
    rows = weight_shape[0]
    cols = math.prod(weight_shape[1:])
    full = mask.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)
    return full[:rows, :cols].reshape(weight_shape)
