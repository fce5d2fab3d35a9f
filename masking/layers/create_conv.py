from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from .gated_conv import GatedConv2d
from .partial_conv import PartialConv2d
from .vanilla_conv import VanillaConv2d

CONV_LAYERS: dict[str, type[nn.Module]] = {
    "partial": PartialConv2d,
    "gated": GatedConv2d,
    "vanilla": VanillaConv2d,
}

ConvLayer = str | type[nn.Module] | Callable[..., nn.Module]


def create_conv2d(
    layer: ConvLayer,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    bias: bool = True,
) -> nn.Module:
    """Build a mask-passing convolution, called as ``out, new_mask = conv(x, mask)``.

    Networks take ``layer`` as an argument so the ``layer=partial|gated|vanilla`` config swaps the
    convolution without touching the network. Layer-specific options go in a partial, e.g.
    ``functools.partial(GatedConv2d, activation=None)`` or
    ``functools.partial(PartialConv2d, multi_channel=True)``.

    Args:
        layer: ``"partial"``, ``"gated"``, ``"vanilla"``, a layer class or a callable taking the
            ``nn.Conv2d`` arguments.
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as in
            ``nn.Conv2d``.

    Example:
        >>> conv = create_conv2d("gated", 4, 8, 3, padding=1)
        >>> type(conv).__name__
        'GatedConv2d'
    """
    if isinstance(layer, str):
        if layer not in CONV_LAYERS:
            raise ValueError(f"layer must be one of {sorted(CONV_LAYERS)}, got {layer!r}")
        layer = CONV_LAYERS[layer]
    elif not callable(layer):
        raise TypeError(
            f"layer must be a name in {sorted(CONV_LAYERS)}, a class or a callable, "
            f"got {type(layer).__name__}"
        )
    return layer(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )
