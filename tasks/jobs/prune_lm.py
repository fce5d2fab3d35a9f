"""``task=prune_lm``: prune a causal language model (a local Hugging Face model, or the embedded
small Llama trained here on the Python standard library's source and cached) through the pruning
pipeline, judged by held-out perplexity."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from masking.checks import check_int
from masking.pruning import Pruner

from ..modules.language import check_vocabulary, local_causal_lm, perplexity, vocabulary_size
from ..pruning import PruningPlan, PruningTarget, cache_dense, dense_cache_path, prune
from ..runtime.checkpoints import load_weights, state_dict_from_file
from ..runtime.job import launch_path
from ..runtime.trainer import capped_steps, job_trainer, step_limits

log = logging.getLogger(__name__)


class LanguageModelTarget(PruningTarget):
    """``cfg.net`` (or ``task.pretrained``) on ``cfg.data`` (a text datamodule), judged by
    perplexity on the held-out files."""

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.cfg, self.output_dir = cfg, output_dir
        task = cfg.task
        check_int("task.dense_steps", task.dense_steps, 1)
        check_int("task.finetune_steps", task.finetune_steps, 0)
        for key in ("samples", "seq_len", "batch_size"):
            check_int(f"task.calibration.{key}", task.calibration[key], 1)
        self.pretrained_source = task.pretrained

    def prepare(self, plan: PruningPlan) -> None:
        self.plan = plan
        if self.finetune_steps() == 0:
            plan.check_oneshot()
        elif plan.calibrated_only:
            raise ValueError(
                f"pruning={plan.method} prunes once without fine-tuning: set "
                "task.finetune_steps=0 (the learned estimators are the ones that fine-tune)"
            )
        tokenizer = None
        if self.pretrained_source is not None:
            folder = model_folder(str(self.pretrained_source))
            self.local = local_causal_lm(folder)
            tokenizer = folder / "tokenizer.json"
            if not tokenizer.is_file():
                raise ValueError(
                    f"task.pretrained: {str(folder)!r} holds no tokenizer.json (the model's own "
                    "tokenizer is needed to encode data= with it)"
                )
        self.datamodule = instantiate(self.cfg.data, tokenizer_file=tokenizer)
        self.datamodule.setup("fit")
        log.info("Text: %s", self.datamodule.describe())
        self.val_loader = self.datamodule.val_dataloader()
        self.example_inputs = self.datamodule.example_input(2)

    def pretrained(self, plan: PruningPlan) -> tuple[nn.Module, dict, str]:
        cfg = self.cfg
        tokenizer = self.datamodule.tokenizer
        if self.pretrained_source is not None:
            net = self.local
            check_vocabulary(net, tokenizer, "task.pretrained")
            self._check_model(net)
            spec = {
                "_target_": "tasks.modules.language.causal_lm",
                "family": _family(net),
                **_config(net),
            }
            return net.eval(), spec, str(self.pretrained_source)
        spec = {
            **OmegaConf.to_container(cfg.net, resolve=True),
            "vocab_size": vocabulary_size(tokenizer),
        }
        net = instantiate(spec)
        self._check_model(net)
        cache = dense_cache_path(
            cfg,
            {
                "steps": cfg.task.dense_steps,
                "vocab_size": spec["vocab_size"],
                "tokens": str(self.datamodule.cache_folder.name),
                "optimizer": OmegaConf.to_container(cfg.task.dense_optimizer, resolve=True),
                "scheduler": OmegaConf.to_container(cfg.task.dense_scheduler, resolve=True),
            },
        )
        if cache.is_file():
            log.info("Using the cached dense language model %s (delete it to retrain)", cache)
            argument = "the cached dense model (delete it to retrain)"
            load_weights(net, state_dict_from_file(cache, argument), str(cache), argument)
            return net.eval(), spec, str(cache)
        log.warning(
            "No pretrained weights given (task.pretrained=null): training the embedded %s "
            "(%.1f M parameters) for %d steps first; it is cached at %s for the next run",
            type(net).__name__,
            sum(p.numel() for p in net.parameters()) / 1e6,
            cfg.task.dense_steps,
            cache,
        )
        module = instantiate(cfg.task.dense_module, net=net)
        steps = capped_steps(cfg, cfg.task.dense_steps)
        trainer = job_trainer(cfg, self.output_dir / "dense", **step_limits(steps))
        trainer.fit(module, datamodule=self.datamodule)
        description = f"{steps} steps on {self.datamodule.describe()}"
        return net.eval(), spec, cache_dense(cfg, cache, net.state_dict(), description)

    def _check_model(self, net: nn.Module) -> None:
        """Settings the model cannot follow fail now, before any dense training."""
        self._check_context(net)
        self._check_learned(net)

    def _check_context(self, net: nn.Module) -> None:
        """Sequences longer than the model's context fail now, with the setting's name."""
        context = getattr(getattr(net, "config", None), "max_position_embeddings", None)
        if context is None:
            context = getattr(getattr(net, "config", None), "n_positions", None)
        if context is None:
            return
        for key, value in (
            ("data.seq_len", self.cfg.data.seq_len),
            ("task.calibration.seq_len", self.cfg.task.calibration.seq_len),
        ):
            if value > context:
                raise ValueError(
                    f"{key}={value} is longer than the model's context "
                    f"(max_position_embeddings={context})"
                )

    def _check_learned(self, net: nn.Module) -> None:
        """With fine-tuning, the learned masks must fit ``net`` (before any dense training)."""
        if self.finetune_steps() == 0:
            return
        self.plan.check(copy.deepcopy(net), self.example_inputs)

    @property
    def check_inputs(self) -> Any:
        return self.example_inputs  # fixed held-out sequences: no random draw to delay

    def calibration(self) -> list[torch.Tensor]:
        """The calibration windows in batches (the same for every method at one seed)."""
        settings = self.cfg.task.calibration
        windows = self.datamodule.calibration(settings.samples, self.cfg.seed, settings.seq_len)
        return list(windows.split(settings.batch_size))

    @staticmethod
    def calibration_forward(net: nn.Module, ids: torch.Tensor) -> Any:
        return net(ids, use_cache=False)

    def quality(self, net: nn.Module) -> dict[str, float]:
        return {"ppl": perplexity(net, self.val_loader)}

    def describe(self, scores: dict[str, float]) -> str:
        return f"held-out perplexity {scores['ppl']:.3f}"

    def finetune_steps(self) -> int:
        return capped_steps(self.cfg, int(self.cfg.task.finetune_steps))

    def finetune_module(self, net: nn.Module, pruner: Pruner, plan: PruningPlan) -> Any:
        return instantiate(
            self.cfg.task.module, net=net, pruner=pruner, mask_optimizer=plan.mask_optimizer
        )

    def finetune_limits(self, steps: int) -> dict[str, Any]:
        return step_limits(steps)

    def make_input(self, batch: int) -> Any:
        return self.datamodule.example_input(batch)

    def report_scores(self, scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {"perplexity": {stage: values["ppl"] for stage, values in scores.items()}}

    def metrics(self, scores: dict[str, dict[str, float]]) -> dict[str, float]:
        names = {"dense": "dense", "masked_before_finetune": "masked", "final": "final"}
        return {f"{names[s]}/ppl": v["ppl"] for s, v in scores.items() if s in names}


def model_folder(source: str) -> Path:
    """``task.pretrained``: a folder (relative ones from the launch folder), or a model id whose
    snapshot is in the local Hugging Face cache (looked up only, never downloaded)."""
    path = launch_path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # hub errors: not an id, or not cached
        raise ValueError(
            f"task.pretrained: {source!r} is neither a folder nor a model id in the local Hugging "
            "Face cache (nothing is downloaded: copy the model there, or give its folder)"
        ) from None


def _family(net: nn.Module) -> str:
    kind = getattr(getattr(net, "config", None), "model_type", "")
    if kind not in ("llama", "gpt2"):
        raise ValueError(
            f"task.pretrained: a {kind or type(net).__name__} model; the supported families are "
            "llama (Llama-family with grouped-query attention) and gpt2"
        )
    return kind


def _config(net: nn.Module) -> dict[str, Any]:
    """The config keys that rebuild ``net``'s architecture (JSON values only)."""
    config = net.config.to_dict()
    drop = {"architectures", "model_type", "transformers_version", "torch_dtype", "dtype"}
    return {
        k: v
        for k, v in config.items()
        if k not in drop and not k.startswith("_") and isinstance(v, int | float | str | bool)
    }


def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    return prune(cfg, LanguageModelTarget(cfg, output_dir), output_dir)
