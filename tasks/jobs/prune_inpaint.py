"""``task=prune_inpaint``: prune an inpainting network (a ``task=inpaint`` checkpoint, or a dense
one trained here and cached) through the pruning pipeline, judged by PSNR and hole L1 on the fixed
evaluation masks, with a picture of the dense and pruned results side by side."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from masking.checks import check_int
from masking.functional import mask_product
from masking.pruning import Pruner

from ..pruning import PruningPlan, PruningTarget, cache_dense, dense_cache_path, prune
from ..runtime.checkpoints import build_network, read_inpainting_checkpoint, trusted
from ..runtime.files import save_image
from ..runtime.job import launch_path
from ..runtime.processes import data_parallel
from ..runtime.trainer import capped_steps, evaluation_trainer, job_trainer, step_limits

log = logging.getLogger(__name__)


def check_channel_pruning(spec: dict, plan: PruningPlan) -> None:
    """Per-channel decoder masks tie every channel to its mask path: name the setting that frees it."""
    if (
        plan.granularity.structured
        and str(spec.get("_target_", "")).endswith("PConvUNet")
        and spec.get("layer", "partial") == "partial"
        and spec.get("multi_channel_decoder", True)
    ):
        raise ValueError(
            "pruning.granularity=channel: this PConvUNet has per-channel decoder masks "
            "(multi_channel_decoder=true), whose valid counts depend on the channel count; train "
            "it with net.multi_channel_decoder=false to prune channels, or prune weights or blocks"
        )


def comparison_grid(images: Tensor, masks: Tensor, dense: nn.Module, final: nn.Module) -> Tensor:
    """Rows: masked input | dense composite | pruned composite | target."""

    def composite(net: nn.Module) -> Tensor:
        with torch.no_grad():
            out = net.eval()(images, masks)
        out = (out[-1] if isinstance(out, tuple | list) else out).clamp(0, 1)
        return mask_product(images, masks) + mask_product(out, 1 - masks)

    grey = torch.full_like(images, 0.5)
    masked = mask_product(images, masks) + mask_product(grey, 1 - masks)
    rows = [masked, composite(dense), composite(final), images]
    return torch.cat([torch.cat(list(r.float()), dim=2) for r in rows], dim=1)


class InpaintingTarget(PruningTarget):
    """An inpainting network on ``cfg.data``, fine-tuned with ``task=inpaint``'s loss and training
    masks (``mask=``), judged on the fixed evaluation masks."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.cfg, self.output_dir = cfg, output_dir
        for key in ("dense_steps", "finetune_steps"):
            check_int(f"task.{key}", cfg.task[key], 1)

    def _module(self, net: nn.Module, **extra: Any) -> Any:
        """``task.module`` around ``net``: no sample grids, no spec (its checkpoints hold masks or
        are not the model to use)."""
        return instantiate(self.cfg.task.module, net=net, sample_dir=None, **extra)

    def prepare(self, plan: PruningPlan) -> None:
        cfg = self.cfg
        self.datamodule = instantiate(cfg.data)
        self.datamodule.setup("fit")
        self.val_images = next(iter(self.datamodule.val_dataloader()))[:8]
        self.evaluator = self._module(nn.Identity())  # holds the evaluation masks
        size = tuple(self.val_images.shape[-2:])
        self.val_masks = self.evaluator.validation_masks(0, len(self.val_images), size)[0]
        self.example_inputs = self.check_inputs = (self.val_images[:2], self.val_masks[:2])
        if cfg.task.pretrained is None:  # bad pruning settings fail now, not after training
            check_channel_pruning(OmegaConf.to_container(cfg.net, resolve=True), plan)
            plan.check(instantiate(cfg.net), self.example_inputs)

    def pretrained(self, plan: PruningPlan) -> tuple[nn.Module, dict, str]:
        """``task.pretrained``: a ``task=inpaint`` checkpoint (its saved spec rebuilds the network;
        ``net`` is not used), or null: train ``net`` densely for ``task.dense_steps`` and cache it
        as a checkpoint that ``task=predict`` can also use."""
        net, spec, origin = self._pretrained()
        check_channel_pruning(spec, plan)
        return net, spec, origin

    def _pretrained(self) -> tuple[nn.Module, dict, str]:
        cfg, task = self.cfg, self.cfg.task
        if task.pretrained is not None:
            path = launch_path(task.pretrained)
            spec, state = read_inpainting_checkpoint(path, "task.pretrained")
            log.info("Pruning %s from %s (the net config is not used)", spec.get("_target_"), path)
            origin = f"task.pretrained {str(path)!r}"
            net = build_network(spec, state, origin=origin, builders=trusted(cfg.trusted_builders))
            return net, spec, str(path)
        dense_steps = capped_steps(cfg, task.dense_steps)
        cache = dense_cache_path(
            cfg,
            {
                "task": "inpaint",
                "steps": dense_steps,
                "optimizer": OmegaConf.to_container(task.optimizer, resolve=True),
                "scheduler": OmegaConf.to_container(task.scheduler, resolve=True),
                "loss": OmegaConf.to_container(task.loss.weights, resolve=True),
                "mask": OmegaConf.to_container(cfg.mask, resolve=True),
                "mask_seed": task.mask_seed,
            },
        )
        if cache.is_file():
            log.info("Using the cached dense model %s (delete it to retrain)", cache)
            spec, state = read_inpainting_checkpoint(cache, "the cached dense model")
            origin = f"the cached dense model {str(cache)!r}"
            # the cache holds the network of this run's own net= config, which the user chose
            builders = trusted([*cfg.trusted_builders, cfg.net._target_])
            net = build_network(spec, state, origin=origin, builders=builders)
            return net, spec, str(cache)
        spec = OmegaConf.to_container(cfg.net, resolve=True)
        net = instantiate(cfg.net)
        log.warning(
            "No pretrained weights given (task.pretrained=null): training the dense %s for %d "
            "steps first; it is cached at %s for the next run",
            type(net).__name__,
            dense_steps,
            cache,
        )
        trainer = job_trainer(cfg, self.output_dir / "dense", **step_limits(dense_steps))
        trainer.fit(self._module(net), datamodule=self.datamodule)
        checkpoint = {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}
        checkpoint["net_spec"] = spec
        origin = cache_dense(cfg, cache, checkpoint, f"{trainer.global_step} steps")
        return net, spec, origin

    def quality(self, net: nn.Module) -> dict[str, float]:
        self.evaluator.net = net
        trainer = evaluation_trainer(self.cfg, self.output_dir)
        (result,) = trainer.validate(self.evaluator, datamodule=self.datamodule, verbose=False)
        return {k: float(v) for k, v in result.items()}

    def describe(self, scores: dict[str, float]) -> str:
        return f"PSNR {scores['val/psnr']:.2f} dB"

    def finetune_steps(self) -> int:
        return capped_steps(self.cfg, int(self.cfg.task.finetune_steps))

    def finetune_module(self, net: nn.Module, pruner: Pruner, plan: PruningPlan) -> Any:
        self.finetuner = self._module(net, pruner=pruner, mask_optimizer=plan.mask_optimizer)
        return self.finetuner

    def finetune_limits(self, steps: int) -> dict[str, Any]:
        return step_limits(steps)

    def batch_forward(self, module: Any):
        def forward(model: nn.Module, batch: Any) -> Tensor:  # a training batch with its masks
            images, keys = self.datamodule.on_after_batch_transfer(batch, 0)
            return model(images, module.training_masks(images, keys))

        return forward

    def make_input(self, batch: int) -> tuple[Tensor, Tensor]:
        index = torch.arange(batch) % len(self.val_images)
        return self.val_images[index], self.val_masks[index]

    def after_finalize(self, dense: nn.Module, final: nn.Module, output_dir: Path) -> None:
        grid = comparison_grid(self.val_images, self.val_masks, dense, final)
        save_image(output_dir / "compare.png", grid)

    def report_scores(self, scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {
            name: {stage: values[f"val/{name}"] for stage, values in scores.items()}
            for name in ("psnr", "hole_l1")
        }

    def report_extra(self, scores: dict[str, dict[str, float]]) -> dict[str, Any]:
        by_bin = {
            stage: {k.removeprefix("val/"): v for k, v in values.items() if k.count("/") == 2}
            for stage, values in scores.items()
        }
        return {"by_bin": by_bin}

    def metrics(self, scores: dict[str, dict[str, float]]) -> dict[str, float]:
        names = {"dense": "dense", "masked_before_finetune": "masked", "final": "final"}
        return {
            f"{names[stage]}/{name}": values[f"val/{name}"]
            for stage, values in scores.items()
            if stage in names
            for name in ("psnr", "hole_l1")
        }


@data_parallel
def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    return prune(cfg, InpaintingTarget(cfg, output_dir), output_dir)
