"""Inpainting metrics over the whole image, overall and per hole-ratio bin."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from kornia.color import rgb_to_lab
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from masking.generators import HOLE_RATIO_BINS, bin_name

from ..runtime.checkpoints import hub_file

NAMES = ("hole_l1", "psnr", "ssim", "colour_error")
# the blur before the colour error: colour is compared at this scale, texture left to the others
COLOUR_SIGMA = 4.0
log = logging.getLogger(__name__)


def hole_l1(output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per image: mean absolute error over the hole pixels (all channels); 0 for an image without holes."""
    holes = (1 - mask).expand_as(output)
    return ((output - target).abs() * holes).sum((1, 2, 3)) / holes.sum((1, 2, 3)).clamp_min(1)


def colour_error(
    output: Tensor, target: Tensor, mask: Tensor, sigma: float = COLOUR_SIGMA
) -> Tensor:
    """Per image: the colour cast of the fill, as the mean over the hole pixels of the CIELAB
    chroma distance ``sqrt(Δa*² + Δb*²)`` between output and target after a Gaussian blur of
    ``sigma`` pixels (both in [0, 1] RGB); 0 for an image without holes.

    The blur takes the texture out, so the number is about colour: a fill of the right colours
    but the wrong detail scores near 0, a desaturated or tinted one as far as its colours are off
    (one unit is about one just-noticeable difference). It compares the fill with the true pixels,
    not with the known ring around the hole, so a hole over an object of its own colour is not
    counted against the method that gets it right.
    """
    size = 2 * math.ceil(3 * sigma) + 1
    blur = (size, size), (sigma, sigma)
    with torch.autocast(output.device.type, enabled=False):
        a = rgb_to_lab(gaussian_blur2d(output.float(), *blur, border_type="reflect"))[:, 1:]
        b = rgb_to_lab(gaussian_blur2d(target.float(), *blur, border_type="reflect"))[:, 1:]
    distance = (a - b).square().sum(1, keepdim=True).sqrt()
    holes = 1 - mask.float()
    return (distance * holes).sum((1, 2, 3)) / holes.sum((1, 2, 3)).clamp_min(1)


