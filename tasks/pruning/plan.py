"""``pruning=``: what to prune and how, checked when the config is built, before any work.

The ``pruning/`` config group instantiates a :class:`PruningPlan`. It knows the Pruner's settings,
builds the sparsity schedule once the number of fine-tuning steps is known, attaches the masks
and finalizes the pruned model; the masks' optimizer factory rides along.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from torch import nn
from torch.optim import Optimizer

from masking.checks import check_int
from masking.pruning import ESTIMATORS, SCHEDULES, Pruner, SparsitySchedule, parse_granularity
from masking.pruning.granularity import NMGranularity, WeightGranularity
from masking.pruning.oneshot import ONESHOT_METHODS, OneShotResult, prune_oneshot
from masking.pruning.schedule import check_sparsity
from masking.pruning.transformer import STRUCTURED_METHODS, StructuredPruner, UnitGranularity

FINALIZE = ("auto", "bake", "compact")
# methods that prune once from calibration data and learn nothing (magnitude does both)
CALIBRATED_ONLY = tuple(m for m in ONESHOT_METHODS if m not in ESTIMATORS)
METHODS = (*ESTIMATORS, *CALIBRATED_ONLY)
ALLOCATIONS = ("auto", "global", "layer")
# transformer units: attention heads (key/value groups under GQA), MLP hidden neurons and the
# residual stream's channels (hidden), one kind or several joined by "+" (UnitGranularity.parse)
UNITS_HINT = "heads, head_dims, neurons, hidden or several joined by +, e.g. heads+neurons"
BUDGETS = ("units", "params", "macs")


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _patterns(name: str, value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of name patterns, got {value!r}")
    return list(value)


class PruningPlan:
    """The settings of ``pruning=<method>``, validated on construction (one line per bad value,
    naming its ``pruning.`` key).

    Args:
        method: the estimator (``magnitude``, ``movement``, ``hard_concrete``, ``str``,
            ``slimming``), or a one-shot pruner of language models (``wanda``, ``sparsegpt``;
            ``magnitude`` is one too, without fine-tuning).
        granularity: ``weight``, ``channel``, ``block<R>x<C>`` or ``n:m``; for transformers
            ``heads``, ``neurons``, ``hidden`` or several joined by ``+`` (a
            :class:`StructuredPruner`).
        sparsity: the final fraction of zeros (of weights, or of channels for ``channel``; of
            heads and of neurons, each, for the transformer units).
        allocation: ``global``, ``layer`` or ``auto``.
        schedule: ``one_shot``, ``linear`` or ``cubic`` (AGP).
        ramp: the schedule's start and end as fractions of the fine-tuning steps, start <= end.
        initial_sparsity: the sparsity before the ramp.
        update_every: recompute the masks (and step the schedule) every this many steps.
        penalty: weight of the estimator's penalty in the loss.
        round_to: kept channels per group (channel granularity), or kept MLP neurons and hidden
            channels per block (transformer units; heads are whole), a multiple of this.
        include, exclude: module filters (globs on qualified names, or class names).
        finalize: ``bake``, ``compact`` or ``auto`` (compact for channel, bake otherwise).
        estimator_args: extra keyword arguments of the estimator.
        mask_optimizer: factory of the optimizer of the estimator's parameters (a ``_partial_``).
        budget: for the transformer units, what ``sparsity`` counts: ``units`` (that fraction of
            the heads and of the neurons, each), ``params`` or ``macs`` (that fraction of the
            attention and MLP parameters, or MACs per sequence of ``tokens``, whichever units go).
        tokens: the sequence length of a ``macs`` budget.
        prior: ``maskllm``: the one-shot method (``magnitude``, ``wanda``, ``sparsegpt``) whose
            mask, computed on the calibration data, the learned choice starts from.
    """

    def __init__(
        self,
        *,
        method: str,
        granularity: str = "weight",
        sparsity: float = 0.9,
        allocation: str = "auto",
        schedule: str = "cubic",
        ramp: Sequence[float] = (0.0, 0.5),
        initial_sparsity: float = 0.0,
        update_every: int = 1,
        penalty: float = 0.0,
        round_to: int = 1,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        finalize: str = "auto",
        estimator_args: Mapping[str, Any] | None = None,
        mask_optimizer: Callable[[Iterable], Optimizer] | None = None,
        prior: str | None = None,
        budget: str = "units",
        tokens: int = 256,
    ) -> None:
        if method not in METHODS:
            raise ValueError(
                f"pruning.method must be one of {', '.join(METHODS)}, got {method!r} "
                "(choose one with pruning=<method>)"
            )
        self.method = method
        try:
            self.sparsity = check_sparsity("sparsity", sparsity)
            self.granularity = UnitGranularity.parse(granularity) or parse_granularity(granularity)
        except ValueError as error:
            hint = ""
            if str(error).startswith("granularity"):
                hint = f" (for transformers: {UNITS_HINT})"
            raise ValueError(f"pruning.{error}{hint}") from None
        fixed = self.granularity.fixed_sparsity
        if fixed is not None and not math.isclose(self.sparsity, fixed, abs_tol=1e-9):
            raise ValueError(
                f"pruning.sparsity must be {fixed:g} for granularity {self.granularity} (n of "
                f"every m kept), got {sparsity!r}"
            )
        if allocation not in ALLOCATIONS:
            raise ValueError(
                f"pruning.allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}"
            )
        if schedule not in SCHEDULES:
            raise ValueError(
                f"pruning.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}"
            )
        if isinstance(ramp, str) or not isinstance(ramp, Sequence) or len(ramp) != 2:
            raise ValueError(f"pruning.ramp must be [start, end] fractions, got {ramp!r}")
        start, end = (_fraction("pruning.ramp", value) for value in ramp)
        if end < start:
            raise ValueError(
                f"pruning.ramp must end at or after its start, got [{start:g}, {end:g}] "
                "(fractions of the fine-tuning steps)"
            )
        self.allocation, self.schedule_kind, self.ramp = allocation, schedule, (start, end)
        try:
            self.initial_sparsity = check_sparsity("initial_sparsity", initial_sparsity)
        except ValueError as error:
            raise ValueError(f"pruning.{error}") from None
        if self.initial_sparsity > self.sparsity:
            raise ValueError(
                f"pruning.initial_sparsity must be <= pruning.sparsity ({self.sparsity:g}), got "
                f"{initial_sparsity!r}"
            )
        self.update_every = check_int("pruning.update_every", update_every, 1)
        self.round_to = check_int("pruning.round_to", round_to, 1)
        if isinstance(penalty, bool) or not isinstance(penalty, int | float) or not penalty >= 0:
            raise ValueError(f"pruning.penalty must be a number >= 0, got {penalty!r}")
        self.penalty = float(penalty)
        self.include = _patterns("pruning.include", include)
        self.exclude = _patterns("pruning.exclude", exclude)
        if finalize not in FINALIZE:
            raise ValueError(
                f"pruning.finalize must be one of {', '.join(FINALIZE)}, got {finalize!r}"
            )
        if finalize == "compact" and not self.granularity.structured:
            raise ValueError(
                f"pruning.finalize=compact removes channels: it needs pruning.granularity=channel, "
                f"got {self.granularity} (use finalize=bake or auto)"
            )
        self.finalize = finalize
        self.estimator_args = dict(estimator_args or {})
        if mask_optimizer is not None and not callable(mask_optimizer):
            raise ValueError(
                "pruning.mask_optimizer must be an optimizer factory (_partial_: true), got "
                f"{type(mask_optimizer).__name__}"
            )
        self.mask_optimizer = mask_optimizer
        if prior is not None and prior not in ONESHOT_METHODS:
            raise ValueError(
                f"pruning.prior must be null or one of {', '.join(ONESHOT_METHODS)}, got {prior!r}"
            )
        if prior is not None and not hasattr(ESTIMATORS.get(method), "set_prior"):
            raise ValueError(
                f"pruning.prior: pruning={method} does not start from a prior mask (maskllm does)"
            )
        self.prior = prior
        if budget not in BUDGETS:
            raise ValueError(f"pruning.budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        self.budget = budget
        self.tokens = check_int("pruning.tokens", tokens, 1)
        if budget != "units" and not self.units:
            raise ValueError(
                f"pruning.budget={budget} is a budget for transformer units: it needs "
                f"pruning.granularity={UNITS_HINT}, got {self.granularity}"
            )
        if self.units:
            self._check_units()

    @property
    def units(self) -> bool:
        """Whether the plan removes transformer heads and neurons (``granularity=heads`` ...)."""
        return isinstance(self.granularity, UnitGranularity)

    def _check_units(self) -> None:
        units = f"pruning.granularity={self.granularity}"
        if self.method not in STRUCTURED_METHODS:
            raise ValueError(
                f"pruning.method: {units} learns head and neuron masks with one of "
                f"{', '.join(STRUCTURED_METHODS)}, got {self.method!r}"
            )
        if self.include != ["*"]:
            raise ValueError(
                f"pruning.include: {units} finds every attention and MLP itself; leave include at "
                f"['*'] and name what stays dense in pruning.exclude, got {self.include!r}"
            )
        if "hidden" in self.granularity.kinds and self.finalize == "bake":
            raise ValueError(
                f"pruning.finalize: {units} narrows the layer norms, which only compaction can "
                "express; use compact or auto"
            )

    def structured_options(self) -> dict[str, Any]:
        """The :class:`~masking.pruning.StructuredPruner` arguments, without the schedule."""
        if self.budget == "units":
            fractions = {kind: self.sparsity for kind in self.granularity.kinds}
        else:
            fractions = {self.budget: self.sparsity, "kinds": self.granularity.kinds}
        return {
            "method": self.method,
            **fractions,
            "tokens": self.tokens,
            "round_to": self.round_to,
            "allocation": "layer" if self.allocation == "auto" else self.allocation,
            "exclude": self.exclude,
            "penalty": self.penalty,
            "estimator_args": self.estimator_args,
            "update_every": self.update_every,
        }

    def options(self, example_inputs: Any) -> dict[str, Any]:
        """The :class:`~masking.pruning.Pruner` arguments, without the schedule."""
        return {
            "method": self.method,
            "granularity": self.granularity,
            "sparsity": self.sparsity,
            "allocation": self.allocation,
            "include": self.include,
            "exclude": self.exclude,
            "example_inputs": example_inputs,
            "round_to": self.round_to,
            "penalty": self.penalty,
            "estimator_args": self.estimator_args,
            "update_every": self.update_every,
        }

    @property
    def calibrated_only(self) -> bool:
        """Whether the method prunes once from calibration data (Wanda, SparseGPT) and cannot
        learn masks while fine-tuning."""
        return self.method in CALIBRATED_ONLY

    def check(self, model: nn.Module, example_inputs: Any) -> None:
        """Attach to a throw-away ``model``: filters that match nothing, layers the granularity
        cannot take and untraceable channel groups fail now, not after the dense training."""
        if self.calibrated_only:
            raise ValueError(
                f"pruning={self.method} is a one-shot pruner of language models, calibrated on "
                "their activations: use it with task=prune_lm"
            )
        if self.units:
            try:
                StructuredPruner(model, **self.structured_options())
            except ValueError as error:
                raise ValueError(f"pruning.granularity={self.granularity}: {error}") from None
            return
        Pruner(model, **self.options(example_inputs))

    def check_oneshot(self) -> None:
        """The settings one-shot pruning can follow: ``magnitude``, ``wanda`` or ``sparsegpt``,
        at weight (unstructured) or n:m granularity."""
        if self.method not in ONESHOT_METHODS:
            raise ValueError(
                f"pruning={self.method} learns its masks while fine-tuning; without fine-tuning "
                f"(task.finetune_steps=0) choose one of {', '.join(ONESHOT_METHODS)}"
            )
        if not isinstance(self.granularity, WeightGranularity | NMGranularity):
            raise ValueError(
                f"pruning.granularity must be weight or n:m (2:4, 4:8) for one-shot pruning, got "
                f"{self.granularity}"
            )

    def prune_oneshot(
        self,
        model: nn.Module,
        calibration: Iterable[Any],
        forward: Callable[[nn.Module, Any], Any],
        *,
        method: str | None = None,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> OneShotResult:
        """Prune ``model`` once, block by block, at this plan's granularity, sparsity and filters,
        with ``method`` (default: the plan's own; ``pruning.prior`` for maskllm's prior)."""
        method = method or self.method
        # SparseGPT's block size and damping, when the plan is SparseGPT's own
        options = self.estimator_args if method == "sparsegpt" == self.method else {}
        return prune_oneshot(
            model,
            calibration,
            method=method,
            granularity=self.granularity,
            sparsity=self.sparsity,
            include=self.include,
            exclude=self.exclude,
            forward=forward,
            progress=progress,
            **options,
        )

    def schedule(self, steps: int) -> SparsitySchedule:
        """The sparsity schedule over ``steps`` fine-tuning steps."""
        ramp_start, ramp_end = (round(fraction * steps) for fraction in self.ramp)
        return SparsitySchedule(
            self.sparsity,
            kind=self.schedule_kind,
            start_step=ramp_start,
            end_step=max(ramp_start, min(ramp_end, steps - 1)),
            initial=self.initial_sparsity,
            every=self.update_every,
        )

    def attach(
        self, model: nn.Module, example_inputs: Any, steps: int
    ) -> Pruner | StructuredPruner:
        """Masks on ``model``, scheduled over ``steps`` fine-tuning steps."""
        if self.units:
            return StructuredPruner(
                model, schedule=self.schedule(steps), **self.structured_options()
            )
        return Pruner(model, schedule=self.schedule(steps), **self.options(example_inputs))

    def finalize_model(
        self, pruner: Pruner | StructuredPruner, check_inputs: Any
    ) -> tuple[nn.Module, str]:
        """Bake or compact (``auto``: compact channel masks, bake the rest); returns the model
        and which it was."""
        how = self.finalize
        if how == "auto":
            how = "compact" if self.granularity.structured else "bake"
        if how == "compact":
            return pruner.compact(check_inputs), how
        return pruner.bake(), how
