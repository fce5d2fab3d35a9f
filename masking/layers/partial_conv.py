from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..functional import partial_conv2d
from ._conv_base import MaskedConvMixin


class PartialConv2d(MaskedConvMixin, nn.Conv2d):
    """Partial convolution (Liu et al., 2018); see ``masking.partial_conv2d`` for the formula.

    Stateless: nothing about the input size or mask is cached, so the layer works under
    ``torch.compile`` and CUDA graphs and with masks that change every step. Parameters are those of an
    ``nn.Conv2d`` (``from_dense`` / ``to_dense`` swap without copying logic).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as in
            ``nn.Conv2d`` (zero padding only; ``padding`` may be ``'same'`` or ``'valid'``).
        multi_channel: take a per-channel ``(B, C_in, H, W)`` mask and return ``(B, C_out, H', W')``.

    Shape:
        - x: ``(B, C_in, H, W)``; mask: ``(B, 1, H, W)`` (or ``(B, C_in, H, W)``), 1 = valid; ``None``
          means every pixel is valid, which turns the layer into partial-convolution-based padding.
        - out: ``(B, C_out, H', W')``; new_mask: ``(B, 1, H', W')`` (``(B, C_out, H', W')``).

    Example:
        >>> layer = PartialConv2d(3, 8, 3, padding=1)
        >>> out, new_mask = layer(torch.randn(2, 3, 16, 16), torch.ones(2, 1, 16, 16))
        >>> out.shape, new_mask.shape
        (torch.Size([2, 8, 16, 16]), torch.Size([2, 1, 16, 16]))
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
        multi_channel: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        geometry = (kernel_size, stride, padding, dilation)
        self._init_conv(
            in_channels, out_channels, geometry, groups, bias, device=device, dtype=dtype
        )
        self.multi_channel = bool(multi_channel)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, *, multi_channel: bool = False) -> PartialConv2d:
        """A partial convolution holding a copy of ``conv``'s parameters."""
        return cls._from_conv(conv, multi_channel=multi_channel)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if mask is None and isinstance(x, Tensor) and x.dim() == 4:
            mask = x.new_ones((x.shape[0], 1, x.shape[2], x.shape[3]))
        return partial_conv2d(
            x,
            mask,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            multi_channel=self.multi_channel,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + (", multi_channel=True" if self.multi_channel else "")
