from __future__ import annotations

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor

from ..checks import (
    check_floating,
    check_mask_dtype,
    check_mask_values,
    check_same_device,
    check_tensor,
    shape_str,
)
from ..kernels import ops


def masked_linear(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight ⊙ mask, bias)`` without forming ``weight ⊙ mask``.

    The training-time op of learned weight masks: on CUDA a Triton GEMM applies the mask while it
    loads each weight tile and skips tiles whose mask is all zero, forward and backward; elsewhere,
    the reference. Differentiable in ``x``, ``weight``, ``bias`` and (floating-point) ``mask``; the
    mask's gradient is summed over its broadcast dimensions.

    Args:
        x: ``(*, in_features)`` floating point.
        weight: ``(out_features, in_features)`` in ``x``'s dtype.
        mask: bool, uint8 or floating point in [0, 1], broadcasting to ``weight``: ``(out, in)``,
            ``(out, 1)`` (rows) or ``(1, in)`` (columns).
        bias: ``(out_features,)`` or ``None``.

    Returns:
        ``(*, out_features)`` in ``x``'s dtype.

    Example:
        >>> w = torch.ones(3, 4)
        >>> masked_linear(torch.ones(2, 4), w, torch.tensor([[1.0], [0.0], [1.0]])).tolist()
        [[4.0, 0.0, 4.0], [4.0, 0.0, 4.0]]
    """
    for name, t in (("x", x), ("weight", weight), ("mask", mask)):
        check_tensor(name, t)
    check_floating("x", x)
    check_mask_dtype("mask", mask)
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"weight must be (out_features, in_features) with in_features = x.shape[-1], got x "
            f"{shape_str(x.shape)} and weight {shape_str(weight.shape)}"
        )
    if weight.dtype != x.dtype:
        raise ValueError(f"weight must have x's dtype {x.dtype}, got {weight.dtype}")
    if mask.dim() != 2 or any(m not in (1, s) for m, s in zip(mask.shape, weight.shape)):
        raise ValueError(
            f"mask of shape {shape_str(mask.shape)} does not broadcast to weight of shape "
            f"{shape_str(weight.shape)}; expected (out, in), (out, 1) or (1, in)"
        )
    if bias is not None:
        check_tensor("bias", bias)
        if bias.shape != (weight.shape[0],) or bias.dtype != x.dtype:
            raise ValueError(
                f"bias must be ({weight.shape[0]},) in {x.dtype}, got {shape_str(bias.shape)} "
                f"in {bias.dtype}"
            )
    for name, t in (("weight", weight), ("mask", mask), ("bias", bias)):
        if t is not None:
            check_same_device(name, t, "x", x)
    check_mask_values("mask", mask)
    out = ops.masked_linear(x.reshape(-1, x.shape[-1]), weight, mask, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


__all__ = ["masked_linear"]
