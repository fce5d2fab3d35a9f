"""Files a run writes: always through a temporary file and a rename, so an interrupted run never
leaves a truncated file under the final name."""

from __future__ import annotations

import io
import json
from pathlib import Path

from torch import Tensor

from masking.io import write_atomic

__all__ = ["save_image", "write_atomic", "write_json"]


def write_json(path: str | Path, payload: dict) -> Path:
    return write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_image(path: str | Path, image: Tensor) -> Path:
    """Save a float ``(3, H, W)`` image in [0, 1] as PNG."""
    from PIL import Image

    array = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())
