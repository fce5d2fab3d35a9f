"""A classical fill of image holes, ring by ring from their edges: the starting point that a
network can refine."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_floating, check_int, check_tensor, shape_str


def _dilate(known: Tensor) -> Tensor:
    """One 3×3 dilation of a bool ``(B, H, W)`` set (bool shifts: far cheaper than a max pool)."""
    p = F.pad(known, (1, 1, 1, 1))
    rows = p[:, 1:-1, :] | p[:, :-2, :] | p[:, 2:, :]
    return rows[..., 1:-1] | rows[..., :-2] | rows[..., 2:]


def hole_distance(mask: Tensor) -> tuple[Tensor, int]:
    """The ring of every hole pixel: 0 for known pixels (``mask`` > 0.5), ``k`` for the pixels that
    ``k`` 3×3 dilations of the known set reach (the chessboard distance to the nearest known
    pixel); a pixel that no dilation reaches (an image without a known pixel) keeps 0.

    Returns the ``(B, 1, H, W)`` float rings and the largest ring.
    """
    known = mask[:, 0] > 0.5
    rings = torch.zeros(known.shape, dtype=torch.float32, device=mask.device)
    step = 0
    while True:
        grown = _dilate(known)
        new = grown & ~known
        if not bool(new.any()):
            return rings[:, None], step
        step += 1
        rings.masked_fill_(new, step)
        known = grown


@torch.no_grad()
def fill_holes(image: Tensor, mask: Tensor, radius: int = 3) -> Tensor:
    """Fill the holes of ``image`` from their edges inwards, the known pixels unchanged.

    The fast-marching fill of Telea (2004) without its gradient term: hole pixels are visited
    ring by ring (:func:`hole_distance`), and each takes the weighted mean of the pixels within
    ``radius`` that are known or filled in an earlier ring, weighted by ``|cos θ| / d² / (1 +
    |Δring|)``, where ``d`` is the distance, ``θ`` the angle between the offset and the direction
    in which the rings grow, and ``Δring`` the difference of their rings: the boundary's colours
    carried straight in. On the held-out photos at 256 px its bin-averaged hole-L1 is within 1 %
    of OpenCV's Telea (docs/inpainting.md). Pure torch, any device; it has no parameters and no
    gradient. The work is one gather per ring over that ring's pixels only.

    Args:
        image: ``(B, C, H, W)`` floating-point; what the holes hold is never read.
        mask: ``(B, 1, H, W)``, 1 = known (values above 0.5 count as known).
        radius: how far (pixels) a filled pixel looks for known ones (its 8 neighbours at least).

    Returns:
        ``(B, C, H, W)`` in ``image``'s dtype. A batch item without a known pixel comes back as
        zeros.

    Example:
        >>> image = torch.rand(1, 3, 16, 16)
        >>> mask = torch.ones(1, 1, 16, 16); mask[..., 4:12, 4:12] = 0
        >>> filled = fill_holes(image, mask)
        >>> bool((filled[..., :4, :] == image[..., :4, :]).all())
        True
    """
    check_tensor("image", image)
    check_tensor("mask", mask)
    check_floating("image", image)
    check_int("radius", radius, 1)
    if image.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(
            f"image must be (B, C, H, W) and mask (B, 1, H, W), got {shape_str(image.shape)} "
            f"and {shape_str(mask.shape)}"
        )
    if mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"mask {shape_str(mask.shape)} does not match image {shape_str(image.shape)}"
        )
    b, c, h, w = image.shape
    known = mask > 0.5
    rings, last = hole_distance(mask)
    # the direction in which the rings grow, at every pixel (central differences)
    padded = F.pad(rings, (1, 1, 1, 1), mode="replicate")
    grow_y = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])[:, 0] / 2
    grow_x = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])[:, 0] / 2
    # the neighbourhood: offsets within the radius, as steps in the padded, flattened image
    r = radius
    span = torch.arange(-r, r + 1, device=image.device, dtype=torch.float32)
    dy, dx = (t.reshape(-1) for t in torch.meshgrid(span, span, indexing="ij"))
    keep = (dy.square() + dx.square() <= max(r * r, 2)) & ((dy != 0) | (dx != 0))
    dy, dx = dy[keep], dx[keep]
    dist2 = dy.square() + dx.square()
    wp = w + 2 * r
    steps = (dy * wp + dx).long()
    # every hole pixel's weights at once: they depend on the rings alone, not on the values
    item, y, x = (rings[:, 0] > 0).nonzero(as_tuple=True)
    ring = rings[item, 0, y, x]
    ring, order = ring.sort(stable=True)
    item, y, x = item[order], y[order], x[order]
    size = (h + 2 * r) * wp
    centre = item * size + (y + r) * wp + (x + r)  # in the padded, flattened batch
    around = centre[:, None] + steps[None, :]  # (pixels, neighbours)
    theirs = F.pad(rings[:, 0], (r, r, r, r), value=math.inf).reshape(-1)[around]
    gy, gx = grow_y[item, y, x], grow_x[item, y, x]
    norm = torch.sqrt(gy.square() + gx.square()).clamp_min(1e-6)
    cos = (gy[:, None] * dy + gx[:, None] * dx).abs() / (dist2.sqrt() * norm[:, None])
    before = theirs < ring[:, None]  # known, or filled in an earlier ring
    weight = before * cos.clamp_min(1e-3) / dist2 / (1 + (ring[:, None] - theirs).abs())
    weight = weight / weight.sum(1, keepdim=True).clamp_min(1e-30)
    # values, padded by the radius (outside the image nothing is ever known), channels last
    values = F.pad(image.float().masked_fill(~known, 0), (r, r, r, r))
    values = values.permute(0, 2, 3, 1).reshape(-1, c).contiguous()
    counts = torch.bincount(ring.long(), minlength=last + 1)[1:].tolist()
    first = 0
    for count in counts:  # ring by ring: each reads the rings before it
        part = slice(first, first + count)
        near = values[around[part]]  # (pixels, neighbours, C)
        values[centre[part]] = (weight[part, :, None] * near).sum(1)
        first += count
    values = values.reshape(b, h + 2 * r, wp, c).permute(0, 3, 1, 2)
    filled = values[..., r : r + h, r : r + w]
    return torch.where(known, image.float(), filled).to(image.dtype)