def per_image_scores(composite: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """``(B, 4)``: hole-L1, PSNR (dB), SSIM and the colour error (:func:`colour_error`) of each
    composite against its target, images in [0, 1].

    SSIM is computed in fp32 with autocast off: validation runs under a mixed-precision trainer's
    autocast, whose half-precision convolutions put SSIM's variances (E[x²] − E[x]²) out by more
    than themselves, giving SSIMs outside [-1, 1] for smooth images.
    """
    composite = composite.float().clamp(0, 1)
    target = target.float()
    psnr = peak_signal_noise_ratio(
        composite, target, data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    with torch.autocast(composite.device.type, enabled=False):
        ssim = structural_similarity_index_measure(
            composite, target, data_range=1.0, reduction="none"
        )
    mask = mask.float()
    colour = colour_error(composite, target, mask)
    return torch.stack([hole_l1(composite, target, mask), psnr, ssim, colour], 1)


class InpaintingMetrics(Metric):
    """Means of hole-L1, PSNR, SSIM and the colour error, overall and per hole-ratio bin (the PConv
    protocol's six).

    ``update`` takes the composite, the target, the mask (1 = valid) and, optionally, each image's bin
    index; without it the bin is found from the mask's hole ratio. ``compute`` returns flat keys:
    ``psnr``, ``psnr/hole_10_20``, ... (the task prefixes ``val/``). States are sums, so DDP ranks
    reduce exactly.
    """

    full_state_update = False

    def __init__(self, bins: Sequence[tuple[float, float]] = HOLE_RATIO_BINS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bins = tuple(bins)
        self.add_state(
            "sums",
            torch.zeros(len(self.bins) + 1, len(NAMES), dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state(
            "counts", torch.zeros(len(self.bins) + 1, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def bin_of(self, mask: Tensor) -> Tensor:
        """Bin index per image from its hole ratio; ``len(bins)`` for ratios outside every bin."""
        ratio = 1 - mask.float().mean((1, 2, 3))
        index = torch.full_like(ratio, len(self.bins), dtype=torch.long)
        for i, (lo, hi) in reversed(list(enumerate(self.bins))):
            index[(ratio >= lo) & (ratio < hi)] = i
        return index

    def update(
        self, composite: Tensor, target: Tensor, mask: Tensor, bins: Tensor | None = None
    ) -> None:
        scores = per_image_scores(composite, target, mask).double()
        index = self.bin_of(mask) if bins is None else bins.to(self.counts.device)
        self.sums.index_add_(0, index, scores)
        self.counts.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))

    def compute(self) -> dict[str, Tensor]:
        total = self.counts.sum().clamp_min(1)
        out = {name: self.sums[:, j].sum() / total for j, name in enumerate(NAMES)}
        for i, (lo, hi) in enumerate(self.bins):
            if self.counts[i] > 0:
                for j, name in enumerate(NAMES):
                    out[f"{name}/{bin_name(lo, hi)}"] = self.sums[i, j] / self.counts[i]
        return {k: v.float() for k, v in out.items()}


# ------------------------------------------------------------------------- LPIPS and FID, if local

# LPIPS backbone name (torchmetrics) -> (torchvision builder, its weights enum)
LPIPS_NETS = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}


def lpips_weights_file(net: str) -> Path:
    _, enum = LPIPS_NETS[net]
    return hub_file(getattr(torchvision.models, enum).DEFAULT.url)


def fid_weights_file() -> Path | None:
    """The Inception weights torch-fidelity loads, or ``None`` when torch-fidelity is missing."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    except ImportError:
        return None
    return hub_file(URL_INCEPTION_V3)


def _wanted(name: str, setting: bool | str, weights: Path | None, hint: str) -> bool:
    """``setting`` is True, False or "auto"; True without weights is an error, "auto" logs once."""
    if setting not in (True, False, "auto"):
        raise ValueError(f"metrics.{name} must be true, false or auto, got {setting!r}")
    if setting is False:
        return False
    if weights is not None and weights.is_file():
        return True
    where = hint if weights is None else f"no weights at {weights}"
    if setting is True:
        raise FileNotFoundError(f"metrics.{name}=true but {where}; nothing is downloaded")
    log.info("%s is not computed: %s (nothing is downloaded)", name.upper(), where)
    return False


class PerceptualMetrics(nn.Module):
    """LPIPS (mean over images) and FID of the composites against their targets, each only when its
    network's weights are on disk (torchvision's cache or torch.hub's); nothing is downloaded.

    ``compute`` gives ``{"lpips": ..., "fid": ...}`` for those enabled. FID over a few dozen
    validation crops is a high-variance estimate; compare it only between runs on the same images.
    """

    def __init__(
        self, *, lpips: bool | str = "auto", lpips_net: str = "alex", fid: bool | str = "auto"
    ) -> None:
        super().__init__()
        if lpips_net not in LPIPS_NETS:
            raise ValueError(
                f"metrics.lpips_net must be one of {sorted(LPIPS_NETS)}, got {lpips_net!r}"
            )
        self.lpips = self.fid = None
        if _wanted("lpips", lpips, lpips_weights_file(lpips_net), ""):
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.lpips = LearnedPerceptualImagePatchSimilarity(net_type=lpips_net, normalize=True)
        if _wanted("fid", fid, fid_weights_file(), "torch-fidelity is not installed"):
            from torchmetrics.image.fid import FrechetInceptionDistance

            self.fid = FrechetInceptionDistance(feature=2048, normalize=True)

    @property
    def enabled(self) -> bool:
        return self.lpips is not None or self.fid is not None

    def update(self, composite: Tensor, target: Tensor) -> None:
        composite = composite.float().clamp(0, 1)
        target = target.float()
        with torch.autocast(composite.device.type, enabled=False):
            if self.lpips is not None:
                self.lpips.update(composite, target)
            if self.fid is not None:
                self.fid.update(target, real=True)
                self.fid.update(composite, real=False)

    def compute(self) -> dict[str, Tensor]:
        out = {}
        if self.lpips is not None:
            out["lpips"] = self.lpips.compute()
        if self.fid is not None:
            out["fid"] = self.fid.compute()
        return out

    def reset(self) -> None:
        for metric in (self.lpips, self.fid):
            if metric is not None:
                metric.reset()
