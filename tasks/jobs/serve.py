"""``task=serve``: the inpainting page on a local web server (Starlette, run by uvicorn)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import uvicorn
from omegaconf import DictConfig

from ..runtime.checkpoints import load_inpainting_network, trusted
from ..serve import make_app

log = logging.getLogger(__name__)


def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    if cfg.ckpt_path is None:
        raise ValueError(
            "ckpt_path is required for task=serve (a checkpoint written by task=inpaint)"
        )
    task = cfg.task
    _check_address(task.host, task.port)
    net = load_inpainting_network(
        cfg.ckpt_path, task.device, builders=trusted(cfg.trusted_builders)
    )
    app = make_app(
        net,
        max_upload_mb=task.max_upload_mb,
        max_megapixels=task.max_megapixels,
        tile=task.tile,
        overlap=task.overlap,
    )
    log.info("inpainting page at http://%s:%d/ (Ctrl-C stops it)", task.host, task.port)
    uvicorn.run(app, host=task.host, port=task.port, log_level="warning")
    return {"serve/stopped": 1.0}


def _check_address(host: str, port: int) -> None:
    """Fail before loading anything when the address cannot be served (uvicorn would log the error
    and exit as if stopped)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"task.port must be an int in [0, 65535], got {port!r}")
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise OSError(
            f"task.host/task.port {host}:{port} cannot be served ({err.strerror or err}); "
            "choose another, e.g. task.port=8001"
        ) from None
