"""``task=predict``: inpaint image files with a trained checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from datamodules.images import IMAGE_SUFFIXES, list_images, read_image
from masking.generators import load_mask_file

from .io import save_image, write_json

log = logging.getLogger(__name__)


def read_inpainting_checkpoint(
    ckpt_path: str | Path, argument: str = "ckpt_path"
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The network spec (``_target_`` and arguments) and weights of an inpainting checkpoint;
    errors name ``argument``."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument} {str(path)!r} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{argument} {str(path)!r} is not a readable checkpoint ({type(err).__name__})"
        ) from None
    spec = checkpoint.get("net_spec") if isinstance(checkpoint, dict) else None
    if spec is None:
        raise ValueError(
            f"{argument} {str(path)!r} is not an inpainting checkpoint of this project (no net_spec); "
            "use a checkpoint written by task=inpaint"
        )
    weights = checkpoint.get("state_dict")
    if not isinstance(spec, dict) or "_target_" not in spec or not isinstance(weights, dict):
        raise ValueError(
            f"{argument} {str(path)!r} is a damaged inpainting checkpoint (it needs a net_spec "
            "dict with a _target_ and a state_dict); use a checkpoint written by task=inpaint"
        )
    state = {k.removeprefix("net."): v for k, v in weights.items() if k.startswith("net.")}
    return spec, state


def build_network(
    spec: dict, state: dict[str, torch.Tensor], *, origin: str = "checkpoint"
) -> nn.Module:
    """``spec``'s network with ``state`` loaded (every key must fit); errors name ``origin``."""
    from hydra.utils import instantiate

    from .train_prune import load_state_dict_checked

    target = spec.get("_target_")
    try:
        net = instantiate(spec)
    except Exception as err:
        # Hydra's messages run over several lines; the first says what failed
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{origin}: its net_spec ({target}) cannot be built ({type(err).__name__}: {reason})"
        ) from None
    problems = load_state_dict_checked(net, state)
    if problems:
        raise ValueError(
            f"{origin}: weights do not fit {target} ({len(problems)} key problems, e.g. "
            f"{problems[0]})"
        )
    return net


def load_network(ckpt_path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The network of an inpainting checkpoint, rebuilt from its saved spec, in eval mode."""
    spec, state = read_inpainting_checkpoint(ckpt_path)
    net = build_network(spec, state, origin=f"ckpt_path {str(ckpt_path)!r}")
    return net.to(device).eval()


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
    net = load_network(ckpt_path, device)
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
