"""Inpainting one image with a trained network, at the image's own size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def inpaint(net: nn.Module, image: Tensor, mask: Tensor) -> Tensor:
    """Inpaint one ``(3, H, W)`` image with its ``(H, W)`` mask (1 = valid): pad to the network's
    multiple (the padding is hole), run, crop back, keep the known pixels."""
    multiple = getattr(net, "size_multiple", 1)
    h, w = image.shape[1:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    device = next(net.parameters()).device
    x = F.pad(image[None], (0, pad_w, 0, pad_h)).to(device)
    m = F.pad(mask[None, None].float(), (0, pad_w, 0, pad_h)).to(device)
    out = net(x, m)
    out = out[-1] if isinstance(out, tuple | list) else out
    out = out[0, :, :h, :w].clamp(0, 1).cpu()
    return torch.where(mask.bool()[None], image, out)
