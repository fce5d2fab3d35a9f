"""``task=prune_inpaint``: prune an inpainting network (a ``task=inpaint`` checkpoint, or a dense one
trained here and cached) and report PSNR and hole L1 on the fixed evaluation masks before and after,
beside parameters, MACs and measured latency."""

from __future__ import annotations

import copy
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from .distributed import is_main_process, other_ranks_stop_here

log = logging.getLogger(__name__)


def _step_limits(steps: int) -> dict[str, Any]:
    """Trainer arguments for ``steps`` optimizer steps without validation (quality is measured
    apart, by :func:`quality`)."""
    return {"max_steps": steps, "max_epochs": -1, "limit_val_batches": 0, "num_sanity_val_steps": 0}


def check_channel_pruning(spec: dict, granularity: str) -> None:
    """Per-channel decoder masks tie every channel to its mask path: name the setting that frees it."""
    if (
        str(granularity) == "channel"
        and str(spec.get("_target_", "")).endswith("PConvUNet")
        and spec.get("layer", "partial") == "partial"
        and spec.get("multi_channel_decoder", True)
    ):
        raise ValueError(
            "pruning.granularity=channel: this PConvUNet has per-channel decoder masks "
            "(multi_channel_decoder=true), whose valid counts depend on the channel count; train "
            "it with net.multi_channel_decoder=false to prune channels, or prune weights or blocks"
        )


def quality(cfg: DictConfig, task: Any, datamodule: Any, root: Path) -> dict[str, float]:
    """Validation metrics of ``task``'s network on the fixed evaluation masks."""
    from hydra.utils import instantiate

    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        # no_grad, not inference_mode: the metric states reset here would become inference
        # tensors, which a later validation inside fit (fast_dev_run) cannot update
        inference_mode=False,
    )
    (result,) = trainer.validate(task, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in result.items()}


def pretrained_inpainting_network(
    cfg: DictConfig, datamodule: Any, output_dir: Path
) -> tuple[nn.Module, dict, str]:
    """The network to prune, its spec (``_target_`` and arguments) and where its weights came from.

    ``task.pretrained``: a ``task=inpaint`` checkpoint (its saved spec rebuilds the network; ``net``
    is not used), or null: train ``net`` densely for ``task.dense_steps`` and cache it as a
    checkpoint that ``task=predict`` can also use.
    """
    from hydra.utils import instantiate

    from masking.io import write_atomic

    from .predict import build_network, read_inpainting_checkpoint
    from .train_inpaint import build_inpainting_task
    from .train_prune import capped_steps, dense_cache_path, job_trainer, launch_path

    source = cfg.task.pretrained
    if source is not None:
        path = launch_path(source)
        spec, state = read_inpainting_checkpoint(path, "task.pretrained")
        log.info("Pruning %s from %s (the net config is not used)", spec.get("_target_"), path)
        return build_network(spec, state, origin=f"task.pretrained {str(path)!r}"), spec, str(path)
    task_cfg = cfg.task
    dense_steps = capped_steps(cfg, task_cfg.dense_steps)
    cache = dense_cache_path(
        cfg,
        {
            "task": "inpaint",
            "steps": dense_steps,
            "optimizer": OmegaConf.to_container(task_cfg.optimizer, resolve=True),
            "lr_schedule": task_cfg.lr_schedule,
            "loss": OmegaConf.to_container(task_cfg.loss.weights, resolve=True),
            "mask": OmegaConf.to_container(cfg.mask, resolve=True),
            "mask_seed": task_cfg.mask_seed,
            "masks_drawn": "per_sample_key",  # since the masks stopped depending on the rank
        },
    )
    if cache.is_file():
        log.info("Using the cached dense model %s (delete it to retrain)", cache)
        spec, state = read_inpainting_checkpoint(cache, "the cached dense model")
        net = build_network(spec, state, origin=f"the cached dense model {str(cache)!r}")
        return net, spec, str(cache)
    spec = OmegaConf.to_container(cfg.net, resolve=True)
    net = instantiate(cfg.net)
    log.warning(
        "No pretrained weights given (task.pretrained=null): training the dense %s for %d steps "
        "first; it is cached at %s for the next run",
        type(net).__name__,
        dense_steps,
        cache,
    )
    task = build_inpainting_task(cfg, net, output_dir / "dense")
    task.sample_dir = None
    trainer = job_trainer(cfg, output_dir / "dense", **_step_limits(dense_steps))
    trainer.fit(task, datamodule=datamodule)
    if cfg.trainer.get("fast_dev_run"):
        return net, spec, "trained here for a fast_dev_run (not cached)"
    if is_main_process():
        buffer = io.BytesIO()
        state = {f"net.{k}": v for k, v in net.state_dict().items()}
        torch.save({"state_dict": state, "net_spec": spec}, buffer)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, buffer.getvalue())
    return net, spec, f"trained here ({trainer.global_step} steps), cached at {cache}"


def _comparison_grid(images: Tensor, masks: Tensor, dense: nn.Module, final: nn.Module) -> Tensor:
    """Rows: masked input | dense composite | pruned composite | target."""
    from masking.functional import mask_product

    def composite(net: nn.Module) -> Tensor:
        with torch.no_grad():
            out = net.eval()(images, masks)
        out = (out[-1] if isinstance(out, tuple | list) else out).clamp(0, 1)
        return mask_product(images, masks) + mask_product(out, 1 - masks)

    grey = torch.full_like(images, 0.5)
    masked = mask_product(images, masks) + mask_product(grey, 1 - masks)
    rows = [masked, composite(dense), composite(final), images]
    return torch.cat([torch.cat(list(r.float()), dim=2) for r in rows], dim=1)


