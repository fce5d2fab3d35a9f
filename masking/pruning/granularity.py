"""Mask granularities: what one mask entry covers, one class per kind.

A granularity knows the shape its masks are stored at (:meth:`~Granularity.mask_shape`), how it
scores a weight (its magnitude reduced to that shape, :meth:`~Granularity.scores`), which entries
survive at a sparsity (:meth:`~Granularity.select`) and how a stored mask expands onto the weight
(:meth:`~Granularity.expand`). The pruner asks the granularity; it never compares names.

- :class:`WeightGranularity` (``weight``): one entry per weight (unstructured).
- :class:`ChannelGranularity` (``channel``): one entry per output channel, shared by everything
  coupled to it (structured: compaction removes the channels).
- :class:`BlockGranularity` (``block16x16``): one entry per ``rows × cols`` tile of the weight's
  GEMM view ``(C_out, C_in·kh·kw)``.
- :class:`NMGranularity` (``2:4``): ``n`` of every ``m`` consecutive input channels kept (2:4 is the
  GPU sparse pattern).

Example:
    >>> block = parse_granularity("block2x2")
    >>> weight = torch.arange(16.0).view(4, 4)
    >>> block.mask_shape(weight.shape), block.scores(weight).shape
    ((2, 2), torch.Size([2, 2]))
    >>> (keep,) = block.select([block.scores(weight)], 0.5, allocation="layer")
    >>> block.expand(keep.float(), weight.shape)
    tensor([[0., 0., 0., 0.],
            [0., 0., 0., 0.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.]])
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .groups import Member
from .schedule import check_sparsity

__all__ = [
    "ALLOCATIONS",
    "BlockGranularity",
    "ChannelGranularity",
    "Granularity",
    "NMGranularity",
    "WeightGranularity",
    "block_scores",
    "gemm_view",
    "nm_view",
    "parse_granularity",
]

# How the entries to drop are chosen across layers: below one threshold for all (``global``), or
# the same fraction of every layer (``layer``).
ALLOCATIONS = ("global", "layer")


class Granularity(ABC):
    """What one mask entry covers; subclasses are the granularities.

    Attributes:
        default_allocation: the allocation ``Pruner(allocation="auto")`` uses.
    """

    default_allocation: ClassVar[str] = "global"

    @property
    def structured(self) -> bool:
        """Whether masks remove whole coupled channels (so a pruned model can be compacted)."""
        return False

    @property
    def sparsity_kind(self) -> str:
        """What the sparsity counts: ``"channel"`` (fraction of channels) or ``"param"``."""
        return "param"

    @property
    def fixed_sparsity(self) -> float | None:
        """The sparsity the pattern implies (n:m), or None when the schedule chooses it."""
        return None

    @property
    def elementwise(self) -> bool:
        """Whether every weight has its own mask entry (so an estimator may read the weight)."""
        return False

    @abstractmethod
    def __str__(self) -> str: ...

    @abstractmethod
    def mask_shape(self, weight_shape: Sequence[int]) -> tuple[int, ...]:
        """The stored mask shape for one weight of ``weight_shape``."""

    @abstractmethod
    def scores(self, weight: Tensor) -> Tensor:
        """The weight's magnitude reduced to :meth:`mask_shape` (float; higher survives)."""

    @abstractmethod
    def expand(self, mask: Tensor, weight_shape: Sequence[int], *, dim: int = 0) -> Tensor:
        """``mask`` (at :meth:`mask_shape`) as a tensor that broadcasts onto the weight.

        ``dim`` is the weight dimension a per-channel mask runs along (1 for a transposed
        convolution's output channels); the other granularities do not use it.
        """

    @abstractmethod
    def _select(
        self,
        importances: Sequence[Tensor],
        sparsity: float,
        allocation: str,
        sizes: Sequence[Tensor | None],
        round_to: int,
    ) -> list[Tensor]: ...

    def select(
        self,
        importances: Sequence[Tensor],
        sparsity: float,
        *,
        allocation: str,
        sizes: Sequence[Tensor | None] | None = None,
        round_to: int = 1,
    ) -> list[Tensor]:
        """Which mask entries survive so the masked layers reach ``sparsity``.

        Args:
            importances: one score tensor per mask (at its mask shape); higher survives.
            sparsity: the fraction of zeros, in [0, 1).
            allocation: ``"global"`` (one threshold across masks) or ``"layer"`` (every mask at
                ``sparsity``). n:m masks keep their pattern in every group either way.
            sizes: per mask, the number of weights each entry covers where entries differ (block
                edges, see :meth:`entry_sizes`), else None.
            round_to: channel granularity: kept entries per mask rounded up to a multiple of this.

        Returns:
            One bool tensor per mask, of its shape; every mask keeps at least one entry.
        """
        sparsity = check_sparsity("sparsity", sparsity)
        if allocation not in ALLOCATIONS:
            raise ValueError(
                f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}"
            )
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise ValueError(f"round_to must be an int >= 1, got {round_to!r}")
        sizes = [None] * len(importances) if sizes is None else list(sizes)
        if len(sizes) != len(importances):
            raise ValueError(
                f"sizes must have one entry per importance ({len(importances)}), got {len(sizes)}"
            )
        return self._select(list(importances), sparsity, allocation, sizes, round_to)

    def entry_sizes(self, weight_shape: Sequence[int]) -> Tensor | None:
        """Weights per mask entry, where entries differ (block edges); None when all are equal."""
        return None

    def misfit(self, weight_shape: Sequence[int]) -> str | None:
        """Why a weight of this shape cannot take this granularity, or None if it can."""
        return None


