"""The core ops on a bundled photo: inpainting by iterated partial convolution.

A partial convolution with a normalised box kernel is normalised convolution (Knutsson & Westin,
1993): each step fills the ring of hole pixels next to valid ones with the average of their valid
neighbours, and the updated mask marks them valid. Repeating until the mask is full inpaints the image
with no learning: a baseline the trained inpainting models must beat, and an end-to-end check of
``PartialConv2d``, its mask update and ``mask_product``: ``python run.py task=demo``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm.auto import tqdm

from datamodules import load_bundled_photo
from masking import PartialConv2d, mask_product
from masking.checks import check_int

from ..runtime.files import save_image, write_json

log = logging.getLogger(__name__)


def box_holes(size: int, holes: int, generator: torch.Generator) -> Tensor:
    """``(1, 1, size, size)`` mask (1 = valid) with ``holes`` random rectangles of 8-20 % side."""
    mask = torch.ones(1, 1, size, size)
    low, high = max(1, size // 12), max(2, size // 5)
    for _ in range(holes):
        h, w = torch.randint(low, high + 1, (2,), generator=generator).tolist()
        top = int(torch.randint(0, size - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, size - w + 1, (1,), generator=generator))
        mask[..., top : top + h, left : left + w] = 0
    return mask


def psnr(a: Tensor, b: Tensor, where: Tensor | None = None) -> float:
    """PSNR in dB for images in [0, 1], optionally over the pixels where ``where`` is 1."""
    err = (a - b).square()
    if where is not None:
        weight = where.expand_as(err)
        mse = (err * weight).sum() / weight.sum().clamp_min(1)
    else:
        mse = err.mean()
    return float("inf") if mse == 0 else -10 * math.log10(float(mse))


@torch.no_grad()
def fill_by_partial_convolution(
    image: Tensor, mask: Tensor, kernel_size: int, max_steps: int
) -> tuple[Tensor, int]:
    """Fill the holes of ``image`` (1, 3, H, W) ring by ring; returns the composite and the steps."""
    conv = PartialConv2d(3, 3, kernel_size, padding="same", groups=3, bias=False)
    conv.weight.fill_(1.0 / kernel_size**2)
    known = mask
    filled = mask_product(image, mask)
    steps = 0
    with tqdm(total=int((mask == 0).sum()), desc="filling holes", unit="px", leave=False) as bar:
        while not bool(mask.all()) and steps < max_steps:
            out, new_mask = conv(filled, mask)
            # keep what is known, take the averages only where they are new
            filled = mask_product(filled, mask) + mask_product(out, new_mask - mask)
            bar.update(int((new_mask - mask).sum()))
            mask, steps = new_mask, steps + 1
    return mask_product(image, known) + mask_product(filled, 1 - known), steps


def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    task = cfg.task
    return run_demo(
        image=task.image,
        size=task.size,
        holes=task.holes,
        kernel_size=task.kernel_size,
        max_steps=task.max_steps,
        seed=cfg.seed,
        output_dir=output_dir,
    )


def run_demo(
    *,
    image: str,
    size: int,
    holes: int,
    kernel_size: int,
    max_steps: int,
    seed: int,
    output_dir: Path,
) -> dict[str, float]:
    """Mask a bundled photo, fill it, write ``metrics.json`` and ``inpainting.png``; return metrics."""
    for name, value, minimum in (
        ("size", size, 16),
        ("holes", holes, 1),
        ("kernel_size", kernel_size, 3),
        ("max_steps", max_steps, 1),
    ):
        check_int(f"task.{name}", value, minimum)
    if kernel_size % 2 == 0:
        raise ValueError(f"task.kernel_size must be odd, got {kernel_size}")
    generator = torch.Generator().manual_seed(seed)
    photo = load_bundled_photo(image, size=size)[None]
    mask = box_holes(size, holes, generator)
    filled, steps = fill_by_partial_convolution(photo, mask, kernel_size, max_steps)
    holes_only = 1 - mask
    valid_mean = (photo * mask).sum((2, 3), keepdim=True) / mask.sum()
    mean_fill = photo * mask + valid_mean * holes_only
    metrics = {
        "demo/hole_ratio": float(holes_only.mean()),
        "demo/steps": float(steps),
        "demo/psnr": psnr(filled, photo),
        "demo/psnr_hole": psnr(filled, photo, holes_only),
        "demo/psnr_hole_mean_fill": psnr(mean_fill, photo, holes_only),
    }
    grey = torch.full_like(photo, 0.5)
    masked = photo * mask + grey * holes_only
    picture = torch.cat([photo, masked, mean_fill, filled], dim=3)[0]
    save_image(output_dir / "inpainting.png", picture)
    write_json(output_dir / "metrics.json", metrics)
    log.info(
        "%s: %.1f %% holes filled in %d steps, hole PSNR %.2f dB (mean-colour fill %.2f dB); "
        "wrote %s",
        image,
        100 * metrics["demo/hole_ratio"],
        steps,
        metrics["demo/psnr_hole"],
        metrics["demo/psnr_hole_mean_fill"],
        output_dir / "inpainting.png",
    )
    return metrics
