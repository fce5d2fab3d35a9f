"""Inputs for the networks under test, and what tests count on them."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from tests.oracle import blob_mask

# a 3-level width-8 U-Net: a real inpainting network that loads and runs in milliseconds
SMALL_UNET = {"_target_": "masking.models.PConvUNet", "depth": 3, "base_width": 8, "max_width": 16}


def inpainting_inputs(size: int = 32, batch: int = 1) -> tuple[Tensor, Tensor]:
    """``(image, mask)`` for an inpainting network: a seeded image in [0, 1] and smooth holes over
    about 40 % of each image (1 = valid)."""
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, size, size, generator=g), blob_mask(batch, size, 0.4)


def n_params(model: nn.Module) -> int:
    """Number of parameter entries of ``model``."""
    return sum(p.numel() for p in model.parameters())


def inpaint_checkpoint(
    path: Path, spec: dict = SMALL_UNET, weights_spec: dict = SMALL_UNET, **extra
) -> Path:
    """A checkpoint as task=inpaint writes it: ``spec`` and the ``net.``-prefixed random weights of
    the network ``weights_spec`` builds (they differ in the tests of mismatched files)."""
    net = instantiate(weights_spec)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"net_spec": spec, "state_dict": state, **extra}, path)
    return path
