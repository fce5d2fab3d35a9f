"""Inputs for the networks under test, and what tests count on them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tests.oracle import blob_mask


def inpainting_inputs(size: int = 32, batch: int = 1) -> tuple[Tensor, Tensor]:
    """``(image, mask)`` for an inpainting network: a seeded image in [0, 1] and smooth holes over
    about 40 % of each image (1 = valid)."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, size, size, generator=g), blob_mask(batch, size, 0.4)


def n_params(model: nn.Module) -> int:
    """Number of parameter entries of ``model``."""
    return sum(p.numel() for p in model.parameters())
