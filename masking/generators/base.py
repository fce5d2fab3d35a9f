"""What every inpainting mask generator shares: per-image masks, explicit randomness, checks."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """An int in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def check_range(name: str, value, *, low: float, high: float) -> tuple[float, float]:
    """A ``(min, max)`` pair with ``low <= min <= max <= high``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from None
    if not (low <= lo <= hi <= high):
        raise ValueError(f"{name} must satisfy {low} <= min <= max <= {high}, got {value!r}")
    return lo, hi


def check_int_range(name: str, value, *, low: int) -> tuple[int, int]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of ints, got {value!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (lo, hi)) or not low <= lo <= hi:
        raise ValueError(f"{name} must be ints with {low} <= min <= max, got {value!r}")
    return lo, hi


def check_positive_range(name: str, value) -> tuple[float, float]:
    """A finite ``(min, max)`` pair with ``0 < min <= max``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}") from None
    if not 0 < lo <= hi < math.inf:
        raise ValueError(f"{name} must satisfy 0 < min <= max < inf, got {value!r}")
    return lo, hi


def check_positive(name: str, value) -> float:
    """A finite number > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def check_finite(name: str, value) -> float:
    """A finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class MaskGenerator:
    """Draws one mask per image: ``(B, 1, H, W)`` float, 1 = valid, 0 = hole.

    Subclasses implement ``holes``, returning a bool ``(H, W)`` canvas (True = hole). The base adds:

    - ``hole_ratio=(min, max)``: rejection sampling until the hole fraction lies in the range (after
      ``max_tries`` draws the closest mask is kept, so training never stalls on a rare range);
    - ``ramp_start``: a linear ramp of difficulty. At ``progress`` 0 the generator's sizes (stroke
      lengths and widths, box sides) are scaled by ``ramp_start`` and grow linearly to full size at
      ``progress`` 1; the task passes ``progress = step / ramp_steps``. 1.0 means no ramp.

    Every call takes an explicit ``torch.Generator``: the same generator state gives the same masks,
    and the task seeds one generator per DataLoader worker and rank (``worker_generator``).
    """

    def __init__(
        self,
        *,
        hole_ratio: tuple[float, float] | None = None,
        max_tries: int = 50,
        ramp_start: float = 1.0,
    ) -> None:
        self.hole_ratio = (
            None if hole_ratio is None else check_range("hole_ratio", hole_ratio, low=0.0, high=1.0)
        )
        if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
            raise ValueError(f"max_tries must be a positive int, got {max_tries!r}")
        self.max_tries = max_tries
        if isinstance(ramp_start, bool) or not (
            isinstance(ramp_start, int | float) and 0 < ramp_start <= 1
        ):
            raise ValueError(f"ramp_start must be in (0, 1], got {ramp_start!r}")
        self.ramp_start = float(ramp_start)

    def holes(
        self, height: int, width: int, scale: float, generator: torch.Generator, device
    ) -> Tensor:
        raise NotImplementedError

    def __call__(
        self,
        batch: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        progress: float | None = None,
    ) -> Tensor:
        for name, value in (("batch", batch), ("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator (seeded by the caller), got "
                f"{type(generator).__name__}"
            )
        if progress is not None and not (isinstance(progress, int | float) and progress >= 0):
            raise ValueError(f"progress must be a number >= 0 or None, got {progress!r}")
        p = 1.0 if progress is None else min(float(progress), 1.0)
        scale = self.ramp_start + (1.0 - self.ramp_start) * p
        canvases = [self._one(height, width, scale, generator, device) for _ in range(batch)]
        return (~torch.stack(canvases)).unsqueeze(1).float()

    def _one(self, height, width, scale, generator, device) -> Tensor:
        if self.hole_ratio is None:
            return self.holes(height, width, scale, generator, device)
        lo, hi = self.hole_ratio
        best, best_gap = None, math.inf
        for _ in range(self.max_tries):
            canvas = self.holes(height, width, scale, generator, device)
            ratio = float(canvas.float().mean())
            gap = max(lo - ratio, ratio - hi, 0.0)
            if gap == 0.0:
                return canvas
            if gap < best_gap:
                best, best_gap = canvas, gap
        return best

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        parts = [self.extra_repr()]
        if self.hole_ratio is not None:
            parts.append(f"hole_ratio={self.hole_ratio}")
        if self.ramp_start != 1.0:
            parts.append(f"ramp_start={self.ramp_start}")
        return f"{type(self).__name__}({', '.join(p for p in parts if p)})"


def keyed_generator(*parts: int) -> torch.Generator:
    """A generator seeded from the integers ``parts`` alone (mixed so that small tuples do not
    collide): the same parts, the same stream, in any process or worker."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


# keeps the masks' per-sample streams apart from the data's own per-key streams
_MASK_STREAM = 0x6D61736B


def sample_generator(seed: int, key: int) -> torch.Generator:
    """A generator for one sample, seeded from ``(seed, key)`` alone.

    Drawing each image's mask from its sample's key makes the masks of a run independent of how
    the samples are split over DataLoader workers and distributed processes: a run on two processes
    sees the masks that the same run on one process sees.
    """
    return keyed_generator(seed, _MASK_STREAM, key)


def worker_generator(seed: int, *, rank: int = 0) -> torch.Generator:
    """A generator for this process, DataLoader worker and distributed rank.

    Different workers and ranks get different streams; the same (seed, rank, worker) the same one.
    """
    info = torch.utils.data.get_worker_info()
    worker = 0 if info is None else info.id + 1
    generator = torch.Generator()
    # mix the three numbers so that (seed, rank, worker) triples do not collide for small values
    generator.manual_seed((int(seed) * 1_000_003 + rank * 10_007 + worker) % (2**63 - 1))
    return generator
