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
``taylor``         ``keep`` (top-k of ``|Σ ∂L/∂W · W|``)      running first-order scores, none
``hard_concrete``  ``keep ⊙ z``, z a hard-concrete gate       ``log α``, expected L0 density
``str``            ``keep ⊙ relu(1 − τ/|W|)`` (soft thresh.)  threshold ``τ = σ(s)·scale``, ``s²``
``slimming``       ``keep`` (top-k of ``|γ|`` of BatchNorm)   nothing, L1 on the BN scales ``γ``
``maskllm``        ``Σ softmax((π+g)/τ)_p · pattern_p`` (n:m)  logits ``π`` per group; weights frozen
=================  =========================================  ====================================
"""

from __future__ import annotations

import itertools
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
    takes_granularity = False  # needs the granularity (keyword ``granularity``)
    freezes_weights = False  # learns the mask alone: the weights stay as they are

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

    def anneal(self, progress: float) -> None:
        """Follow the fine-tuning's progress in [0, 1] (a temperature schedule)."""

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


class TaylorMask(MaskSource):
    """First-order Taylor importance (Molchanov et al. 2019): removing an entry changes the loss by
    about ``Σ ∂L/∂W · W`` over the weights it covers, which is the gradient of the loss with respect
    to the entry's mask value. Each training forward multiplies the mask by a probe of ones whose
    gradient is that sum; ``|·|`` of it is averaged over the backward passes seen (an exponential
    average, ``momentum``). Until a gradient has been seen the importance is the magnitude.

    Args:
        momentum: weight of the running average's past (0: the latest batch only).
    """

    name = "taylor"
    ranks_by_magnitude = False

    def __init__(self, shape: tuple[int, ...], magnitude: Tensor, *, momentum: float = 0.9) -> None:
        super().__init__(shape, magnitude)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.register_buffer("score", torch.zeros(shape))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self._probe: Tensor | None = None

    def importance(self) -> Tensor:
        if int(self.seen) == 0:
            return self.magnitude
        return self.score

    def mask(self, weight: Tensor | None, resample: bool) -> Tensor:
        keep = self.keep_float()
        if not (self.training and torch.is_grad_enabled()):
            return keep
        # one probe per forward pass, shared by every parameter this source masks (the first
        # draws it), so its gradient sums over all of them
        if resample or self._probe is None or self._probe.shape != keep.shape:
            self._probe = torch.ones_like(keep, requires_grad=True)
            self._probe.register_hook(self._record)
        return keep * self._probe

    @torch.no_grad()
    def _record(self, grad: Tensor) -> None:
        value = grad.detach().abs().float().to(self.score.device)
        if int(self.seen) == 0:
            self.score.copy_(value)
        else:
            self.score.mul_(self.momentum).add_(value, alpha=1 - self.momentum)
        self.seen += 1

    def __getstate__(self):  # the probe is scratch, never saved or copied
        state = super().__getstate__()
        return {**state, "_probe": None}


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


