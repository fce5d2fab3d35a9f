"""``task=predict``: inpaint image files with a trained checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from datamodules.images import IMAGE_SUFFIXES, list_images, read_image
from masking.generators import load_mask_file

from ..modules.inference import inpaint
from ..runtime.checkpoints import load_inpainting_network
from ..runtime.files import save_image, write_json

log = logging.getLogger(__name__)


def _pairs(input_path: Path, masks_path: Path) -> list[tuple[Path, Path]]:
    images = [input_path] if input_path.is_file() else list_images(input_path, argument="input")
    if masks_path.is_file():
        return [(image, masks_path) for image in images]
    if not masks_path.is_dir():
        raise ValueError(f"masks {str(masks_path)!r} is neither a file nor a folder")
    by_stem = {p.stem: p for p in masks_path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [image.name for image in images if image.stem not in by_stem]
    if missing:
        raise ValueError(
            f"no mask in {str(masks_path)!r} for {len(missing)} image(s), e.g. {missing[0]} "
            "(masks are matched to images by file stem)"
        )
    return [(image, by_stem[image.stem]) for image in images]


def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    return run_predict(
        ckpt_path=cfg.ckpt_path,
        input_path=cfg.input,
        masks_path=cfg.masks,
        output_dir=cfg.output,
        holes_are_white=cfg.holes_are_white,
        device=cfg.task.device,
        run_dir=output_dir,
    )


def run_predict(
    *,
    ckpt_path,
    input_path,
    masks_path,
    output_dir,
    holes_are_white: bool,
    device: str,
    run_dir: Path,
) -> dict[str, float]:
    if ckpt_path is None:
        raise ValueError(
            "ckpt_path is required for task=predict (a checkpoint written by task=inpaint)"
        )
    input_path, masks_path, output_dir = Path(input_path), Path(masks_path), Path(output_dir)
    if not input_path.exists():
        raise ValueError(f"input {str(input_path)!r} does not exist")
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output {str(output_dir)!r} is a file, expected a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(
            f"output folder {str(output_dir)!r} cannot be created ({err.strerror or err})"
        ) from None
    if not os.access(output_dir, os.W_OK):
        raise PermissionError(f"output folder {str(output_dir)!r} is not writable")
    pairs = _pairs(input_path, masks_path)
    net = load_inpainting_network(ckpt_path, device)
    for image_path, mask_path in tqdm(pairs, desc="inpainting", unit="image"):
        image = read_image(image_path)
        holes = load_mask_file(mask_path, holes_are_white=holes_are_white)
        if holes.shape != image.shape[1:]:
            raise ValueError(
                f"mask {mask_path} is {holes.shape[1]}×{holes.shape[0]} px but image {image_path} is "
                f"{image.shape[2]}×{image.shape[1]} px"
            )
        result = inpaint(net, image, (~holes).float())
        # known pixels are copied in 8-bit, so they are bit-identical to the input's
        original = (image * 255).round()
        filled = torch.where(holes[None], (result * 255).round(), original)
        save_image(output_dir / f"{image_path.stem}.png", filled / 255)
    metrics = {"predict/images": float(len(pairs))}
    write_json(run_dir / "metrics.json", metrics)
    log.info("inpainted %d image(s) into %s", len(pairs), output_dir)
    return metrics
