from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..checks import shape_str
from ..functional import update_mask2d
from ..kernels import ops
from ._conv_base import MaskedConvMixin


class VanillaConv2d(MaskedConvMixin, nn.Conv2d):
    """A plain convolution with the masked layers' call signature: the baseline of ``layer=vanilla``.

    The image is convolved as given (the network decides whether holes are zero-filled or the mask is
    an input channel); the mask is passed along, updated like a partial convolution's so that its grid
    matches the output.

    Shape:
        - x: ``(B, C_in, H, W)``; mask: ``(B, c, H, W)`` or ``None``.
        - out: ``(B, C_out, H', W')``; new_mask: ``(B, 1, H', W')`` or ``None``.

    Example:
        >>> out, new_mask = VanillaConv2d(3, 8, 3, stride=2, padding=1)(
        ...     torch.randn(1, 3, 16, 16), torch.ones(1, 1, 16, 16))
        >>> out.shape, new_mask.shape
        (torch.Size([1, 8, 8, 8]), torch.Size([1, 1, 8, 8]))
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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        geometry = (kernel_size, stride, padding, dilation)
        self._init_conv(
            in_channels, out_channels, geometry, groups, bias, device=device, dtype=dtype
        )

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> VanillaConv2d:
        """A copy of ``conv``'s parameters in a layer that also passes the mask along."""
        return cls._from_conv(conv)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        out = ops.conv2d(x, self.weight, self.bias, geometry)
        return out, pass_mask_along(self, x, mask)


def pass_mask_along(layer: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor | None:
    """The mask of a layer that does not use it, on the grid of the layer's output."""
    if mask is None:
        return None
    if (
        not isinstance(mask, Tensor)
        or mask.dim() != 4
        or mask.shape[0] != x.shape[0]
        or (mask.shape[2:] != x.shape[2:])
    ):
        got = shape_str(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(
            f"mask must be (B, 1, H, W) = {shape_str((x.shape[0], 1, *x.shape[2:]))} to match x "
            f"of shape {shape_str(x.shape)}, got {got}"
        )
    return update_mask2d(mask, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
