"""``task=inpaint``: train an inpainting network; checkpoints, sample grids and metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from ..runtime.files import write_json
from ..runtime.processes import data_parallel, is_main_process
from ..runtime.trainer import final_metrics, logged_trainer

log = logging.getLogger(__name__)


@data_parallel
def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.net)
    module = instantiate(cfg.task.module, net=net)
    # saved in the checkpoints, so task=predict rebuilds the network without pickles (set here:
    # given to instantiate, a spec with a _target_ would be built into a network)
    module.net_spec = OmegaConf.to_container(cfg.net, resolve=True)
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best-{epoch:03d}",
        monitor="val/hole_l1",
        mode="min",
    )
    trainer = logged_trainer(cfg, output_dir, checkpoints, last_checkpoint(output_dir))
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = final_metrics(trainer.callback_metrics)
    if module.validated_step != trainer.global_step and trainer.limit_val_batches != 0:
        # a run cut short by max_steps (a sweep's short budget) between validation epochs still
        # reports its final quality
        log.info("validating the final model (step %d)", trainer.global_step)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        metrics.update(final_metrics(trainer.callback_metrics))
    metrics["train/steps"] = float(trainer.global_step)
    if is_main_process():
        write_json(output_dir / "metrics.json", metrics)
    log.info(
        "best checkpoint %s; metrics in %s",
        checkpoints.best_model_path,
        output_dir / "metrics.json",
    )
    return metrics


def last_checkpoint(output_dir: Path) -> ModelCheckpoint:
    """``checkpoints/last.ckpt``: the state at the end of every training epoch, for resuming and
    for the final model. (Lightning's ``save_last=True`` beside a monitored metric writes it only
    when the best checkpoint improves, so last.ckpt would hold the best validation epoch rather
    than the last one, and a resumed run would go back to it.)"""
    return ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="last",  # one file, rewritten: no monitor, so the latest state is the one kept
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
