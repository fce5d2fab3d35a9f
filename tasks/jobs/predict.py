"""``task=predict``: inpaint image files with a trained checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from datamodules.images import IMAGE_SUFFIXES, list_images, read_image
from masking.generators import load_mask_file

from ..modules.inference import OVERLAP, TILE, inpaint_8bit
from ..runtime.checkpoints import load_inpainting_network, trusted
from ..runtime.files import save_image, write_json

log = logging.getLogger(__name__)


def _masks_for(images: list[Path], input_root: Path | None, masks_path: Path) -> list[Path]:
    """The mask of each image: the one file ``masks_path``, or in a masks folder the file at the
    image's own relative path (any image suffix), else the one mask anywhere with the image's stem."""
    if masks_path.is_file():
        return [masks_path] * len(images)
    if not masks_path.is_dir():
        raise ValueError(f"masks {str(masks_path)!r} is neither a file nor a folder")
    masks = [p for p in masks_path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    by_place: dict[Path, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        by_place.setdefault(mask.relative_to(masks_path).with_suffix(""), []).append(mask)
        by_stem.setdefault(mask.stem, []).append(mask)
    chosen, missing = [], []
    for image in images:
        place = image.relative_to(input_root).with_suffix("") if input_root else Path(image.stem)
        candidates = by_place.get(place) or by_stem.get(image.stem, [])
        if not candidates:
            missing.append(image.name)
        elif len(candidates) > 1:
            names = ", ".join(str(c.relative_to(masks_path)) for c in sorted(candidates))
            raise ValueError(
                f"masks {str(masks_path)!r} holds {len(candidates)} masks for {image.name} "
                f"({names}); keep one, at the image's relative path"
            )
        else:
            chosen.append(candidates[0])
    if missing:
        raise ValueError(
            f"no mask in {str(masks_path)!r} for {len(missing)} image(s), e.g. {missing[0]} "
            "(a mask sits at its image's relative path, or anywhere with its file stem)"
        )
    return chosen


def _outputs(images: list[Path], input_root: Path | None, output_dir: Path) -> list[Path]:
    """One PNG per image at its relative path under ``output_dir``; images whose PNG names would
    coincide (``a.png``, ``a.jpg``) keep their suffix in the name (``a_png.png``, ``a_jpg.png``)."""
    relative = [
        image.relative_to(input_root) if input_root else Path(image.name) for image in images
    ]
    plain = [r.with_suffix(".png") for r in relative]
    counts: dict[Path, int] = {}
    for name in plain:
        counts[name] = counts.get(name, 0) + 1
    names = [
        r.with_name(f"{r.stem}_{r.suffix[1:].lower()}.png") if counts[n] > 1 else n
        for r, n in zip(relative, plain)
    ]
    if len(set(names)) < len(names):
        clash = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"input: two images would be written to {clash}; rename one of them")
    return [output_dir / name for name in names]


def _check_output(input_root: Path | None, outputs: list[Path], output_dir: Path, overwrite: bool):
    """Refuse to write into the input folder or over existing files unless ``overwrite``."""
    if overwrite:
        return
    if input_root is not None and output_dir.resolve().is_relative_to(input_root.resolve()):
        raise ValueError(
            f"output {str(output_dir)!r} lies inside input {str(input_root)!r}: choose a folder "
            "outside it (overwrite=true writes there anyway)"
        )
    existing = [path for path in outputs if path.exists()]
    if existing:
        raise FileExistsError(
            f"output {str(output_dir)!r} already holds {len(existing)} of the results, e.g. "
            f"{existing[0].name}: choose a new folder (overwrite=true replaces them)"
        )


def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    return run_predict(
        ckpt_path=cfg.ckpt_path,
        input_path=cfg.input,
        masks_path=cfg.masks,
        output_dir=cfg.output,
        holes_are_white=cfg.holes_are_white,
        device=cfg.task.device,
        run_dir=output_dir,
        builders=trusted(cfg.trusted_builders),
        overwrite=cfg.overwrite,
        tile=cfg.task.tile,
        overlap=cfg.task.overlap,
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
    builders: dict | None = None,
    overwrite: bool = False,
    tile: int = TILE,
    overlap: int = OVERLAP,
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
    input_root = input_path if input_path.is_dir() else None
    images = list_images(input_path, argument="input") if input_root else [input_path]
    if input_root is not None and masks_path.is_dir():  # a masks folder inside the input tree
        masks_root = masks_path.resolve()
        images = [image for image in images if not image.resolve().is_relative_to(masks_root)]
    masks = _masks_for(images, input_root, masks_path)
    outputs = _outputs(images, input_root, output_dir)
    _check_output(input_root, outputs, output_dir, overwrite)
    net = load_inpainting_network(ckpt_path, device, builders=builders)
    for image_path, mask_path, out_path in tqdm(
        list(zip(images, masks, outputs)), desc="inpainting", unit="image"
    ):
        image = read_image(image_path)
        holes = load_mask_file(mask_path, holes_are_white=holes_are_white)
        if holes.shape != image.shape[1:]:
            raise ValueError(
                f"mask {mask_path} is {holes.shape[1]}×{holes.shape[0]} px but image {image_path} is "
                f"{image.shape[2]}×{image.shape[1]} px"
            )
        if holes.all():
            log.warning(
                "mask %s has no valid pixel: all of %s is a hole and is made up whole "
                "(holes_are_white=%s; is the mask inverted?)",
                mask_path,
                image_path.name,
                holes_are_white,
            )
        filled = inpaint_8bit(net, image, holes, tile=tile, overlap=overlap)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        save_image(out_path, filled)
    metrics = {"predict/images": float(len(images))}
    write_json(run_dir / "metrics.json", metrics)
    log.info("inpainted %d image(s) into %s", len(images), output_dir)
    return metrics