def run_prune_inpaint(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from masking.pruning import Pruner

    from .io import save_image
    from .tracking import build_callbacks, build_logger
    from .train_inpaint import build_inpainting_task
    from .train_prune import (
        build_schedule,
        capped_steps,
        finalize_pruned,
        job_trainer,
        profile_configured,
        pruning_options,
        pruning_report,
        settle_masks,
        write_pruning_outputs,
    )

    started = time.perf_counter()
    os.environ.setdefault("WANDB_MODE", "offline")
    pl.seed_everything(cfg.seed, workers=True)
    task_cfg, p = cfg.task, cfg.get("pruning")
    for key in ("dense_steps", "finetune_steps"):
        value = task_cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"task.{key} must be a positive int, got {value!r}")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    val_images = next(iter(datamodule.val_dataloader()))[:8]
    dense_task = build_inpainting_task(cfg, nn.Identity(), output_dir)  # the evaluation masks
    size = tuple(val_images.shape[-2:])
    val_masks = dense_task.validation_masks(0, len(val_images), size)[0]
    example = (val_images[:2], val_masks[:2])
    options = pruning_options(cfg, example)
    if task_cfg.pretrained is None:  # bad pruning settings fail now, not after training
        check_channel_pruning(OmegaConf.to_container(cfg.net, resolve=True), p.granularity)
        Pruner(instantiate(cfg.net), **options)

    net, spec, origin = pretrained_inpainting_network(cfg, datamodule, output_dir)
    check_channel_pruning(spec, p.granularity)
    dense_task.net = net
    dense_task.sample_dir = None
    scores = {"dense": quality(cfg, dense_task, datamodule, output_dir)}
    log.info("dense PSNR %.2f dB (%s)", scores["dense"]["val/psnr"], origin)
    dense = copy.deepcopy(net)

    steps = capped_steps(cfg, int(task_cfg.finetune_steps))
    schedule = build_schedule(p, steps)
    pruner = Pruner(net, schedule=schedule, **options)
    task = build_inpainting_task(
        cfg, net, output_dir, pruner=pruner, mask_lr=p.mask_optimizer.get("lr", 1e-2)
    )
    task.sample_dir = None
    task.net_spec = None  # its checkpoints hold masks: the slim model to use is export/
    pruner.set_sparsity(p.sparsity)
    scores["masked_before_finetune"] = quality(cfg, task, datamodule, output_dir)
    log.info(
        "masked at %.3f before fine-tuning: PSNR %.2f dB",
        p.sparsity,
        scores["masked_before_finetune"]["val/psnr"],
    )
    pruner.set_sparsity(schedule(0))

    checkpoints = ModelCheckpoint(dirpath=output_dir / "checkpoints", save_last=True)
    logger = build_logger(cfg)
    trainer = job_trainer(
        cfg,
        output_dir,
        logger=logger,
        callbacks=[checkpoints, *build_callbacks(cfg, logger)],
        **_step_limits(steps),
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)

    def forward(model: nn.Module, batch: Any) -> Tensor:  # a training batch with its masks
        images, keys = datamodule.on_after_batch_transfer(batch, 0)
        return model(images, task.training_masks(images, keys))

    settle_masks(
        pruner,
        p.sparsity,
        datamodule.train_dataloader(),
        task_cfg.bn_recalibration_batches,
        forward=forward,
    )
    scores["masked_after_finetune"] = quality(cfg, task, datamodule, output_dir)

    final, finalize = finalize_pruned(pruner, p, example)
    final_task = build_inpainting_task(cfg, final, output_dir)
    final_task.sample_dir = None
    scores["final"] = quality(cfg, final_task, datamodule, output_dir)
    log.info(
        "final (%s) PSNR %.2f dB (dense %.2f dB)",
        finalize,
        scores["final"]["val/psnr"],
        scores["dense"]["val/psnr"],
    )
    if other_ranks_stop_here():
        return {"final/psnr": scores["final"]["val/psnr"]}
    save_image(output_dir / "compare.png", _comparison_grid(val_images, val_masks, dense, final))

    def make_input(batch: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(batch) % len(val_images)
        return val_images[index], val_masks[index]

    profile = profile_configured(cfg, dense, final, make_input)
    stages = list(scores)
    report = pruning_report(
        cfg,
        pruner,
        finalize=finalize,
        origin=origin,
        profile=profile,
        scores={
            "psnr": {s: scores[s]["val/psnr"] for s in stages},
            "hole_l1": {s: scores[s]["val/hole_l1"] for s in stages},
        },
        steps=int(trainer.global_step),
        started=started,
    )
    report["by_bin"] = {
        s: {k.removeprefix("val/"): v for k, v in scores[s].items() if k.count("/") == 2}
        for s in stages
    }
    metrics = {
        f"{stage}/{name}": scores[key][f"val/{name}"]
        for stage, key in (
            ("dense", "dense"),
            ("masked", "masked_before_finetune"),
            ("final", "final"),
        )
        for name in ("psnr", "hole_l1")
    }
    return write_pruning_outputs(
        output_dir,
        final,
        spec,
        report,
        metrics,
        {
            "psnr": scores["final"]["val/psnr"],
            "method": p.method,
            "granularity": str(pruner.granularity),
        },
    )
