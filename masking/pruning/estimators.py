"""Mask estimators: how a mask is chosen and learned, behind one interface.

A *mask source* holds one mask at its granularity (a weight's shape, a ``(rows, cols)`` block grid,
or one entry per channel of a coupled group). The pruner decides how many entries survive (the
schedule and the allocation) by ranking :meth:`MaskSource.importance` and writes the result into the
``keep`` buffer; the estimator turns ``keep`` and its own state into the mask that multiplies the
weight, and may add a penalty to the loss:

=================  =========================================  ====================================
estimator          mask (forward)                             learned state, penalty
=================  =========================================  ====================================
``magnitude``      ``keep`` (top-k of ``|W|``)                nothing (the baseline)
``movement``       ``keep``, straight-through to the scores   scores (init ``|W|``), none
``hard_concrete``  ``keep ⊙ z``, z a hard-concrete gate       ``log α``, expected L0 density
``str``            ``keep ⊙ relu(1 − τ/|W|)`` (soft thresh.)  threshold ``τ = σ(s)·scale``, ``s²``
``slimming``       ``keep`` (top-k of ``|γ|`` of BatchNorm)   nothing, L1 on the BN scales ``γ``
=================  =========================================  ====================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MagnitudeStats:
    """What a learned estimator scales its initial state by: the statistics of the magnitudes that
    the allocation compares. With global allocation those are every masked layer's together, so
    the learned state starts in the global magnitude ranking (the mask at the start is
    ``magnitude``'s); per layer, the layer's own.

    Args:
        mean: mean magnitude.
        log_mean, log_std: mean and standard deviation of the log magnitude.
    """

    mean: float
    log_mean: float
    log_std: float

    @classmethod
    def of(cls, magnitudes: Sequence[Tensor]) -> MagnitudeStats:
        values = torch.cat([m.detach().float().flatten() for m in magnitudes])
        logs = values.clamp_min(1e-12).log()
        std = float(logs.std()) if logs.numel() > 1 else 1.0
        return cls(
            mean=max(float(values.mean()), 1e-12),
            log_mean=float(logs.mean()),
            log_std=max(std, 1e-6),
        )


class MaskSource(nn.Module):
    """One mask at its granularity; subclasses are the estimators.

    Args:
        shape: the stored mask shape.
        magnitude: the initial magnitude importance (same shape), used to initialise learned state.
    """

    name = "base"
    learned = False  # has parameters the mask optimizer trains
    ranks_by_magnitude = True  # importance is the weights' magnitude, refreshed by the pruner
    stochastic = False  # the training-mode mask is sampled (evaluation uses a fixed one)
    takes_stats = False  # scales its initial state by MagnitudeStats (keyword ``stats``)

    def __init__(self, shape: tuple[int, ...], magnitude: Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", torch.ones(shape, dtype=torch.bool))
        # The latest magnitude importance (refreshed by the pruner); not needed to resume.
        self.register_buffer("magnitude", magnitude.detach().float().clone(), persistent=False)
        self._keep_float: tuple[tuple, Tensor] | None = None

    def importance(self) -> Tensor:
        """Higher survives; compared across sources for global allocation."""
        return self.magnitude

    def keep_float(self) -> Tensor:
        """``keep`` as a float tensor, converted again only after ``keep`` changed: the masks of a
        training step are recomputed every few steps, not every step. Do not modify it."""
        key = (self.keep._version, self.keep.data_ptr(), self.keep.device)
        if self._keep_float is None or self._keep_float[0] != key:
            self._keep_float = (key, self.keep.float())
        return self._keep_float[1]

    def mask(self, weight: Tensor | None, resample: bool) -> Tensor:
        """The mask at this source's granularity (float, values in [0, 1])."""
        return self.keep_float()

    def penalty(self) -> tuple[Tensor, int] | None:
        """``(sum, count)`` of the estimator's penalty terms, or None."""
        return None

    def extra_repr(self) -> str:
        kept = int(self.keep.sum())
        return f"shape={tuple(self.keep.shape)}, kept={kept}/{self.keep.numel()}"


class MagnitudeMask(MaskSource):
    """Fixed masks from weight magnitude (L2 norm per block or channel): the baseline."""

    name = "magnitude"


class MovementMask(MaskSource):
    """Straight-through top-k on learned scores (movement pruning / edge-popup family).

    The forward mask is the hard ``keep`` selected from the scores; the backward pass treats it as
    the identity, so ``∂L/∂score = ∂L/∂mask = ∂L/∂(W ⊙ m) · W``: weights moving away from zero gain
    score. Scores start at the magnitude normalised to mean 1, so fine-tuning starts from the
    magnitude ranking and moves from there.
    """

    name = "movement"
    learned = True
    ranks_by_magnitude = False
    takes_stats = True

    def __init__(
        self, shape: tuple[int, ...], magnitude: Tensor, *, stats: MagnitudeStats | None = None
    ) -> None:
        super().__init__(shape, magnitude)
        stats = stats or MagnitudeStats.of([magnitude])
        self.scores = nn.Parameter(magnitude.detach().float() / stats.mean)

    def importance(self) -> Tensor:
        return self.scores.detach()

    def mask(self, weight: Tensor | None, resample: bool) -> Tensor:
        return _StraightThrough.apply(self.keep_float(), self.scores)


class _StraightThrough(torch.autograd.Function):
    """Forward: the hard mask, without touching the scores; backward: its gradient to the scores.

    Equal to ``hard + (scores - scores.detach())`` with none of its three full-size passes.
    """

    @staticmethod
    def forward(ctx, hard: Tensor, scores: Tensor) -> Tensor:
        return hard.view_as(hard)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, grad


class HardConcreteMask(MaskSource):
    """Hard-concrete gates with an expected-L0 penalty (Louizos, Welling & Kingma, 2018).

    In training each entry is a stretched, clamped concrete sample ``z ∈ [0, 1]`` with location
    ``log α``; in evaluation its deterministic value. The penalty is the expected fraction of
    non-zero gates, ``mean σ(log α − β log(−γ/ζ))``. ``log α`` starts open (``init_open``) and
    ordered by magnitude, standardised by ``stats`` (every layer's under global allocation), so the
    pretrained network is unchanged at the start and the first mask is ``magnitude``'s.

    Args:
        temperature, stretch: ``β`` and ``(γ, ζ)`` of the hard-concrete distribution.
        init_open: initial mean of ``log α``.
        stats: the magnitude statistics ``log α`` is standardised by (default: this source's).
    """

    name = "hard_concrete"
    learned = True
    ranks_by_magnitude = False
    stochastic = True
    takes_stats = True

    def __init__(
        self,
        shape: tuple[int, ...],
        magnitude: Tensor,
        *,
        temperature: float = 2.0 / 3.0,
        stretch: tuple[float, float] = (-0.1, 1.1),
        init_open: float = 3.0,
        stats: MagnitudeStats | None = None,
    ) -> None:
        super().__init__(shape, magnitude)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        low, high = stretch
        if not (low < 0 and high > 1):
            raise ValueError(f"stretch must be (γ < 0, ζ > 1), got {stretch!r}")
        self.temperature, self.low, self.high = float(temperature), float(low), float(high)
        stats = stats or MagnitudeStats.of([magnitude])
        log_mag = magnitude.detach().float().clamp_min(1e-12).log()
        spread = (log_mag - stats.log_mean) / stats.log_std
        # about 0.5·spread near the middle, within ±1.5 at the ends, and strictly increasing (a
        # clamp would tie the largest weights and break the magnitude order there)
        self.log_alpha = nn.Parameter(init_open + 1.5 * torch.tanh(spread / 3))
        self._noise: Tensor | None = None

    def importance(self) -> Tensor:
        return self.log_alpha.detach()

    def gate(self, resample: bool) -> Tensor:
        if self.training:
            if resample or self._noise is None or self._noise.shape != self.log_alpha.shape:
                u = torch.rand_like(self.log_alpha).clamp_(1e-6, 1 - 1e-6)
                self._noise = u.log() - (-u).log1p()
            s = torch.sigmoid((self._noise + self.log_alpha) / self.temperature)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    def mask(self, weight: Tensor | None, resample: bool) -> Tensor:
        return self.keep_float() * self.gate(resample)

    def penalty(self) -> tuple[Tensor, int]:
        shift = self.temperature * math.log(-self.low / self.high)
        return torch.sigmoid(self.log_alpha - shift).sum(), self.log_alpha.numel()

    def __getstate__(self):  # the sampled noise is scratch, never saved or copied
        state = super().__getstate__()
        return {**state, "_noise": None}


class STRMask(MaskSource):
    """Soft threshold reparameterisation (Kusupati et al., 2020): ``W ⊙ relu(1 − τ/|W|)``.

    That is ``sign(W)·relu(|W| − τ)``: weights below the learned threshold ``τ = σ(s)·scale`` are
    zero, the rest shrink by ``τ``. ``scale`` is the layer's mean magnitude at the start, so one
    ``s`` means the same relative threshold in every layer. For blocks and channels ``|W|`` is the
    block's or channel's norm (refreshed every pruner step; the gradient flows to ``s`` only). The
    penalty ``s²`` is STR's weight decay on ``s``, pulling the threshold up from ``σ(init)``.
    """

    name = "str"
    learned = True

    def __init__(self, shape: tuple[int, ...], magnitude: Tensor, *, init: float = -5.0) -> None:
        super().__init__(shape, magnitude)
        self.register_buffer("scale", magnitude.detach().float().mean().clamp_min(1e-12))
        self.s = nn.Parameter(torch.tensor(float(init)))

    def threshold(self) -> Tensor:
        return torch.sigmoid(self.s) * self.scale

    def importance(self) -> Tensor:
        return self.magnitude

    def mask(self, weight: Tensor | None, resample: bool) -> Tensor:
        size = weight.abs().float() if weight is not None else self.magnitude
        return self.keep_float() * torch.relu(1.0 - self.threshold() / size.clamp_min(1e-12))

    def penalty(self) -> tuple[Tensor, int]:
        return self.s.square(), 1


class SlimmingMask(MaskSource):
    """Network slimming (Liu et al., 2017): rank channels by ``|γ|`` of their BatchNorm scales.

    The pruner adds an L1 penalty on those scales (the sparsity-inducing term of the paper) and
    refreshes the importance from them; channels without a BatchNorm fall back to the weight norm.
    """

    name = "slimming"


ESTIMATORS: dict[str, type[MaskSource]] = {
    cls.name: cls for cls in (MagnitudeMask, MovementMask, HardConcreteMask, STRMask, SlimmingMask)
}
