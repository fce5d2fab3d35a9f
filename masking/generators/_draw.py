"""Rasterising holes with tensor ops, so masks can be drawn on the batch's device."""

from __future__ import annotations

import torch
from torch import Tensor


def draw_strokes(
    height: int,
    width: int,
    starts: Tensor,
    ends: Tensor,
    widths: Tensor,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """A bool ``(height, width)`` canvas, True inside any thick segment with round caps.

    Args:
        starts, ends: ``(S, 2)`` segment end points as (row, col) in pixels (floats).
        widths: ``(S,)`` stroke widths in pixels.
    """
    canvas = torch.zeros(height, width, dtype=torch.bool, device=device)
    if starts.numel() == 0:
        return canvas
    rows = torch.arange(height, device=device, dtype=torch.float32).view(1, height, 1)
    cols = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, width)
    a = starts.to(device=device, dtype=torch.float32)
    b = ends.to(device=device, dtype=torch.float32)
    radius = (widths.to(device=device, dtype=torch.float32) / 2).view(-1, 1, 1)
    # segments in chunks bound the (S, H, W) temporaries on large images
    chunk = max(1, (1 << 24) // (height * width))
    for lo in range(0, a.shape[0], chunk):
        a0, b0 = a[lo : lo + chunk], b[lo : lo + chunk]
        d = b0 - a0
        length2 = (d * d).sum(1).clamp_min(1e-12).view(-1, 1, 1)
        pr = rows - a0[:, 0].view(-1, 1, 1)
        pc = cols - a0[:, 1].view(-1, 1, 1)
        t = ((pr * d[:, 0].view(-1, 1, 1) + pc * d[:, 1].view(-1, 1, 1)) / length2).clamp(0, 1)
        dr = pr - t * d[:, 0].view(-1, 1, 1)
        dc = pc - t * d[:, 1].view(-1, 1, 1)
        inside = dr * dr + dc * dc <= radius[lo : lo + chunk] ** 2
        canvas |= inside.any(0)
    return canvas


def draw_boxes(height: int, width: int, boxes: Tensor, *, device=None) -> Tensor:
    """A bool canvas, True inside any ``(top, left, box_height, box_width)`` row of ``boxes``."""
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    if boxes.numel() == 0:
        return torch.zeros(height, width, dtype=torch.bool, device=device)
    b = boxes.to(device=device, dtype=torch.long)
    top, left = b[:, 0].view(-1, 1, 1), b[:, 1].view(-1, 1, 1)
    in_rows = (rows >= top) & (rows < top + b[:, 2].view(-1, 1, 1))
    in_cols = (cols >= left) & (cols < left + b[:, 3].view(-1, 1, 1))
    return (in_rows & in_cols).any(0)
