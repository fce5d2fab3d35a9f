"""Sparsity schedules: the target sparsity as a function of the optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from ..checks import check_int

ScheduleKind = Literal["one_shot", "linear", "cubic"]


def _linear(initial: float, target: float, done: float) -> float:
    return initial + (target - initial) * done


def _cubic(initial: float, target: float, done: float) -> float:
    return target + (initial - target) * (1.0 - done) ** 3


# The sparsity part of the way through a ramp (``done`` in [0, 1)); None: no ramp, the target
# from ``start_step`` on.
_RAMPS: dict[str, Callable[[float, float, float], float] | None] = {
    "one_shot": None,
    "linear": _linear,
    "cubic": _cubic,
}
SCHEDULES: tuple[str, ...] = tuple(_RAMPS)


def check_sparsity(name: str, value: object, *, allow_zero: bool = True) -> float:
    """Return ``value`` as a float in [0, 1) (or (0, 1)), or raise a one-line ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not low_ok or value >= 1:
        bounds = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must be in {bounds} (the fraction of zeros), got {value!r}")
    return float(value)


class SparsitySchedule:
    """Target sparsity per optimizer step, from ``initial`` to ``target``.

    - ``one_shot``: ``initial`` before ``start_step``, ``target`` from then on.
    - ``linear``: a straight ramp from ``start_step`` to ``end_step``.
    - ``cubic``: Zhu & Gupta's automated gradual pruning (AGP),
      ``s_t = s_f + (s_i − s_f)(1 − p)³`` with ``p`` the fraction of the ramp done: prunes fast while
      the network has redundancy and slowly near the target.

    Every schedule is monotone non-decreasing and equals ``target`` from ``end_step`` on (from
    ``start_step`` for one-shot). ``every`` holds the value for that many steps (AGP's Δt), so masks are
    recomputed less often.

    Args:
        target: final sparsity in [0, 1).
        kind: ``"one_shot"``, ``"linear"`` or ``"cubic"``.
        start_step: first step of the ramp.
        end_step: step at which ``target`` is reached (needed for linear and cubic).
        initial: sparsity before the ramp, in [0, target].
        every: update interval in steps (>= 1).

    Example:
        >>> s = SparsitySchedule(0.9, kind="cubic", end_step=100)
        >>> [round(s(t), 3) for t in (0, 50, 100, 200)]
        [0.0, 0.787, 0.9, 0.9]
    """

    def __init__(
        self,
        target: float,
        *,
        kind: ScheduleKind = "cubic",
        start_step: int = 0,
        end_step: int | None = None,
        initial: float = 0.0,
        every: int = 1,
    ) -> None:
        self.target = check_sparsity("sparsity", target)
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
        self.kind = kind
        self._ramp = _RAMPS[kind]
        check_int("start_step", start_step, 0)
        check_int("every", every, 1)
        self.start_step, self.every = start_step, every
        if self._ramp is None:
            end_step = start_step if end_step is None else end_step
        if isinstance(end_step, bool) or not isinstance(end_step, int) or end_step < start_step:
            raise ValueError(
                f"end_step must be an int >= start_step ({start_step}) for a {kind} schedule, "
                f"got {end_step!r}"
            )
        self.end_step = end_step
        self.initial = check_sparsity("initial_sparsity", initial)
        if self.initial > self.target:
            raise ValueError(
                f"initial_sparsity must be <= sparsity ({self.target}), got {self.initial!r}"
            )

    def __call__(self, step: int) -> float:
        if step < self.start_step:
            return self.initial
        if self._ramp is None or step >= self.end_step:
            return self.target
        step = self.start_step + (step - self.start_step) // self.every * self.every
        done = (step - self.start_step) / (self.end_step - self.start_step)
        return self._ramp(self.initial, self.target, done)

    def __repr__(self) -> str:
        return (
            f"SparsitySchedule(target={self.target}, kind={self.kind!r}, "
            f"start_step={self.start_step}, end_step={self.end_step}, initial={self.initial})"
        )