class _TopK(Granularity):
    """Entries ranked one by one: the ``k`` best of a mask, or those above a global threshold."""

    def _comparable(self, score: Tensor) -> Tensor:
        """Scores on the scale that global allocation compares across masks."""
        return score

    def _rounded(self, keep: int, entries: int, round_to: int) -> int:
        """``keep`` (>= 1) adjusted to the counts a mask may keep."""
        return keep

    def _select(self, importances, sparsity, allocation, sizes, round_to):
        if allocation == "layer":
            keeps = []
            for importance in importances:
                n = importance.numel()
                count = self._rounded(max(1, n - round(sparsity * n)), n, round_to)
                keeps.append(_topk_keep(importance, count))
            return keeps
        scores = [self._comparable(imp.float()).reshape(-1) for imp in importances]
        flat = torch.cat(scores)
        drop = round(sparsity * flat.numel())
        threshold = flat.kthvalue(drop).values if drop > 0 else flat.min() - 1
        keeps = []
        for importance, score in zip(importances, scores):
            keep = score > threshold
            count = int(keep.sum())
            fixed = self._rounded(max(count, 1), score.numel(), round_to)  # every mask keeps one
            if fixed != count:
                keep = _topk_keep(score, fixed)
            keeps.append(keep.view(importance.shape))
        return keeps


