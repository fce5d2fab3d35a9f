"""The Lightning trainer of a job, with the logger of ``logger/`` and the callbacks of
``callbacks/``.

Under a sweep, a wandb run joins the sweep's group (the multirun folder's name), is named after
its job number and overrides, and carries the overrides and the resolved config as its config, so
that the runs of one sweep line up in wandb's table. Offline unless the user sets it up.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from .job import sweep_identity

log = logging.getLogger(__name__)

# callbacks that read the logger: left out, with a note, when the run has none
NEED_LOGGER = ("LearningRateMonitor", "DeviceStatsMonitor")


def build_logger(cfg: DictConfig) -> Any:
    """``cfg.logger`` instantiated (False for ``logger=none``); wandb runs of a sweep share a
    group and carry their overrides."""
    logger_cfg = cfg.logger
    if not logger_cfg.get("_target_"):
        return False
    if not str(logger_cfg._target_).endswith("WandbLogger"):
        return instantiate(logger_cfg)
    os.environ.setdefault("WANDB_MODE", "offline")
    arguments = OmegaConf.to_container(logger_cfg, resolve=True)
    target = arguments.pop("_target_")
    sweep = sweep_identity()
    if sweep is not None:
        if arguments.get("group") is None:
            arguments["group"] = sweep["group"]
        if arguments.get("name") is None:
            arguments["name"] = f"{sweep['job']}: " + " ".join(sweep["overrides"])
    # passed to wandb.init as it is (through instantiate, its nested _target_ nodes would be built)
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    config["overrides"] = sweep["overrides"] if sweep else []
    return get_class(target)(**arguments, config=config)


def build_callbacks(cfg: DictConfig, logger: Any) -> list[Any]:
    """The callbacks of ``cfg.callbacks`` (a mapping of name to config), those that need a logger
    left out when there is none."""
    callbacks = []
    for name, spec in (cfg.get("callbacks") or {}).items():
        if spec is None or not spec.get("_target_"):
            continue
        if logger is False and str(spec._target_).rsplit(".", 1)[-1] in NEED_LOGGER:
            log.info("callbacks.%s needs a logger; logger=none, so it is left out", name)
            continue
        callbacks.append(instantiate(spec))
    return callbacks


def job_trainer(
    cfg: DictConfig,
    root: Path,
    *,
    logger: Any = False,
    callbacks: Iterable[Any] = (),
    **limits: Any,
) -> Any:
    """``cfg.trainer`` writing under ``root``, checkpointing only with callbacks; ``limits``
    override trainer arguments (``max_epochs``, ``max_steps``, validation settings)."""
    callbacks = list(callbacks)
    return instantiate(
        cfg.trainer,
        **limits,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(root),
        enable_checkpointing=bool(callbacks),
    )


def logged_trainer(cfg: DictConfig, root: Path, *checkpoints: Any, **limits: Any) -> Any:
    """:func:`job_trainer` with the run's logger and callbacks after the job's ``checkpoints``
    callbacks."""
    os.environ.setdefault("WANDB_MODE", "offline")
    logger = build_logger(cfg)
    return job_trainer(
        cfg, root, logger=logger, callbacks=[*checkpoints, *build_callbacks(cfg, logger)], **limits
    )


def evaluation_trainer(cfg: DictConfig, root: Path) -> Any:
    """``cfg.trainer`` for a quiet ``validate``: no logger, callbacks, checkpoints or bars."""
    return job_trainer(
        cfg,
        root,
        enable_progress_bar=False,
        enable_model_summary=False,
        # no_grad, not inference_mode: the metric states reset here would become inference
        # tensors, which a later validation inside fit (fast_dev_run) cannot update
        inference_mode=False,
    )


def step_limits(steps: int) -> dict[str, Any]:
    """Trainer arguments for ``steps`` optimizer steps without validation (the pruning jobs
    measure quality apart: fixed evaluation masks, held-out perplexity)."""
    return {"max_steps": steps, "max_epochs": -1, "limit_val_batches": 0, "num_sanity_val_steps": 0}


def capped_steps(cfg: DictConfig, steps: int) -> int:
    """``steps``, at most ``trainer.max_steps`` when that is set (a debug run, a short sweep)."""
    cap = cfg.trainer.get("max_steps", -1)
    return steps if cap in (None, -1) else min(steps, int(cap))


def final_metrics(callback_metrics: dict) -> dict[str, float]:
    """The trainer's scalar metrics as a summary keeps them: per-step copies of epoch metrics
    dropped, ``_epoch`` suffixes removed, non-finite values dropped except PSNR (inf for a perfect
    image)."""
    metrics = {k: float(v) for k, v in callback_metrics.items() if v.numel() == 1}
    metrics = {k: v for k, v in metrics.items() if not k.endswith("_step")}
    metrics = {k.removesuffix("_epoch"): v for k, v in metrics.items()}
    return {k: v for k, v in metrics.items() if math.isfinite(v) or k.startswith("val/psnr")}
