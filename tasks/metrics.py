"""Inpainting metrics over the whole image, overall and per hole-ratio bin."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from masking.generators import HOLE_RATIO_BINS, bin_name

NAMES = ("hole_l1", "psnr", "ssim")


def hole_l1(output: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per image: mean absolute error over the hole pixels (all channels); 0 for an image without holes."""
    holes = (1 - mask).expand_as(output)
    return ((output - target).abs() * holes).sum((1, 2, 3)) / holes.sum((1, 2, 3)).clamp_min(1)


def per_image_scores(composite: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """``(B, 3)``: hole-L1, PSNR (dB) and SSIM of each composite against its target, images in [0, 1].

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
    return torch.stack([hole_l1(composite, target, mask.float()), psnr, ssim], 1)


class InpaintingMetrics(Metric):
    """Means of hole-L1, PSNR and SSIM, overall and per hole-ratio bin (the PConv protocol's six).

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