class _Elementwise:
    """One mask entry per weight, scored by magnitude: what unstructured and n:m masks share."""

    @property
    def elementwise(self) -> bool:
        return True

    def mask_shape(self, weight_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(weight_shape)

    def scores(self, weight: Tensor) -> Tensor:
        return weight.detach().abs().float()

    def expand(self, mask: Tensor, weight_shape: Sequence[int], *, dim: int = 0) -> Tensor:
        return mask


@dataclass(frozen=True)
class WeightGranularity(_Elementwise, _TopK):
    """One mask entry per weight (unstructured sparsity)."""

    def __str__(self) -> str:
        return "weight"


@dataclass(frozen=True)
class ChannelGranularity(_TopK):
    """One mask entry per output channel, shared by every parameter coupled to it.

    In the pruner a mask covers one coupled channel group (``masking.pruning.graph``), scored by
    :meth:`group_scores`; :meth:`mask_shape`, :meth:`scores` and :meth:`expand` describe the mask
    of a lone weight's output channels (dimension ``dim``).
    """

    default_allocation: ClassVar[str] = "layer"

    def __str__(self) -> str:
        return "channel"

    @property
    def structured(self) -> bool:
        return True

    @property
    def sparsity_kind(self) -> str:
        return "channel"

    def mask_shape(self, weight_shape: Sequence[int]) -> tuple[int, ...]:
        return (weight_shape[0],)

    def scores(self, weight: Tensor) -> Tensor:
        """L2 norm of every output channel's weights."""
        return _channel_energy(weight.detach().float(), 0).sqrt()

    def group_scores(self, size: int, members: Iterable[tuple[Member, Tensor]]) -> Tensor:
        """L2 norm per channel of a group over its members' multi-dimensional (conv / linear)
        tensors; over its one-dimensional ones (batch norm scales) when it has no other.

        Args:
            size: the group's channel count.
            members: each member with the (unmasked) tensor it names.
        """
        total = torch.zeros(size)
        fallback = torch.zeros(size)
        for member, tensor in members:
            tensor = tensor.detach().float().cpu()
            energy = _channel_energy(tensor, member.dim)[list(member.rows)]
            target = total if tensor.dim() > 1 else fallback
            target.index_add_(0, torch.tensor(member.channels, dtype=torch.long), energy)
        return (total if total.any() else fallback).sqrt()

    def expand(self, mask: Tensor, weight_shape: Sequence[int], *, dim: int = 0) -> Tensor:
        shape = [1] * len(weight_shape)
        shape[dim] = -1
        return mask.view(shape)

    def _comparable(self, score: Tensor) -> Tensor:
        # channel norms grow with a layer's fan-in: compare each layer's scores by their shape
        return score / score.abs().mean().clamp_min(1e-12)

    def _rounded(self, keep: int, entries: int, round_to: int) -> int:
        return min(entries, math.ceil(keep / round_to) * round_to)


@dataclass(frozen=True)
class BlockGranularity(Granularity):
    """One mask entry per ``rows × cols`` tile of the weight's GEMM view (edge tiles smaller).

    Tiles are scored by their L2 norm and weigh what they hold when the sparsity is counted, so a
    small edge tile counts for its own weights only.
    """

    rows: int
    cols: int

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"block {name} must be an int >= 1, got {value!r}")

    def __str__(self) -> str:
        return f"block{self.rows}x{self.cols}"

    @property
    def block(self) -> tuple[int, int]:
        """``(rows, cols)`` of one tile."""
        return (self.rows, self.cols)

    def mask_shape(self, weight_shape: Sequence[int]) -> tuple[int, ...]:
        rows, cols = weight_shape[0], math.prod(weight_shape[1:])
        return (math.ceil(rows / self.rows), math.ceil(cols / self.cols))

    def scores(self, weight: Tensor) -> Tensor:
        return block_scores(weight, self.block)

    def expand(self, mask: Tensor, weight_shape: Sequence[int], *, dim: int = 0) -> Tensor:
        rows, cols = weight_shape[0], math.prod(weight_shape[1:])
        full = mask.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1)
        return full[:rows, :cols].reshape(tuple(weight_shape))

    def entry_sizes(self, weight_shape: Sequence[int]) -> Tensor:
        ones = torch.ones(weight_shape[0], math.prod(weight_shape[1:]))
        return block_scores(ones, self.block).square().round()

    def _select(self, importances, sparsity, allocation, sizes, round_to):
        entries = [
            (imp, torch.ones(imp.shape) if size is None else size)
            for imp, size in zip(importances, sizes)
        ]
        if allocation == "global":
            return _select_weighted(entries, sparsity)
        return [keep for entry in entries for keep in _select_weighted([entry], sparsity)]


