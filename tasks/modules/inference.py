"""Inpainting one image with a trained network, at the image's own size, in tiles when it is large,
coarse to fine when it is larger than the crops the network trained on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Measured on CPU with the default U-Net (depth 4, width 32): about 1 GB of activations per
# megapixel in one pass, so images above TILE² pixels go through in overlapping tiles.
TILE = 1024
OVERLAP = 128
# coarse to fine: at each finer level the network fills the hole pixels within BAND pixels of
# known ones; deeper inside a hole the (upsampled) coarser level's fill stays
BAND = 16


def pyramid_levels(height: int, width: int, coarse_side: int | None) -> int:
    """How many times to halve an image before its shorter side would fall below
    ``coarse_side`` (0 without one)."""
    if not coarse_side:
        return 0
    return max(0, math.floor(math.log2(min(height, width) / coarse_side)))


def coarse_to_fine(
    net: nn.Module, images: Tensor, masks: Tensor, levels: int, band: int = BAND
) -> Tensor:
    """The network's fill of ``images`` ``(B, 3, H, W)`` with ``masks`` ``(B, 1, H, W)`` (1 =
    known), built over a pyramid of ``levels`` halvings (H and W multiples of the network's size
    multiple times ``2 ** levels``).

    A network trained on small crops sees only so far: at a larger size the middle of a wide hole
    is out of its reach and it paints its prior there. So the image and its mask are halved
    ``levels`` times (a coarse pixel is known when at least two of its four fine ones are, and is
    their mean), the coarsest level is filled in one pass, and at each finer level the upsampled
    coarser fill stands in for the hole pixels more than ``band`` pixels from a known one while
    the network fills the band around the known pixels from both. ``levels=0`` is one plain pass.
    """
    if levels <= 0:
        return _output(net, images, masks)
    known = F.avg_pool2d(masks, 2)
    small_masks = (known >= 0.5).to(masks.dtype)
    small_images = F.avg_pool2d(images * masks, 2) / known.clamp_min(0.25) * small_masks
    coarse = coarse_to_fine(net, small_images, small_masks, levels - 1, band)
    coarse = torch.where(small_masks.bool(), small_images, coarse)
    up = F.interpolate(coarse, size=images.shape[-2:], mode="bilinear", align_corners=False)
    far = 1 - F.max_pool2d(masks, 2 * band + 1, stride=1, padding=band)
    fine = _output(net, images * masks + up * far, (masks + far).clamp(max=1))
    return torch.where(far.bool(), up, fine)


def _output(net: nn.Module, images: Tensor, masks: Tensor) -> Tensor:
    out = net(images, masks)
    return (out[-1] if isinstance(out, tuple | list) else out).clamp(0, 1)


@torch.no_grad()
def inpaint(
    net: nn.Module, image: Tensor, mask: Tensor, *, tile: int = TILE, overlap: int = OVERLAP
) -> Tensor:
    """Inpaint one ``(3, H, W)`` image with its ``(H, W)`` mask (1 = valid) and keep the known pixels.

    An image of at most ``tile``² pixels goes through the network in one pass (padded with hole to
    the network's size multiple, cropped back), or coarse to fine (:func:`coarse_to_fine`) when
    the network records the side of the crops it trained on (``net.coarse_side``, which
    :func:`~tasks.runtime.checkpoints.load_inpainting_network` sets from the checkpoint) and the
    image is at least twice that. A larger one goes through in ``tile`` × ``tile`` tiles that
    overlap by ``overlap`` pixels, blended with linear ramps across each overlap, so the network's
    memory stays that of one tile whatever the image's size; a hole wider than a tile is then
    filled from what that tile sees.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"tile must be >= 1 and overlap in [0, tile), got {tile} and {overlap}")
    h, w = image.shape[1:]
    large = h * w > tile * tile
    out = _tiled(net, image, mask, tile, overlap) if large else _whole(net, image, mask)
    return torch.where(mask.bool()[None], image, out)


def inpaint_8bit(
    net: nn.Module, image: Tensor, holes: Tensor, *, tile: int = TILE, overlap: int = OVERLAP
) -> Tensor:
    """:func:`inpaint` for a picture to be saved in 8 bits: ``image`` ``(3, H, W)``, ``holes`` a bool
    ``(H, W)`` (True = fill). The result is on the 8-bit grid, and its known pixels are the input's
    own 8-bit values, bit for bit, whatever the network does."""
    result = inpaint(net, image, (~holes).float(), tile=tile, overlap=overlap)
    original = (image * 255).round()
    return torch.where(holes[None], (result * 255).round(), original) / 255


def _whole(net: nn.Module, image: Tensor, mask: Tensor) -> Tensor:
    h, w = image.shape[1:]
    levels = pyramid_levels(h, w, getattr(net, "coarse_side", None))
    multiple = getattr(net, "size_multiple", 1) * 2**levels
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    device = next(net.parameters()).device
    x = F.pad(image[None], (0, pad_w, 0, pad_h)).to(device)
    m = F.pad(mask[None, None].float(), (0, pad_w, 0, pad_h)).to(device)
    out = coarse_to_fine(net, x, m, levels)
    return out[0, :, :h, :w].float().cpu()


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side: a stride of ``tile - overlap``, the last tile flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return [*starts, size - tile]


def _ramp(length: int, before: int, after: int) -> Tensor:
    """Blend weights along one side of a tile: rising over ``before`` pixels, falling over ``after``."""
    weight = torch.ones(length)
    if before:
        weight[:before] = torch.arange(1, before + 1) / (before + 1)
    if after:
        weight[length - after :] = torch.minimum(
            weight[length - after :], torch.arange(after, 0, -1) / (after + 1)
        )
    return weight


def _tiled(net: nn.Module, image: Tensor, mask: Tensor, tile: int, overlap: int) -> Tensor:
    h, w = image.shape[1:]
    total = torch.zeros(3, h, w)
    weights = torch.zeros(h, w)
    rows, cols = _starts(h, tile, overlap), _starts(w, tile, overlap)
    for i, top in enumerate(rows):
        th = min(tile, h)
        up = max(0, rows[i - 1] + th - top) if i else 0  # rows shared with the tile above
        down = max(0, top + th - rows[i + 1]) if i + 1 < len(rows) else 0
        for j, left in enumerate(cols):
            tw = min(tile, w)
            before = max(0, cols[j - 1] + tw - left) if j else 0
            after = max(0, left + tw - cols[j + 1]) if j + 1 < len(cols) else 0
            window = (slice(top, top + th), slice(left, left + tw))
            out = _whole(net, image[:, window[0], window[1]], mask[window])
            weight = _ramp(th, up, down)[:, None] * _ramp(tw, before, after)[None, :]
            total[:, window[0], window[1]] += out * weight
            weights[window] += weight
    return total / weights  # every pixel has a positive weight: a weighted mean of its tiles
