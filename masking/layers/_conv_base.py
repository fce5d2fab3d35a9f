from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..checks import pair, resolve_padding


class MaskedConvMixin:
    """What the mask-passing subclasses of ``nn.Conv2d`` share: argument checks and dense swaps."""

    @staticmethod
    def _conv_args(
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        padding: int | Sequence[int] | str,
        dilation: int | Sequence[int],
    ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
        kernel = pair("kernel_size", kernel_size, minimum=1)
        stride_ = pair("stride", stride, minimum=1)
        dilation_ = pair("dilation", dilation, minimum=1)
        return kernel, stride_, resolve_padding(padding, kernel, stride_, dilation_), dilation_

    def _init_conv(
        self,
        in_channels: int,
        out_channels: int,
        geometry: tuple,
        groups: int,
        bias: bool,
        **factory,
    ) -> None:
        """``nn.Conv2d.__init__`` after the checks of ``geometry`` = ``(kernel_size, stride,
        padding, dilation)``; ``factory`` is ``device`` and ``dtype``."""
        kernel, stride, padding, dilation = self._conv_args(*geometry)
        nn.Conv2d.__init__(
            self,
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
            **factory,
        )

    @classmethod
    def _from_conv(cls, conv: nn.Conv2d, **options):
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"conv.padding_mode must be 'zeros' to become a {cls.__name__}, "
                f"got {conv.padding_mode!r}"
            )
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **options,
        )
        layer.load_state_dict(conv.state_dict())
        return layer

    def to_dense(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the same parameters (a copy)."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.load_state_dict(self.state_dict())
        return conv
