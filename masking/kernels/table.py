"""Which kernel path serves an op, from measurements committed per device kind.

``benchmarks/bench_sparse.py`` times every path of an op against dense for a few layer shapes and a
range of sparsities, and writes ``tables/<kind>.json`` (``cpu``, ``cuda-nvidia-h100-80gb-hbm3``, ...).
For a layer, :func:`choose` takes the measured shape nearest to the layer's (log-distance over the
GEMM's ``out, in, n``), computes each eligible path's own sparsity of the weight (zero entries for
CSR, zero blocks for BSR, zero rows for ``rows``), and looks up the speedup measured at the largest
sparsity not above it: never an extrapolation upwards, so a path is only picked where it was measured
faster. The best path wins if it beats dense by ``MIN_GAIN``; otherwise dense.

A manual override (``set_path``/``prefer`` or ``MASKING_PATHS="linear=csr,conv2d=dense"``) wins over the
table; without a table for the device, everything is dense: the reference, always correct.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

TABLES = Path(__file__).with_name("tables")
OPS = ("linear", "conv2d", "partial_conv2d")
# A path is chosen only when measured at least this much faster than dense: near a break-even, run
# to run spread is this large (CSR at 80 % measured 1.19x dense in one run and 0.97x in the next).
MIN_GAIN = 1.2


@dataclass(frozen=True)
class Choice:
    path: str
    speedup: float  # measured dense time / path time at the looked-up point (1.0 for dense)
    reason: str


def device_kind(device: torch.device | str) -> str:
    """``cpu``, or ``cuda-`` and the GPU's name in lower case with runs of other characters as ``-``."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    return _cuda_kind(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_kind(index: int) -> str:
    name = torch.cuda.get_device_name(index)
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table_file(kind: str) -> Path:
    return TABLES / f"{kind}.json"


@functools.cache
def load_table(kind: str) -> dict | None:
    """The committed table for ``kind``, or ``None`` when that device was never measured."""
    path = table_file(kind)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _parse_env(value: str) -> dict[str, str]:
    overrides = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        op, sep, path = item.partition("=")
        if not sep or op not in OPS:
            raise ValueError(
                f"MASKING_PATHS must be comma-separated op=path with op in {OPS}, got {item!r}"
            )
        overrides[op] = path
    return overrides


_overrides: dict[str, str] = _parse_env(os.environ.get("MASKING_PATHS", ""))


def set_path(op: str, path: str | None) -> None:
    """Force ``path`` for every later choice of ``op`` (``None`` returns to the table)."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if path is None:
        _overrides.pop(op, None)
    else:
        _overrides[op] = path


def get_override(op: str) -> str | None:
    return _overrides.get(op)


@contextlib.contextmanager
def prefer(op: str, path: str | None) -> Iterator[None]:
    """Force ``path`` for ``op`` inside the block."""
    previous = get_override(op)
    set_path(op, path)
    try:
        yield
    finally:
        set_path(op, previous)


def _nearest(entries: list[dict], shape: tuple[int, ...]) -> dict:
    def distance(entry: dict) -> float:
        return sum(
            math.log(max(a, 1) / max(b, 1)) ** 2 for a, b in zip(entry["shape"], shape, strict=True)
        )

    return min(entries, key=distance)


def measured_speedup(points: list[list[float]], sparsity: float) -> float | None:
    """The speedup at the largest measured sparsity not above ``sparsity`` (``None``: none is)."""
    below = [speedup for s, speedup in points if s <= sparsity + 1e-6]
    return below[-1] if below else None


def choose(
    op: str,
    device: torch.device | str,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    sparsity_of: Callable[[str], float | None],
    default: str = "dense",
) -> Choice:
    """The path for ``op`` on a layer of GEMM ``shape``; ``sparsity_of(path)`` is the layer's sparsity
    as ``path`` sees it, or ``None`` where ``path`` cannot run it."""
    override = get_override(op)
    if override is not None:
        return Choice(override, math.nan, "override")
    kind = device_kind(device)
    table = load_table(kind)
    if table is None:
        return Choice(default, 1.0, f"no measured table for {kind}")
    entries = table.get("ops", {}).get(op, {}).get(str(dtype).removeprefix("torch."))
    if not entries:
        return Choice(default, 1.0, f"{op} in {dtype} was not measured on {kind}")
    entry = _nearest(entries, shape)
    best = Choice(default, 1.0, f"nothing measured ≥ {MIN_GAIN}× {default} near {entry['shape']}")
    for path, points in entry["paths"].items():
        sparsity = sparsity_of(path)
        if sparsity is None:
            continue
        speedup = measured_speedup(points, sparsity)
        if speedup is not None and speedup >= MIN_GAIN and speedup > best.speedup:
            best = Choice(
                path, speedup, f"{speedup:.2f}× measured at shape {entry['shape']}, {sparsity:.0%}"
            )
    return best
