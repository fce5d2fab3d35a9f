"""The dense models the pruning jobs train when no pretrained weights are given, cached so that
the next run (another method, another sparsity) starts from the same network."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..runtime.files import save_torch
from ..runtime.job import launch_path
from ..runtime.processes import is_main_process

# trainer settings that change what a dense training produces (a short debug or sweep budget must
# not leave its model in the cache under the full recipe's name)
TRAINING_KEYS = (
    "max_steps",
    "limit_train_batches",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "precision",
    "devices",
    "num_nodes",
    "strategy",
)


def dense_cache_path(cfg: DictConfig, recipe: dict[str, Any]) -> Path:
    """Where the dense model trained for this net, data, seed, trainer limits and training
    ``recipe`` is cached (``task.cache_dir``; a relative one is taken from the launch folder)."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    recipe = {
        "net": OmegaConf.to_container(cfg.net, resolve=True),
        "data": {
            k: v
            for k, v in OmegaConf.to_container(cfg.data, resolve=True).items()
            if k not in ("num_workers", "pin_memory", "cache_dir")  # how, or where, not what
        },
        "seed": cfg.seed,
        "trainer": {k: trainer[k] for k in TRAINING_KEYS if trainer.get(k) is not None},
        **recipe,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    arch = str(recipe["net"].get("_target_", "net")).rsplit(".", 1)[-1]
    return launch_path(cfg.task.cache_dir) / f"dense-{arch}-{digest}.pt"


def cache_dense(cfg: DictConfig, path: Path, payload: object, description: str) -> str:
    """Write a freshly trained dense model to the cache (rank 0 only; never for a fast_dev_run,
    whose one batch is not a trained model); returns where its weights came from, for the
    report."""
    if cfg.trainer.get("fast_dev_run"):
        return "trained here for a fast_dev_run (not cached)"
    if is_main_process():
        save_torch(path, payload)
    return f"trained here ({description}), cached at {path}"
