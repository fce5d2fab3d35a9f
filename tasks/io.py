"""Files a run writes: always through a temporary file and a rename, so an interrupted run never
leaves a truncated file under the final name."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from torch import Tensor


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (same-directory temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload: dict) -> Path:
    return write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_image(path: str | Path, image: Tensor) -> Path:
    """Save a float ``(3, H, W)`` image in [0, 1] as PNG."""
    from PIL import Image

    array = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())
