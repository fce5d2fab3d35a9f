"""Files a run writes: always through a temporary file and a rename, so an interrupted run never
leaves a truncated file under the final name."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from PIL import Image
from torch import Tensor

from masking.io import write_atomic

__all__ = [
    "AtomicCheckpointIO",
    "encode_png",
    "load_tensors",
    "save_image",
    "save_torch",
    "write_atomic",
    "write_json",
]


def save_torch(path: str | Path, payload: object) -> Path:
    """``torch.save`` through a temporary file and a rename."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomic(path, buffer.getvalue())


def write_json(path: str | Path, payload: dict) -> Path:
    return write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def encode_png(image: Tensor) -> bytes:
    """A float ``(3, H, W)`` image in [0, 1] as the bytes of an 8-bit PNG."""
    array = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(path: str | Path, image: Tensor) -> Path:
    """Save a float ``(3, H, W)`` image in [0, 1] as PNG."""
    return write_atomic(path, encode_png(image))


def load_tensors(path: Path, missing: str, unreadable: str, map_location: Any = "cpu") -> Any:
    """``torch.load`` of tensors and plain values only (a pickled call in a crafted file is refused,
    not run). A missing file raises ``FileNotFoundError(missing)``; an unreadable one the one line
    ``unreadable`` with the error's type in it (torch's own message runs over many lines of
    ``weights_only`` advice)."""
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(unreadable.format(error=type(error).__name__)) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written like every other file of a run, and read as data.

    Saving: serialized in memory, then a same-folder temporary file, fsync and rename. Lightning's
    own save goes through an fsspec transaction whose temporary file lives in the system temp
    folder, so committing it to another file system is a copy that a kill can cut short under the
    final name.

    Loading (resume with ``ckpt_path=``): tensors and plain values only (``weights_only=True``),
    and a file that is missing, truncated or not a checkpoint is one line naming ``ckpt_path``.
    """

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        path = Path(path)
        name, hint = (
            f"ckpt_path {str(path)!r}",
            "resume from a checkpoints/*.ckpt this project wrote",
        )
        unreadable = f"{name} is not a readable checkpoint of tensors ({{error}}); {hint}"
        checkpoint = load_tensors(path, f"{name} is not a file", unreadable, map_location or "cpu")
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise ValueError(f"{name} is not a Lightning checkpoint (no state_dict); {hint}")
        return checkpoint

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(
                "AtomicCheckpointIO: storage_options are not supported, got "
                f"{sorted(storage_options)}"
            )
        save_torch(path, checkpoint)
