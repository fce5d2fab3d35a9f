"""``task=prune``: prune a pretrained classifier (a state_dict, torchvision's cached weights, or a
dense model trained here and cached) through the pruning pipeline, judged by accuracy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from masking.checks import check_int
from masking.pruning import Pruner

from ..modules import evaluate
from ..pruning import PruningPlan, PruningTarget, cache_dense, dense_cache_path, prune
from ..runtime.checkpoints import load_weights, state_dict_from_file, torchvision_cached_weights
from ..runtime.job import launch_path
from ..runtime.processes import data_parallel
from ..runtime.trainer import capped_steps, job_trainer

log = logging.getLogger(__name__)


class ClassificationTarget(PruningTarget):
    """``cfg.net`` on ``cfg.data`` (a classification datamodule), judged by top-1 accuracy."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.cfg, self.output_dir = cfg, output_dir
        task = cfg.task
        for key in ("dense_epochs", "finetune_epochs"):
            check_int(f"task.{key}", task[key], 1)

    def prepare(self, plan: PruningPlan) -> None:
        self.datamodule = instantiate(self.cfg.data)
        self.datamodule.setup("fit")
        self.example_inputs = self.datamodule.example_input(2)
        self.val_loader = self.datamodule.val_dataloader()
        plan.check(instantiate(self.cfg.net), self.example_inputs)

    def pretrained(self, plan: PruningPlan) -> tuple[nn.Module, dict, str]:
        """``task.pretrained``: a path (state_dict or Lightning checkpoint), ``torchvision`` (the
        default weights of ``net.name`` from torchvision's cache), or null: train the dense model
        for ``task.dense_epochs`` first and cache it for the next run."""
        cfg = self.cfg
        net = instantiate(cfg.net)
        spec = OmegaConf.to_container(cfg.net, resolve=True)
        source = cfg.task.pretrained
        if source is not None:
            if source == "torchvision":
                name = cfg.net.get("name")
                if not name:
                    raise ValueError(
                        "task.pretrained=torchvision needs a torchvision net with net.name"
                    )
                path = torchvision_cached_weights(name)
            else:
                path = launch_path(source)
            load_weights(net, state_dict_from_file(path), str(path))
            return net, spec, str(path)
        cache = dense_cache_path(
            cfg,
            {
                "epochs": cfg.task.dense_epochs,
                "optimizer": OmegaConf.to_container(cfg.task.dense_optimizer, resolve=True),
                "scheduler": OmegaConf.to_container(cfg.task.dense_scheduler, resolve=True),
            },
        )
        if cache.is_file():
            log.info("Using the cached dense model %s (delete it to retrain)", cache)
            argument = "the cached dense model (delete it to retrain)"
            load_weights(net, state_dict_from_file(cache, argument), str(cache), argument)
            return net, spec, str(cache)
        log.warning(
            "No pretrained weights given (task.pretrained=null): training the dense %s for %d "
            "epochs first; it is cached at %s for the next run",
            type(net).__name__,
            cfg.task.dense_epochs,
            cache,
        )
        module = instantiate(cfg.task.dense_module, net=net)
        trainer = job_trainer(
            cfg,
            self.output_dir / "dense",
            max_epochs=cfg.task.dense_epochs,
            check_val_every_n_epoch=1,
        )
        trainer.fit(module, datamodule=self.datamodule)
        epochs = f"{cfg.task.dense_epochs} epochs"
        return net, spec, cache_dense(cfg, cache, net.state_dict(), epochs)

    @property
    def check_inputs(self) -> Any:
        # read when the pipeline compacts, not before: every pass over a DataLoader draws its
        # base seed from torch's global generator, so an early one would change the training
        return next(iter(self.val_loader))[0][:8]

    def quality(self, net: nn.Module) -> dict[str, float]:
        return {"acc": evaluate(net, self.val_loader)}

    def describe(self, scores: dict[str, float]) -> str:
        return f"accuracy {scores['acc']:.2f} %"

    def finetune_steps(self) -> int:
        epochs = self.cfg.task.finetune_epochs
        return capped_steps(self.cfg, len(self.datamodule.train_dataloader()) * epochs)

    def finetune_module(self, net: nn.Module, pruner: Pruner, plan: PruningPlan) -> Any:
        return instantiate(
            self.cfg.task.module, net=net, pruner=pruner, mask_optimizer=plan.mask_optimizer
        )

    def finetune_limits(self, steps: int) -> dict[str, Any]:
        return {"max_epochs": self.cfg.task.finetune_epochs, "check_val_every_n_epoch": 1}

    def make_input(self, batch: int) -> Any:
        return self.datamodule.example_input(batch)

    def report_scores(self, scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {"accuracy": {stage: values["acc"] for stage, values in scores.items()}}

    def metrics(self, scores: dict[str, dict[str, float]]) -> dict[str, float]:
        names = {"dense": "dense", "masked_before_finetune": "masked", "final": "final"}
        return {f"{names[s]}/acc": v["acc"] for s, v in scores.items() if s in names}


@data_parallel
def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    return prune(cfg, ClassificationTarget(cfg, output_dir), output_dir)
