"""Inpainting losses (Liu et al., 2018) and hinge GAN losses (Yu et al., 2019)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import vgg16

from ..runtime.checkpoints import hub_file

log = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet weights, as named in its cache
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """Frozen VGG16 pool1, pool2 and pool3 features of images in [0, 1] (ImageNet-normalised inside)."""

    def __init__(self, state_dict: dict[str, Tensor]) -> None:
        super().__init__()
        vgg = vgg16(weights=None)
        try:
            vgg.load_state_dict(state_dict)
        except RuntimeError as err:
            raise ValueError(
                f"the VGG16 weights do not fit torchvision's vgg16: {err}".split("\n")[0]
            ) from None
        features = vgg.features
        self.blocks = nn.ModuleList([features[:5], features[5:10], features[10:17]])
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)  # a fixed feature extractor, whatever the task's mode

    def forward(self, image: Tensor) -> list[Tensor]:
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out


def load_vgg16_features(
    path: str | Path | None = None, *, required: bool = False
) -> VGG16Features | None:
    """VGG16 features from ``path``, else from torchvision's cache; ``None`` (with one log line) when
    neither has them, or a ``FileNotFoundError`` when ``required``. Nothing is downloaded."""
    candidates = [Path(path)] if path else []
    candidates.append(hub_file(VGG16_FILE))
    for candidate in candidates:
        if candidate.is_file():
            return VGG16Features(torch.load(candidate, map_location="cpu", weights_only=True))
    where = " or ".join(str(c) for c in candidates)
    if required:
        raise FileNotFoundError(
            f"VGG16 weights not found at {where}; set loss.vgg_path to a local copy"
        )
    log.warning(
        "VGG16 weights not found at %s: training without the perceptual and style terms", where
    )
    return None


def gram(features: Tensor) -> Tensor:
    """Gram matrix normalised by C·H·W: ``(B, C, C)``, in fp32 (fp64 for fp64 features).

    The sum over H·W positions comes before the normalisation, so under fp16 autocast it overflows
    (past 65504) for VGG-sized features: autocast is turned off for it.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).to(torch.promote_types(features.dtype, torch.float32))
    with torch.autocast(features.device.type, enabled=False):
        return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(composite: Tensor, holes: Tensor) -> Tensor:
    """L1 of neighbour differences of ``composite`` where either neighbour lies in the 1-pixel
    dilation of the holes (Liu et al.'s region P)."""
    region = F.max_pool2d(holes, 3, stride=1, padding=1)
    dx = (composite[..., :, 1:] - composite[..., :, :-1]).abs()
    dy = (composite[..., 1:, :] - composite[..., :-1, :]).abs()
    wx = torch.maximum(region[..., :, 1:], region[..., :, :-1])
    wy = torch.maximum(region[..., 1:, :], region[..., :-1, :])
    return (dx * wx).mean() + (dy * wy).mean()


@dataclass
class LossWeights:
    """Liu et al.'s defaults."""

    valid: float = 1.0
    hole: float = 6.0
    perceptual: float = 0.05
    style: float = 120.0
    tv: float = 0.1


class InpaintingLoss(nn.Module):
    """``valid·L_valid + hole·L_hole + perceptual·L_perc + style·(L_style_out + L_style_comp) + tv·L_tv``.

    L1 terms are normalised by the number of elements (as in the paper, not by the hole area);
    perceptual and style terms use VGG16 pool1-3 features of the output and of the composite. Without
    ``vgg`` those two terms are left out.

    Returns the total and a dict of the unweighted terms, for logging.
    """

    def __init__(
        self, weights: LossWeights | None = None, vgg: VGG16Features | None = None
    ) -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        self.vgg = vgg

    def forward(
        self, output: Tensor, target: Tensor, mask: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        holes = 1 - mask
        composite = output * holes + target * mask
        terms = {
            "valid": (mask * (output - target)).abs().mean(),
            "hole": (holes * (output - target)).abs().mean(),
            "tv": total_variation(composite, holes),
        }
        if self.vgg is not None:
            feats_gt = [f.detach() for f in self.vgg(target)]
            feats_out, feats_comp = self.vgg(output), self.vgg(composite)
            terms["perceptual"] = sum(
                F.l1_loss(o, g) + F.l1_loss(c, g)
                for o, c, g in zip(feats_out, feats_comp, feats_gt)
            )
            terms["style"] = sum(
                F.l1_loss(gram(o), gram(g)) + F.l1_loss(gram(c), gram(g))
                for o, c, g in zip(feats_out, feats_comp, feats_gt)
            )
        total = sum(getattr(self.weights, name) * value for name, value in terms.items())
        return total, terms


def inpainting_loss(
    weights: Mapping[str, float] | None = None,
    vgg_path: str | Path | None = None,
    require_vgg: bool = False,
) -> InpaintingLoss:
    """The loss of ``task.loss``: ``weights`` by term name (Liu et al.'s defaults for the terms
    not given), VGG16 from ``vgg_path`` or torchvision's cache (see :func:`load_vgg16_features`).
    """
    vgg = load_vgg16_features(vgg_path, required=require_vgg)
    return InpaintingLoss(LossWeights(**(weights or {})), vgg=vgg)


def hinge_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """SN-PatchGAN's discriminator loss, averaged over every patch score."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def hinge_generator_loss(fake_scores: Tensor) -> Tensor:
    return -fake_scores.mean()
