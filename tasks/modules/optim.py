"""Learning-rate schedules over a run's optimizer steps, and the manual optimisation step the
modules share.

A schedule in the config is a ``_partial_`` factory. The factories here take the run's number of
optimizer steps, which is known only once the trainer is set up, as ``total_steps``; any torch
scheduler factory that does not take it works too (``StepLR`` with its ``step_size``, say).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytorch_lightning as pl
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR

OptimizerFactory = Callable[[Iterable], Optimizer]
SchedulerFactory = Callable[..., LRScheduler | None]


def cosine(optimizer: Optimizer, total_steps: int) -> LRScheduler:
    """Cosine decay from the optimizer's learning rate to 0 over ``total_steps``."""
    return CosineAnnealingLR(optimizer, T_max=max(1, total_steps))


def one_cycle(optimizer: Optimizer, total_steps: int, warmup: float = 0.25) -> LRScheduler | None:
    """A ``warmup`` share of the steps up to the optimizer's learning rate, then down (trains a
    dense network from scratch in a few epochs); None for a single step, which has no cycle."""
    if total_steps < 2:
        return None
    # at least 1.5 warm-up steps: OneCycleLR divides by the warm-up's length, which is zero for
    # short runs (a debug run, a sweep's small budget)
    return OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=max(warmup, 1.5 / total_steps),
    )


def build_scheduler(
    factory: SchedulerFactory | None, optimizer: Optimizer, total_steps: int
) -> LRScheduler | None:
    """``factory(optimizer, total_steps=...)`` when it takes the run's length, else
    ``factory(optimizer)``; None without a factory (a constant learning rate)."""
    if factory is None:
        return None
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        parameters = {}
    if "total_steps" in parameters:
        return factory(optimizer, total_steps=total_steps)
    return factory(optimizer)


def run_steps(module: pl.LightningModule) -> int:
    """The number of optimizer steps the module's trainer will take (at least 1)."""
    return max(1, int(module.trainer.estimated_stepping_batches))


def as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def manual_step(
    module: pl.LightningModule,
    loss: Tensor,
    optimizers: Sequence[Any],
    schedulers: Sequence[Any] = (),
    *,
    clip: float | None = None,
) -> None:
    """One optimisation step of ``loss`` under manual optimisation: clear, backward, (with
    ``clip``, clip the first optimizer's gradient norm to it), step every optimizer, then every
    scheduler.

    The first optimizer steps through its Lightning wrapper, the others (a pruner's masks beside
    the weights) through the strategy directly: both apply the precision plugin (the fp16 grad
    scaler), but only the wrapper counts as a trainer step, so ``global_step`` and ``max_steps``
    count batches, whatever number of optimizers a batch steps.
    """
    first, *others = optimizers
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    module.manual_backward(loss)
    if clip is not None:
        module.clip_gradients(first, gradient_clip_val=clip, gradient_clip_algorithm="norm")
    first.step()
    for optimizer in others:
        raw = getattr(optimizer, "optimizer", optimizer)  # unwrap a LightningOptimizer
        module.trainer.strategy.optimizer_step(raw, _no_closure)
    for scheduler in schedulers:
        scheduler.step()


def _no_closure() -> None:
    """The closure of a manual step: the backward pass has already run."""