class LearnedNMMask(MaskSource):
    """A learned choice among the n:m patterns of every group (MaskLLM, Fang et al., 2024).

    Each group of ``m`` consecutive input weights of a row has one logit per candidate pattern
    (the ``C(m, n)`` ways to keep ``n``). In training the mask is the Gumbel-softmax mixture of the
    patterns at temperature ``τ``, annealed from ``temperature[0]`` to ``temperature[1]`` over the
    fine-tuning (:meth:`anneal`), so the choice is differentiable and hardens as it goes; in
    evaluation it is the most likely pattern of every group: an exact n:m mask. The weights are
    frozen (the mask is what is learned). The logits start from a prior mask (:meth:`set_prior`,
    a one-shot mask such as SparseGPT's; by default the magnitude n:m mask): a pattern's logit is
    ``prior_strength`` times the share of the prior's kept weights it keeps.

    Args:
        granularity: the ``n:m`` granularity.
        temperature: ``(start, end)`` of the Gumbel-softmax temperature.
        prior_strength: the logit lead of the prior's own pattern.
        logit_scale: multiplies the logits (MaskLLM's κ: larger = more decided samples).
    """

    name = "maskllm"
    learned = True
    ranks_by_magnitude = False
    stochastic = True
    takes_granularity = True
    freezes_weights = True

    def __init__(
        self,
        shape: tuple[int, ...],
        magnitude: Tensor,
        *,
        granularity: object,
        temperature: Sequence[float] = (4.0, 0.05),
        prior_strength: float = 3.0,
        logit_scale: float = 10.0,
    ) -> None:
        super().__init__(shape, magnitude)
        n, m = getattr(granularity, "n", None), getattr(granularity, "m", None)
        if n is None or m is None:
            raise ValueError(
                f"maskllm learns n:m masks: it needs granularity=n:m, got {granularity}"
            )
        if len(shape) != 2 or shape[1] % m:
            raise ValueError(
                f"maskllm learns n:m masks of linear weights (out, in) with in a multiple of {m}, "
                f"got shape {tuple(shape)}"
            )
        start, end = (float(t) for t in temperature)
        if not (start > 0 and end > 0):
            raise ValueError(f"temperature must be two numbers > 0, got {temperature!r}")
        self.n, self.m = int(n), int(m)
        self.temperature_range = (start, end)
        self.temperature = start
        self.prior_strength = float(prior_strength)
        self.logit_scale = float(logit_scale)
        patterns = [
            [1.0 if i in kept else 0.0 for i in range(self.m)]
            for kept in itertools.combinations(range(self.m), self.n)
        ]
        self.register_buffer("patterns", torch.tensor(patterns), persistent=False)
        groups = (shape[0], shape[1] // self.m, len(patterns))
        self.logits = nn.Parameter(torch.zeros(groups))
        self._noise: Tensor | None = None
        self.set_prior(self._magnitude_prior(magnitude))

    def _magnitude_prior(self, magnitude: Tensor) -> Tensor:
        groups = magnitude.reshape(magnitude.shape[0], -1, self.m)
        order = groups.argsort(dim=-1, descending=True, stable=True)[..., : self.n]
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order, True)
        return keep.reshape(magnitude.shape)

    @torch.no_grad()
    def set_prior(self, keep: Tensor) -> None:
        """Start the logits from ``keep`` (bool, the weight's shape): each pattern scored by the
        share of the prior's kept weights it keeps."""
        if tuple(keep.shape) != tuple(self.keep.shape):
            raise ValueError(
                f"the prior mask has shape {tuple(keep.shape)}, the weight {tuple(self.keep.shape)}"
            )
        groups = keep.to(self.patterns).reshape(keep.shape[0], -1, self.m)
        overlap = groups @ self.patterns.t()  # (out, groups, patterns): kept weights in common
        kept = groups.sum(-1, keepdim=True).clamp_min(1)
        self.logits.copy_(self.prior_strength * overlap / kept)

    def anneal(self, progress: float) -> None:
        start, end = self.temperature_range
        progress = min(max(float(progress), 0.0), 1.0)
        self.temperature = start * (end / start) ** progress  # geometric: equal ratios per step

    def hard(self) -> Tensor:
        """The most likely pattern of every group, as a bool mask of the weight's shape."""
        choice = self.logits.detach().argmax(-1)
        return self.patterns[choice].bool().reshape(self.keep.shape)

    def importance(self) -> Tensor:
        return self.hard().float()

    def mask(self, weight: Tensor | None, resample: bool) -> Tensor:
        if not self.training:
            return self.hard().float()
        logits = self.logits * self.logit_scale
        if resample or self._noise is None or self._noise.shape != logits.shape:
            u = torch.rand_like(logits).clamp_(1e-6, 1 - 1e-6)
            self._noise = -(-u.log()).log()  # Gumbel(0, 1)
        weights = torch.softmax((logits + self._noise) / self.temperature, dim=-1)
        return (weights @ self.patterns).reshape(self.keep.shape)

    def __getstate__(self):  # the sampled noise is scratch, never saved or copied
        state = super().__getstate__()
        return {**state, "_noise": None}


ESTIMATORS: dict[str, type[MaskSource]] = {
    cls.name: cls
    for cls in (
        MagnitudeMask,
        MovementMask,
        TaylorMask,
        HardConcreteMask,
        STRMask,
        SlimmingMask,
        LearnedNMMask,
    )
}
