"""Input checks shared by the ops and the application: one-line errors naming the argument."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

_value_checks_enabled = True


def set_value_checks(enabled: bool) -> None:
    """Turn the data-dependent mask checks (values in [0, 1], no NaN) on or off.

    They read the mask back to the host, which costs a device synchronisation on GPU. Shape, dtype and
    device checks are always on. Value checks are skipped automatically while compiling or while a
    CUDA graph is being captured.
    """
    global _value_checks_enabled
    _value_checks_enabled = bool(enabled)


def value_checks_active(t: Tensor) -> bool:
    if not _value_checks_enabled or torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def shape_str(shape: Sequence[int]) -> str:
    """``(4, 3, 32)``; a one-element shape keeps its comma, ``(4,)``, as Python writes it."""
    items = [str(int(s)) for s in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``, else a one-line ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(name: str, t: Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_mask_dtype(name: str, mask: Tensor) -> None:
    if not (mask.dtype in (torch.bool, torch.uint8) or mask.is_floating_point()):
        raise TypeError(f"{name} must be bool, uint8 or floating-point, got dtype {mask.dtype}")


def check_same_device(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def check_mask_values(name: str, mask: Tensor) -> None:
    """Masks hold values in [0, 1] (1 = valid/keep); uint8 0/255 images and NaN are rejected."""
    if mask.dtype == torch.bool or mask.numel() == 0 or not value_checks_active(mask):
        return
    lo, hi = torch.aminmax(mask.detach())
    lo, hi = float(lo), float(hi)
    if lo != lo or hi != hi:  # NaN compares unequal to itself
        raise ValueError(f"{name} contains NaN; masks must hold values in [0, 1]")
    if lo < 0 or hi > 1:
        hint = " (a 0/255 image mask must be converted, e.g. mask > 127)" if hi > 1 else ""
        raise ValueError(
            f"{name} must hold values in [0, 1] (1 = valid), got min {lo:g} and max {hi:g}{hint}"
        )


def pair(name: str, value: int | Sequence[int], *, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints, each at least ``minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        out = (value, value)
    elif (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def conv_output_size(
    size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, k, st, p, d in zip(size, kernel_size, stride, padding, dilation)
    )


def resolve_padding(
    padding: int | Sequence[int] | str,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Accept an int, a pair, 'valid' or 'same' (stride 1 and a symmetric padding only)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {stride}")
            spans = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            if any(s % 2 for s in spans):
                raise ValueError(
                    f"padding='same' needs an odd effective kernel size, got kernel_size "
                    f"{kernel_size} with dilation {dilation}; pass an explicit padding"
                )
            return (spans[0] // 2, spans[1] // 2)
        raise ValueError(
            f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}"
        )
    return pair("padding", padding, minimum=0)
