"""DeepFill v2 (Yu et al., 2019): a coarse-to-fine gated-convolution generator and SN-PatchGAN."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from ..functional import mask_product
from ..layers import CONV_LAYERS, GatedConv2d, create_conv2d
from ..layers.create_conv import ConvLayer
from ._checks import check_image_and_mask
from ._upsample import upsample2x


class _Conv(nn.Module):
    """One generator convolution: ``(x, mask) -> (out, new_mask)`` with 'same'-style padding."""

    def __init__(self, layer, c_in, c_out, k, *, stride=1, dilation=1, upsample=False):
        super().__init__()
        self.upsample = upsample
        self.conv = create_conv2d(
            layer, c_in, c_out, k, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation
        )

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.upsample:  # gated upsampling: nearest ×2, then the (gated) convolution
            x = upsample2x(x)
            mask = upsample2x(mask)
        return self.conv(x, mask)


class _Branch(nn.Module):
    """Encoder (two stride-2 steps) → dilated bottleneck → gated-upsampling decoder."""

    def __init__(self, layer, output_layer, c_in: int, width: int, out_channels: int) -> None:
        super().__init__()
        w, w2, w4 = width, 2 * width, 4 * width
        self.stages = nn.ModuleList(
            [
                _Conv(layer, c_in, w, 5),
                _Conv(layer, w, w2, 3, stride=2),
                _Conv(layer, w2, w2, 3),
                _Conv(layer, w2, w4, 3, stride=2),
                _Conv(layer, w4, w4, 3),
                _Conv(layer, w4, w4, 3),
                *(_Conv(layer, w4, w4, 3, dilation=d) for d in (2, 4, 8, 16)),
                _Conv(layer, w4, w4, 3),
                _Conv(layer, w4, w4, 3),
                _Conv(layer, w4, w2, 3, upsample=True),
                _Conv(layer, w2, w2, 3),
                _Conv(layer, w2, w, 3, upsample=True),
                _Conv(layer, w, max(w // 2, 1), 3),
                _Conv(output_layer, max(w // 2, 1), out_channels, 3),
            ]
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for stage in self.stages:
            x, mask = stage(x, mask)
        return x


class GatedGenerator(nn.Module):
    """DeepFill v2's coarse-to-fine generator with gated convolutions.

    The coarse branch sees the zero-filled image and the mask; the refinement branch sees the coarse
    result composited into the known pixels. Each branch downsamples twice, runs a dilated bottleneck
    (dilations 2, 4, 8, 16) and upsamples with gated convolutions (nearest ×2, then a gated conv). The
    output layers have no activation. Contextual attention is not part of this network.

    Args:
        layer: convolution by name or class (``"gated"`` by default; ``"vanilla"`` or ``"partial"``
            give the same architecture with other layers).
        in_channels, out_channels: image channels.
        width: gated output channels of the first layer. DeepFill v2's ``cnum=48`` counts features
            and gates together, so its network is ``width=24`` (the default): 3.2 M parameters here,
            against the paper's 4.1 M, which include the contextual-attention branch.

    Shape:
        - image: ``(B, in_channels, H, W)``, mask: ``(B, 1, H, W)`` (1 = valid), H and W multiples of 4.
        - returns ``(coarse, refined)``, both ``(B, out_channels, H, W)``, not composited.

    Example:
        >>> gen = GatedGenerator(width=8)
        >>> coarse, refined = gen(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32))
        >>> refined.shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        layer: ConvLayer = "gated",
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 24,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("width", width),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(layer, str):
            if layer not in CONV_LAYERS:
                raise ValueError(f"layer must be one of {sorted(CONV_LAYERS)}, got {layer!r}")
            layer = CONV_LAYERS[layer]
        output_layer = layer
        if isinstance(layer, type) and issubclass(layer, GatedConv2d):
            output_layer = functools.partial(GatedConv2d, activation=None)
        self.coarse = _Branch(layer, output_layer, in_channels + 1, width, out_channels)
        self.refine = _Branch(layer, output_layer, in_channels + 1, width, out_channels)

    size_multiple = 4  # height and width must be multiples of this
    output_names = ("coarse", "refined")  # what forward returns, as exports name them

    def forward(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        check_image_and_mask(image, mask, multiple=self.size_multiple)
        mask = mask.to(image.dtype)
        # whatever the holes hold, NaN included (NaN · 0 is NaN), the network never sees it
        x = mask_product(image.masked_fill(mask == 0, 0), mask)
        coarse = self.coarse(torch.cat([x, mask], 1), mask)
        composite = x + mask_product(coarse, 1 - mask)
        refined = self.refine(torch.cat([composite, mask], 1), torch.ones_like(mask))
        return coarse, refined


class PatchDiscriminator(nn.Module):
    """SN-PatchGAN (Yu et al., 2019): six 5×5 stride-2 spectrally normalised convolutions.

    Sees the image and the mask as an extra channel and returns one score per patch, for a hinge loss
    on every element.

    Args:
        in_channels: image channels (the mask is added).
        width: channels of the first layer (64); later layers use 2×, then 4×.

    Shape:
        - image ``(B, in_channels, H, W)``, mask ``(B, 1, H, W)``; H and W multiples of 64 keep every
          patch whole, other sizes work.
        - output ``(B, 4·width, ⌈H/64⌉, ⌈W/64⌉)``.
    """

    def __init__(self, *, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c_in = in_channels + 1
        for c_out in widths:
            conv = nn.Conv2d(c_in, c_out, 5, stride=2, padding=2)
            layers += [nn.utils.parametrizations.spectral_norm(conv), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        check_image_and_mask(image, mask, multiple=1)
        return self.net(torch.cat([image, mask.to(image.dtype)], 1))
