"""``task=inpaint``: build the objects from the config, train, write metrics.json."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .inpaint import InpaintingTask

log = logging.getLogger(__name__)


def build_inpainting_task(cfg: DictConfig, net, output_dir: Path, **extra) -> InpaintingTask:
    """The :class:`InpaintingTask` of ``cfg.task`` for ``net`` (``extra``: pruner, mask_lr)."""
    from hydra.utils import instantiate

    from masking.generators import evaluation_masks

    from .losses import InpaintingLoss, LossWeights, load_vgg16_features
    from .metrics import PerceptualMetrics

    task_cfg = cfg.task
    eval_masks = evaluation_masks(
        cfg.data.crop_size,
        task_cfg.eval_masks_per_bin,
        seed=cfg.seed,
        cache_dir=output_dir / "eval_masks",
    )
    vgg = load_vgg16_features(task_cfg.loss.vgg_path, required=task_cfg.loss.require_vgg)
    loss = InpaintingLoss(LossWeights(**task_cfg.loss.weights), vgg=vgg)
    gan = task_cfg.get("gan")
    return InpaintingTask(
        net=net,
        loss=loss,
        optimizer=instantiate(task_cfg.optimizer),
        mask_generator=instantiate(cfg.mask),
        eval_masks=eval_masks,
        mask_seed=task_cfg.mask_seed,
        ramp_steps=task_cfg.ramp_steps,
        scheduler=instantiate(task_cfg.scheduler) if task_cfg.get("scheduler") else None,
        discriminator=instantiate(gan.discriminator) if gan else None,
        d_optimizer=instantiate(gan.optimizer) if gan else None,
        gan_weight=gan.weight if gan else 0.0,
        sample_dir=output_dir / "samples",
        samples=task_cfg.samples,
        net_spec=OmegaConf.to_container(cfg.net, resolve=True),
        lr_schedule=task_cfg.lr_schedule,
        perceptual=PerceptualMetrics(**task_cfg.get("metrics", {})),
        **extra,
    )


def _scalars(values: dict) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v.numel() == 1}


def run_inpaint(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from .distributed import is_main_process
    from .io import write_json
    from .tracking import build_callbacks, build_logger

    os.environ.setdefault("WANDB_MODE", "offline")
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task = build_inpainting_task(cfg, instantiate(cfg.net), output_dir)
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best-{epoch:03d}",
        monitor="val/hole_l1",
        mode="min",
        save_last=True,
    )
    logger = build_logger(cfg)
    trainer = instantiate(
        cfg.trainer,
        callbacks=[checkpoints, *build_callbacks(cfg, logger)],
        logger=logger,
        default_root_dir=str(output_dir),
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = _scalars(trainer.callback_metrics)
    if task.validated_step != trainer.global_step and trainer.limit_val_batches != 0:
        # a run cut short by max_steps (a sweep's short budget) between validation epochs still
        # reports its final quality
        log.info("validating the final model (step %d)", trainer.global_step)
        trainer.validate(task, datamodule=datamodule, verbose=False)
        metrics.update(_scalars(trainer.callback_metrics))
    # per-step copies of epoch metrics are noise in a summary
    metrics = {k: v for k, v in metrics.items() if not k.endswith("_step")}
    metrics = {k.removesuffix("_epoch"): v for k, v in metrics.items()}
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v) or k.startswith("val/psnr")}
    metrics["train/steps"] = float(trainer.global_step)
    if is_main_process():
        write_json(output_dir / "metrics.json", metrics)
    log.info(
        "best checkpoint %s; metrics in %s",
        checkpoints.best_model_path,
        output_dir / "metrics.json",
    )
    return metrics
