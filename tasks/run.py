"""``run(cfg)``: the importable entry that ``run.py`` wraps and tests call with a composed config.

It runs the job that ``cfg.task.job`` names (a function ``(cfg, output_dir) -> metrics``, found
with ``hydra.utils.get_method``), records it in ``job.json``, and returns the value of
``cfg.optimized_metric`` that a sweeper optimises.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from .runtime.job import setting_error
from .runtime.processes import is_main_process
from .sweep.records import recording

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    """Run the job of ``cfg.task``; return ``cfg.optimized_metric``'s final value."""
    with recording(cfg) as record:
        value = _run(cfg)
        record.completed(value)
    return value


def _run(cfg: DictConfig) -> float:
    name = cfg.task.name
    job = get_method(cfg.task.job)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    log.info("task %s, output in %s\n%s", name, output_dir, OmegaConf.to_yaml(cfg.task))
    try:
        try:
            metrics = job(cfg, output_dir)
        except InstantiationException as error:
            raise setting_error(error) from error
    except SystemExit as stop:
        # Lightning turns SIGTERM into SystemExit(None), exit status 0, and Ctrl-C into
        # SystemExit(1): a stopped run must not look finished, and it should say how to go on
        _finish_wandb(failed=True)
        raise SystemExit(_stopped(name, output_dir, stop)) from None
    except BaseException:
        _finish_wandb(failed=True)
        raise
    _finish_wandb(failed=False)
    if not is_main_process():
        return float("nan")  # rank 0 reports the run
    if cfg.optimized_metric not in metrics:
        raise ValueError(
            f"optimized_metric must be one of {sorted(metrics)}, got {cfg.optimized_metric!r}"
        )
    return metrics[cfg.optimized_metric]


def _finish_wandb(failed: bool) -> None:
    """End the job's wandb run. Lightning leaves it open, and the next job of a sweep in the same
    process would log into it instead of starting its own. (Looked up, not imported: a job that
    never logged to wandb should not pay for importing it.)"""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _stopped(name: str, output_dir: Path, stop: SystemExit) -> str:
    how = "by SIGTERM" if stop.code in (None, 0) else f"(exit status {stop.code})"
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return f"task {name} was stopped {how}; resume it with ckpt_path={last}"
    return f"task {name} was stopped {how} before its first checkpoint; run it again"