@dataclass(frozen=True)
class NMGranularity(_Elementwise, Granularity):
    """``n`` of every ``m`` consecutive input channels kept, at every output and kernel position.

    Groups run along input channels (the channels-last GEMM order the sparse kernels read). The
    pattern fixes the sparsity at ``1 - n/m``; below it (early in a schedule) more of each group
    is kept, never fewer than ``n``.
    """

    n: int
    m: int

    default_allocation: ClassVar[str] = "layer"

    def __post_init__(self) -> None:
        valid = all(not isinstance(v, bool) and isinstance(v, int) for v in (self.n, self.m))
        if not (valid and 1 <= self.n < self.m):
            raise ValueError(f"n:m needs ints with 1 <= n < m, got n={self.n!r}, m={self.m!r}")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def fixed_sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def misfit(self, weight_shape: Sequence[int]) -> str | None:
        if weight_shape[1] % self.m:
            return f"input channels are not a multiple of {self.m} for {self}"
        return None

    def _select(self, importances, sparsity, allocation, sizes, round_to):
        kept = min(self.m, max(self.n, self.m - round(sparsity * self.m)))
        keeps = []
        for importance in importances:
            scores = nm_view(importance)
            rank = scores.reshape(*scores.shape[:-1], -1, self.m).argsort(-1, descending=True)
            keep = torch.zeros_like(rank, dtype=torch.bool)
            keep.scatter_(-1, rank[..., :kept], True)
            keeps.append(_nm_unview(keep.reshape(scores.shape), importance))
        return keeps


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
        return WeightGranularity()
    if text in ("channel", "structured", "filter"):
        return ChannelGranularity()
    if match := re.fullmatch(r"block:?(\d+)x(\d+)", text):
        rows, cols = int(match[1]), int(match[2])
        if rows >= 1 and cols >= 1:
            return BlockGranularity(rows, cols)
    if match := re.fullmatch(r"(\d+):(\d+)", text):
        n, m = int(match[1]), int(match[2])
        if 1 <= n < m:
            return NMGranularity(n, m)
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


def _nm_unview(mask: Tensor, like: Tensor) -> Tensor:
    if like.dim() == 2:
        return mask.squeeze(1)
    return mask.transpose(1, 2).reshape(like.shape)


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


def _channel_energy(tensor: Tensor, dim: int) -> Tensor:
    """Sum of squares of every slice of ``tensor`` along ``dim``."""
    return tensor.movedim(dim, 0).reshape(tensor.shape[dim], -1).square().sum(1)


def _topk_keep(importance: Tensor, keep_count: int) -> Tensor:
    flat = importance.reshape(-1)
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[flat.topk(keep_count, sorted=False).indices] = True
    return keep.view(importance.shape)


def _select_weighted(entries: list[tuple[Tensor, Tensor]], sparsity: float) -> list[Tensor]:
    """Drop the lowest-importance entries until the dropped weights are closest to ``sparsity``;
    ``entries`` holds ``(importance, weights per entry)`` per mask."""
    scores = torch.cat([importance.float().reshape(-1) for importance, _ in entries])
    counts = torch.cat([count.reshape(-1).to(scores.device) for _, count in entries])
    order = scores.argsort()
    dropped = counts[order].cumsum(0)
    goal = sparsity * float(counts.sum())
    drop = int((dropped - goal).abs().argmin()) + 1 if goal > 0 else 0
    if drop and abs(float(dropped[drop - 1]) - goal) > goal:  # dropping nothing is closer
        drop = 0
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[order[:drop]] = False
    keeps = []
    start = 0
    for importance, _ in entries:
        n = importance.numel()
        part = keep[start : start + n]
        if not part.any():  # every mask keeps something
            part[importance.reshape(-1).argmax()] = True
        keeps.append(part.view(importance.shape))
        start += n
    return keeps
