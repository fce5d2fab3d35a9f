from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..checks import pair, resolve_padding
from ..functional import gated_conv2d, resolve_activation
from ..functional.gated_conv import Activation
from .vanilla_conv import pass_mask_along


class GatedConv2d(nn.Module):
    """Gated convolution (Yu et al., 2019, DeepFill v2): ``φ(feature) ⊙ σ(gate)``.

    One convolution with ``2 · out_channels`` filters (per group: features, then gates), so the soft
    mask ``σ(gate)`` is learned from the same input as the features. The pixel mask is not used by the
    layer; it is passed along on the output grid so that networks can swap layer types.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as in
            ``nn.Conv2d``; ``out_channels`` counts gated outputs (the weight has twice as many rows).
        activation: φ by name (``elu``, ``relu``, ``leaky_relu``, ``gelu``, ``silu``, ``tanh``,
            ``none``), a callable, or ``None`` for output layers. Default ``"elu"``.

    Shape:
        - x: ``(B, C_in, H, W)``; mask: ``(B, c, H, W)`` or ``None``.
        - out: ``(B, C_out, H', W')``; new_mask: ``(B, 1, H', W')`` or ``None``.

    Example:
        >>> out, new_mask = GatedConv2d(4, 8, 3, padding=1)(torch.randn(1, 4, 16, 16))
        >>> out.shape, new_mask
        (torch.Size([1, 8, 16, 16]), None)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        activation: str | Activation | None = "elu",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                f"by groups ({groups})"
            )
        resolve_activation(activation)  # fail at construction on an unknown name
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair("kernel_size", kernel_size, minimum=1)
        self.stride = pair("stride", stride, minimum=1)
        self.dilation = pair("dilation", dilation, minimum=1)
        self.padding = resolve_padding(padding, self.kernel_size, self.stride, self.dilation)
        self.groups = groups
        self.activation = activation
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(2 * out_channels, in_channels // groups, *self.kernel_size, **factory)
        )
        self.bias = nn.Parameter(torch.empty(2 * out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's default initialisation, so gated and plain layers start on equal terms.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        out = gated_conv2d(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            activation=self.activation,
        )
        return out, pass_mask_along(self, x, mask)

    def extra_repr(self) -> str:
        act = (
            self.activation
            if isinstance(self.activation, str) or self.activation is None
            else (getattr(self.activation, "__name__", type(self.activation).__name__))
        )
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text + f", activation={act}"
