"""The partial-convolution U-Net of Liu et al. (2018), with the convolution chosen by name."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..checks import check_int
from ..functional import fill_holes, mask_product
from ..layers import CONV_LAYERS, PartialConv2d, create_conv2d
from ..layers.create_conv import ConvLayer
from ._checks import check_image_and_mask
from ._upsample import upsample2x


def _resolve(layer: ConvLayer):
    if isinstance(layer, str):
        if layer not in CONV_LAYERS:
            raise ValueError(f"layer must be one of {sorted(CONV_LAYERS)}, got {layer!r}")
        return CONV_LAYERS[layer]
    return layer


class PConvUNet(nn.Module):
    """U-Net inpainting network (Liu et al., 2018) over any mask-passing convolution.

    Encoder: ``depth`` convolutions of stride 2 with kernels ``encoder_kernels`` (the paper's 7, 5, 5,
    then 3), widths doubling from ``base_width`` up to ``max_width``, batch norm after all but the
    first, ReLU. Decoder: nearest-neighbour upsampling of features and masks, concatenation with the
    encoder's features and masks at the same scale (the input image last), 3×3 convolutions, batch
    norm and LeakyReLU(0.2) after all but the last, which outputs the image.

    The paper's 512-px network is ``depth=8, base_width=64, max_width=512``; the defaults are sized for
    a CPU. With ``layer="partial"`` the decoder's convolutions take per-channel masks (the upsampled
    mask for the upsampled channels, the skip's mask for the skip channels), as the method requires.
    Holes are zero-filled on entry, so the output never depends on what the holes contained, whatever
    the layer type; ``mask_as_input`` (default: on for non-partial layers) also feeds the mask as an
    extra input channel, as plain-convolution baselines need.

    Args:
        layer: ``"partial"``, ``"gated"``, ``"vanilla"``, a layer class or a callable (see
            ``masking.create_conv2d``).
        in_channels, out_channels: image channels.
        depth: number of stride-2 levels; inputs must be multiples of ``2 ** depth``.
        base_width, max_width: channel widths.
        encoder_kernels: kernel sizes of the first encoder levels; later levels use the last one.
        batch_norm: batch norm in the hidden layers.
        mask_as_input: concatenate the mask to the input image (``None``: for non-partial layers).
        multi_channel_decoder: partial layers only: per-channel decoder masks (the paper, default)
            or one joint mask (the union of the upsampled and skip masks). The joint mask makes
            the valid count independent of how many channels a layer has, so channel pruning can
            remove channels exactly (with per-channel masks the ratio depends on the channel count).

    Shape:
        - image: ``(B, in_channels, H, W)``, mask: ``(B, 1, H, W)`` (1 = valid), H and W multiples of
          ``2 ** depth``.
        - output: ``(B, out_channels, H, W)`` (not composited with the known pixels).

    Example:
        >>> net = PConvUNet(depth=3, base_width=8)
        >>> net(torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        layer: ConvLayer = "partial",
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        depth: int = 5,
        base_width: int = 32,
        max_width: int = 256,
        encoder_kernels: Sequence[int] = (7, 5, 5, 3),
        batch_norm: bool = True,
        mask_as_input: bool | None = None,
        multi_channel_decoder: bool = True,
        prefill: bool = False,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("depth", depth, 1),
            ("base_width", base_width, 1),
        ):
            check_int(name, value, minimum)
        if max_width < base_width:
            raise ValueError(f"max_width must be >= base_width ({base_width}), got {max_width!r}")
        kernels = list(encoder_kernels)
        if not kernels or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"encoder_kernels must be odd positive ints, got {encoder_kernels!r}")
        layer_cls = _resolve(layer)
        partial = isinstance(layer_cls, type) and issubclass(layer_cls, PartialConv2d)
        self.layer_name = layer if isinstance(layer, str) else getattr(layer, "__name__", "custom")
        self.depth = depth
        self.mask_as_input = (not partial) if mask_as_input is None else bool(mask_as_input)
        if not isinstance(multi_channel_decoder, bool):
            raise ValueError(f"multi_channel_decoder must be a bool, got {multi_channel_decoder!r}")
        self.multi_channel_decoder = partial and multi_channel_decoder
        if not isinstance(prefill, bool):
            raise ValueError(f"prefill must be a bool, got {prefill!r}")
        self.prefill = prefill
        if prefill:  # the network sees the whole filled image and where the holes were
            self.mask_as_input = True
        decoder_layer = (
            functools.partial(layer_cls, multi_channel=True)
            if self.multi_channel_decoder
            else layer_cls
        )

        widths = [min(base_width * 2**i, max_width) for i in range(depth)]
        first_in = in_channels + (1 if self.mask_as_input else 0)
        self.encoder = nn.ModuleList()
        for i, width in enumerate(widths):
            k = kernels[min(i, len(kernels) - 1)]
            conv = create_conv2d(
                layer_cls,
                first_in if i == 0 else widths[i - 1],
                width,
                k,
                stride=2,
                padding=k // 2,
                bias=not (batch_norm and i > 0),
            )
            norm = nn.BatchNorm2d(width) if batch_norm and i > 0 else nn.Identity()
            self.encoder.append(_Stage(conv, norm, nn.ReLU()))
        self.decoder = nn.ModuleList()
        for i in reversed(range(depth)):
            up = widths[i]
            skip = widths[i - 1] if i > 0 else first_in
            last = i == 0
            width = out_channels if last else widths[i - 1]
            conv = create_conv2d(
                decoder_layer, up + skip, width, 3, padding=1, bias=last or not batch_norm
            )
            norm = nn.BatchNorm2d(width) if batch_norm and not last else nn.Identity()
            act = nn.Identity() if last else nn.LeakyReLU(0.2)
            self.decoder.append(_Stage(conv, norm, act))
        if prefill:  # the output starts as the fill itself; training learns the correction
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.depth

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        check_image_and_mask(
            image,
            mask,
            multiple=2**self.depth,
            hint=" (2 ** depth); pad it (predict pads and crops back)",
        )
        mask = mask.to(image.dtype)
        # whatever the holes hold, NaN included (NaN · 0 is NaN), the network never sees it
        x = mask_product(image.masked_fill(mask == 0, 0), mask)
        if self.prefill:
            return self._refine(fill_holes(x, mask), mask)
        if self.mask_as_input:
            x = torch.cat([x, mask], 1)
        return self._unet(x, mask)

    def refine(self, filled: Tensor, mask: Tensor) -> Tensor:
        """The output of a ``prefill`` network for an image whose holes ``filled`` already holds
        :func:`~masking.functional.fill_holes`'s fill: that fill plus the network's correction.
        ``forward`` is ``refine(fill_holes(image, mask), mask)``; an export (ONNX, which cannot
        express the fill's data-dependent rings) takes this part alone."""
        if not self.prefill:
            raise ValueError("refine is the second half of a prefill network; this one has none")
        check_image_and_mask(filled, mask, multiple=2**self.depth, hint=" (2 ** depth)")
        return self._refine(filled, mask.to(filled.dtype))

    def _refine(self, filled: Tensor, mask: Tensor) -> Tensor:
        # every pixel is known from here on: the mask is an input channel
        x = torch.cat([filled, mask], 1)
        return filled + self._unet(x, torch.ones_like(mask))

    def _unet(self, x: Tensor, mask: Tensor) -> Tensor:
        skips = [(x, mask)]
        for stage in self.encoder:
            x, mask = stage(x, mask)
            skips.append((x, mask))
        skips.pop()  # the deepest features are the decoder's input, not a skip
        for stage in self.decoder:
            skip_x, skip_mask = skips.pop()
            x = upsample2x(x)
            mask = upsample2x(mask)
            if self.multi_channel_decoder:
                joint = torch.cat(
                    [
                        mask.expand(-1, x.shape[1], -1, -1),
                        skip_mask.expand(-1, skip_x.shape[1], -1, -1),
                    ],
                    1,
                )
            else:
                joint = torch.maximum(mask, skip_mask)
            x, mask = stage(torch.cat([x, skip_x], 1), joint)
            mask = mask[:, :1]
        return x

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer_name!r}, depth={self.depth}, mask_as_input={self.mask_as_input}, "
            f"prefill={self.prefill}"
        )


class _Stage(nn.Module):
    """conv → norm → activation, passing the mask along."""

    def __init__(self, conv: nn.Module, norm: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.norm, self.act = conv, norm, act

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x, mask = self.conv(x, mask)
        return self.act(self.norm(x)), mask
