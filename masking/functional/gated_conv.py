from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels import ops
from ._conv import autocast_inputs, check_conv_inputs

Activation = Callable[[Tensor], Tensor]

ACTIVATIONS: dict[str, Activation | None] = {
    "elu": F.elu,
    "relu": F.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "none": None,
}


def resolve_activation(activation: str | Activation | None) -> Activation | None:
    """A name from ``ACTIVATIONS``, a callable, or ``None`` (identity, for output layers)."""
    if activation is None or callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"activation must be one of {sorted(ACTIVATIONS)}, a callable or None, got {activation!r}"
    )


def gated_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    activation: str | Activation | None = "elu",
) -> Tensor:
    """Gated convolution (Yu et al., 2019): ``φ(feature) ⊙ σ(gate)`` from a single convolution.

    The convolution produces ``2 · C_out`` channels. Within each group the first ``C_out / groups``
    filters are features and the next ``C_out / groups`` are gates, so a grouped or depthwise gated
    convolution gates every feature with a gate computed from the same input channels.

    Args:
        x: ``(B, C_in, H, W)`` floating-point input.
        weight: ``(2 · C_out, C_in / groups, kh, kw)``, laid out per group as [features, gates].
        bias: ``(2 · C_out,)`` or ``None``.
        stride, padding, dilation, groups: as in ``torch.nn.functional.conv2d`` (zero padding).
        activation: φ, by name (see ``ACTIVATIONS``), a callable, or ``None`` for the identity
            (the generator's output layers). Default ELU.

    Returns:
        ``(B, C_out, H', W')`` gated features.

    Shape:
        - x: ``(B, C_in, H, W)``
        - weight: ``(2 · C_out, C_in / groups, kh, kw)``
        - output: ``(B, C_out, H', W')``

    Example:
        >>> x = torch.randn(2, 4, 8, 8)
        >>> gated_conv2d(x, torch.randn(6, 4, 3, 3), padding=1).shape
        torch.Size([2, 3, 8, 8])
    """
    phi = resolve_activation(activation)
    x, weight, bias = autocast_inputs(x, weight, bias)
    stride, padding, dilation = check_conv_inputs(
        x, weight, bias, stride, padding, dilation, groups, out_channel_multiple=2
    )
    y = ops.conv2d(x, weight, bias, (stride, padding, dilation, groups))
    b, c2, h, w = y.shape
    halves = y.view(b, groups, 2, c2 // (2 * groups), h, w)
    feature = halves[:, :, 0].reshape(b, c2 // 2, h, w)
    gate = halves[:, :, 1].reshape(b, c2 // 2, h, w)
    if phi is not None:
        feature = phi(feature)
    return feature * torch.sigmoid(gate)


__all__ = ["ACTIVATIONS", "gated_conv2d", "resolve_activation"]
