"""Inpainting one image with a trained network, at the image's own size, in tiles when it is large."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Measured on CPU with the default U-Net (depth 4, width 32): about 1 GB of activations per
# megapixel in one pass, so images above TILE² pixels go through in overlapping tiles.
TILE = 1024
OVERLAP = 128


@torch.no_grad()
def inpaint(
    net: nn.Module, image: Tensor, mask: Tensor, *, tile: int = TILE, overlap: int = OVERLAP
) -> Tensor:
    """Inpaint one ``(3, H, W)`` image with its ``(H, W)`` mask (1 = valid) and keep the known pixels.

    An image of at most ``tile``² pixels goes through the network in one pass (padded with hole to
    the network's size multiple, cropped back). A larger one goes through in ``tile`` × ``tile``
    tiles that overlap by ``overlap`` pixels, blended with linear ramps across each overlap, so the
    network's memory stays that of one tile whatever the image's size; a hole wider than a tile is
    then filled from what that tile sees.
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
    multiple = getattr(net, "size_multiple", 1)
    h, w = image.shape[1:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    device = next(net.parameters()).device
    x = F.pad(image[None], (0, pad_w, 0, pad_h)).to(device)
    m = F.pad(mask[None, None].float(), (0, pad_w, 0, pad_h)).to(device)
    out = net(x, m)
    out = out[-1] if isinstance(out, tuple | list) else out
    return out[0, :, :h, :w].clamp(0, 1).float().cpu()


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
