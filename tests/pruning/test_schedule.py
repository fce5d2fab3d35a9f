"""Sparsity schedules: endpoints, monotonicity, the ramp shapes, the update interval."""

from __future__ import annotations

import itertools

import pytest

from masking.pruning import SCHEDULES, SparsitySchedule
from masking.pruning.schedule import check_sparsity


@pytest.mark.parametrize("kind", ["one_shot", "linear", "cubic"])
def test_schedules_are_monotone_and_hit_the_target(kind):
    schedule = SparsitySchedule(0.9, kind=kind, start_step=10, end_step=110, every=7)
    values = [schedule(t) for t in range(200)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[0] == 0.0
    assert values[110] == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("initial", [0.0, 0.2])
def test_endpoints(kind, initial):
    schedule = SparsitySchedule(0.8, kind=kind, start_step=5, end_step=25, initial=initial)
    assert [schedule(t) for t in range(5)] == [initial] * 5
    ramp_start = 0.8 if kind == "one_shot" else initial
    assert schedule(5) == pytest.approx(ramp_start, abs=1e-12)  # cubic: 0.8 - 0.6·1³ rounds
    assert schedule(25) == 0.8 and schedule(10**6) == 0.8
    assert all(initial - 1e-12 <= schedule(t) <= 0.8 for t in range(40))


def test_one_shot_jumps_at_its_start():
    schedule = SparsitySchedule(0.5, kind="one_shot", start_step=3)
    assert [schedule(t) for t in range(6)] == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]
    assert schedule.end_step == 3


def test_linear_is_a_straight_ramp_and_cubic_is_agp():
    linear = SparsitySchedule(0.8, kind="linear", start_step=0, end_step=100, initial=0.2)
    cubic = SparsitySchedule(0.8, kind="cubic", start_step=0, end_step=100, initial=0.2)
    for t in (0, 10, 25, 50, 90):
        done = t / 100
        assert linear(t) == pytest.approx(0.2 + 0.6 * done)
        assert cubic(t) == pytest.approx(0.8 + (0.2 - 0.8) * (1 - done) ** 3)


def test_cubic_prunes_fast_first():
    cubic = SparsitySchedule(0.8, kind="cubic", end_step=100)
    linear = SparsitySchedule(0.8, kind="linear", end_step=100)
    assert cubic(25) > linear(25)


def test_every_holds_the_value_between_updates():
    schedule = SparsitySchedule(0.9, kind="linear", start_step=2, end_step=32, every=5)
    values = [schedule(t) for t in range(2, 32)]
    windows = [values[i : i + 5] for i in range(0, 30, 5)]
    assert all(len(set(w)) == 1 for w in windows)
    assert len({w[0] for w in windows}) == 6  # and changes at every update


def test_repr_names_the_settings():
    schedule = SparsitySchedule(0.5, kind="linear", start_step=1, end_step=9, initial=0.1)
    assert repr(schedule) == (
        "SparsitySchedule(target=0.5, kind='linear', start_step=1, end_step=9, initial=0.1)"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": 1.2}, "sparsity must be in"),
        ({"target": 0.5, "kind": "exp"}, "schedule must be one of"),
        ({"target": 0.5, "kind": "linear"}, "end_step must be an int >= start_step"),
        ({"target": 0.5, "initial": 0.6, "end_step": 5}, "initial_sparsity must be <="),
    ],
)
def test_bad_schedule_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsitySchedule(**kwargs)


@pytest.mark.parametrize(
    ("value", "allow_zero", "message"),
    [
        (True, True, r"s must be a number in \[0, 1\), got True"),
        (float("nan"), True, "s must be a number"),
        (1.0, True, r"s must be in \[0, 1\) \(the fraction of zeros\), got 1.0"),
        (0.0, False, r"s must be in \(0, 1\)"),
    ],
)
def test_check_sparsity(value, allow_zero, message):
    with pytest.raises(ValueError, match=message):
        check_sparsity("s", value, allow_zero=allow_zero)
    assert check_sparsity("s", 0, allow_zero=True) == 0.0
