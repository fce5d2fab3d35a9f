"""``run(cfg)``: the importable entry that ``run.py`` wraps and tests call with a composed config.

Config objects stop here: each task function receives plain values.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .distributed import is_main_process

log = logging.getLogger(__name__)

TASKS = ("demo", "inpaint", "predict", "prune", "prune_inpaint")
# the tasks that train through cfg.trainer, and so may run on several processes
TRAINING_TASKS = ("inpaint", "prune", "prune_inpaint")


def run(cfg: DictConfig) -> float:
    """Run the task that ``cfg.task.name`` names; return ``cfg.optimized_metric``'s final value."""
    name = cfg.task.name
    if name not in TASKS:
        raise ValueError(f"task.name must be one of {list(TASKS)}, got {name!r}")
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    log.info("task %s, output in %s\n%s", name, output_dir, OmegaConf.to_yaml(cfg.task))
    try:
        if name in TRAINING_TASKS:
            from .distributed import local_ranks

            with local_ranks(cfg, output_dir):
                metrics = _run_task(cfg, name, output_dir)
        else:
            metrics = _run_task(cfg, name, output_dir)
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
    process would log into it instead of starting its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def _stopped(name: str, output_dir: Path, stop: SystemExit) -> str:
    how = "by SIGTERM" if stop.code in (None, 0) else f"(exit status {stop.code})"
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return f"task {name} was stopped {how}; resume it with ckpt_path={last}"
    return f"task {name} was stopped {how} before its first checkpoint; run it again"


def _run_task(cfg: DictConfig, name: str, output_dir: Path) -> dict[str, float]:
    if name == "inpaint":
        from .train_inpaint import run_inpaint

        metrics = run_inpaint(cfg, output_dir)
    elif name == "prune":
        from .train_prune import run_prune

        metrics = run_prune(cfg, output_dir)
    elif name == "prune_inpaint":
        from .train_prune_inpaint import run_prune_inpaint

        metrics = run_prune_inpaint(cfg, output_dir)
    elif name == "predict":
        from .predict import run_predict

        metrics = run_predict(
            ckpt_path=cfg.ckpt_path,
            input_path=cfg.input,
            masks_path=cfg.masks,
            output_dir=cfg.output,
            holes_are_white=cfg.holes_are_white,
            device=cfg.task.device,
            run_dir=output_dir,
        )
    else:
        from .demo import run_demo

        metrics = run_demo(
            image=cfg.task.image,
            size=cfg.task.size,
            holes=cfg.task.holes,
            kernel_size=cfg.task.kernel_size,
            max_steps=cfg.task.max_steps,
            seed=cfg.seed,
            output_dir=output_dir,
        )
    return metrics
