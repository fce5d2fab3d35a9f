"""The fixed evaluation mask set: the PConv protocol's six hole-ratio bins, generated once."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..io import write_atomic
from .boxes import Boxes
from .mixed import MixedMasks
from .strokes import FreeFormStrokes, IrregularStrokes

HOLE_RATIO_BINS: tuple[tuple[float, float], ...] = (
    (0.01, 0.1),
    (0.1, 0.2),
    (0.2, 0.3),
    (0.3, 0.4),
    (0.4, 0.5),
    (0.5, 0.6),
)
# bump when the generation changes, so stale caches are never read
EVALUATION_VERSION = 1


def bin_name(low: float, high: float) -> str:
    """``hole_10_20`` for (0.1, 0.2): the suffix of per-bin metric names."""
    return f"hole_{round(low * 100):02d}_{round(high * 100):02d}"


def _candidates() -> MixedMasks:
    # strokes of every thickness plus boxes, so both sparse and dense coverage occur
    return MixedMasks(
        {
            "thin": IrregularStrokes("thin"),
            "medium": IrregularStrokes("medium"),
            "thick": IrregularStrokes("thick", strokes=(2, 8)),
            "free_form": FreeFormStrokes(strokes=(1, 6)),
            "boxes": Boxes(boxes=(1, 5), side=(0.15, 0.6)),
        }
    )


def _read_cache(path: Path, size: int, per_bin: int) -> dict[str, Tensor] | None:
    """The cached set, or None (with a warning) when the file is not one: it is regenerated then,
    since it is a derived file. Tensors only: a crafted file cannot run code here."""
    try:
        masks = torch.load(path, weights_only=True)
    except Exception as error:
        masks, reason = None, type(error).__name__
    else:
        names = [bin_name(lo, hi) for lo, hi in HOLE_RATIO_BINS]
        shape = (per_bin, 1, size, size)
        fits = isinstance(masks, dict) and list(masks) == names
        fits = fits and all(isinstance(v, Tensor) and v.shape == shape for v in masks.values())
        reason = "" if fits else "not the mask set this cache name promises"
        masks = masks if fits else None
    if masks is None:
        warnings.warn(
            f"evaluation mask cache {path} is unreadable ({reason}): regenerating it", stacklevel=3
        )
    return masks


def evaluation_masks(
    size: int,
    per_bin: int,
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    max_draws: int = 20_000,
) -> dict[str, Tensor]:
    """``{bin_name: (per_bin, 1, size, size) float masks}`` for the six hole-ratio bins.

    Deterministic in ``(size, per_bin, seed)``: candidates are drawn from one seeded generator and
    each is kept by the first bin with room for its hole ratio. With ``cache_dir`` the set is written
    once (atomically) and read back afterwards, so evaluation never regenerates it.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if isinstance(per_bin, bool) or not isinstance(per_bin, int) or per_bin < 1:
        raise ValueError(f"per_bin must be a positive int, got {per_bin!r}")
    path = None
    if cache_dir is not None:
        path = (
            Path(cache_dir) / f"eval_masks_v{EVALUATION_VERSION}_{size}px_{per_bin}_seed{seed}.pt"
        )
        if path.is_file():
            cached = _read_cache(path, size, per_bin)
            if cached is not None:
                return cached
    generator = torch.Generator().manual_seed(seed)
    source = _candidates()
    kept: dict[str, list[Tensor]] = {bin_name(lo, hi): [] for lo, hi in HOLE_RATIO_BINS}
    for _ in range(max_draws):
        mask = source(1, size, size, generator=generator)
        ratio = 1 - float(mask.mean())
        for lo, hi in HOLE_RATIO_BINS:
            name = bin_name(lo, hi)
            if lo <= ratio < hi and len(kept[name]) < per_bin:
                kept[name].append(mask[0])
                break
        if all(len(v) == per_bin for v in kept.values()):
            break
    else:
        short = {k: len(v) for k, v in kept.items() if len(v) < per_bin}
        raise RuntimeError(f"could not fill the hole-ratio bins in {max_draws} draws: {short}")
    masks = {name: torch.stack(v) for name, v in kept.items()}
    if path is not None:
        buffer = io.BytesIO()
        torch.save(masks, buffer)
        write_atomic(path, buffer.getvalue())
    return masks
