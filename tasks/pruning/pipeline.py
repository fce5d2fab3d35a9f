"""The one pruning pipeline: pretrained network → masks → fine-tune under the schedule → settle →
finalize (bake or compact) → export → report. Every pruning job runs it with a
:class:`PruningTarget` that says what is pruned and how its quality is measured."""

from __future__ import annotations

import copy
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor, nn
from tqdm.auto import tqdm

from masking.pruning import Pruner

from ..runtime.cost import profile_with
from ..runtime.exporting import exportable, exported_part, onnx_latency_pair, signature_for
from ..runtime.processes import other_ranks_stop_here
from ..runtime.trainer import logged_trainer
from .plan import PruningPlan
from .report import pruning_report, write_pruning_outputs
from .settle import BatchForward, settle_masks

log = logging.getLogger(__name__)


class PruningTarget(ABC):
    """What a pruning job prunes (a network, its data, its LightningModule) and how it measures
    the network's quality at each stage. ``prepare`` runs first; the pipeline then uses the rest.
    """

    datamodule: pl.LightningDataModule
    example_inputs: Any  # a batch to trace channel coupling (tensor or forward arguments)
    check_inputs: Any  # a batch on which the compacted and the masked model must agree

    @abstractmethod
    def prepare(self, plan: PruningPlan) -> None:
        """Set up the data and the example inputs; fail now on settings the plan cannot meet."""

    @abstractmethod
    def pretrained(self, plan: PruningPlan) -> tuple[nn.Module, dict, str]:
        """The network to prune, its spec (``_target_`` and arguments, what the export rebuilds
        it from) and where its weights came from."""

    @abstractmethod
    def quality(self, net: nn.Module) -> dict[str, float]:
        """The network's scores, flat keys (``acc``, or ``val/psnr`` and friends)."""

    @abstractmethod
    def describe(self, scores: dict[str, float]) -> str:
        """The headline of one stage's scores, for the log (``accuracy 99.72 %``)."""

    @abstractmethod
    def finetune_steps(self) -> int:
        """The fine-tuning budget in optimizer steps."""

    @abstractmethod
    def finetune_module(self, net: nn.Module, pruner: Pruner, plan: PruningPlan) -> Any:
        """The LightningModule that fine-tunes ``net`` under ``pruner``."""

    @abstractmethod
    def finetune_limits(self, steps: int) -> dict[str, Any]:
        """Trainer arguments that bound the fine-tuning to ``steps`` steps."""

    def batch_forward(self, module: Any) -> BatchForward | None:
        """How a training batch runs through the network, for BatchNorm re-estimation (None:
        ``net(batch[0])``)."""
        return None

    @abstractmethod
    def make_input(self, batch: int) -> Any:
        """An input of ``batch`` examples for the latency measurement."""

    @abstractmethod
    def report_scores(self, scores: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """The report's quality columns: ``{column: {stage: value}}`` (see ``report.SCORES``)."""

    @abstractmethod
    def metrics(self, scores: dict[str, dict[str, float]]) -> dict[str, float]:
        """The quality entries of ``metrics.json`` (``final/acc``, ``final/psnr``, ...)."""

    def report_extra(self, scores: dict[str, dict[str, float]]) -> dict[str, Any]:
        """More entries of ``prune_report.json`` (per-bin scores, say)."""
        return {}

    def after_finalize(self, dense: nn.Module, final: nn.Module, output_dir: Path) -> None:  # noqa: B027
        """Anything the job writes once the final model exists (a comparison picture)."""

    def calibration(self) -> Iterable[Any]:
        """The calibration batches of one-shot pruning (``task.finetune_steps=0``)."""
        raise ValueError(f"{type(self).__name__} has no calibration data for one-shot pruning")

    @staticmethod
    def calibration_forward(net: nn.Module, batch: Any) -> Any:
        """How one calibration batch runs through the network."""
        return net(batch)


def pruning_plan(cfg: DictConfig) -> PruningPlan:
    """``cfg.pruning`` built and checked."""
    if cfg.get("pruning") is None:
        raise ValueError(
            f"task={cfg.task.name} needs a pruning method: pruning=magnitude|movement|..."
        )
    return instantiate(cfg.pruning)


def prune(cfg: DictConfig, target: PruningTarget, output_dir: Path) -> dict[str, float]:
    """Run the pipeline on ``target``; writes ``export/``, ``prune_report.{json,md}``,
    ``metrics.json`` and ``checkpoints/`` into ``output_dir``; returns the metrics."""
    started = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True)
    plan = pruning_plan(cfg)
    target.prepare(plan)
    net, spec, origin = target.pretrained(plan)
    scores = {"dense": target.quality(net)}
    log.info("dense %s (%s)", target.describe(scores["dense"]), origin)
    dense = copy.deepcopy(net)

    steps = target.finetune_steps()
    if steps == 0:
        return _prune_oneshot(
            cfg, plan, target, (net, dense, spec, origin), scores, output_dir, started
        )
    pruning_started = time.perf_counter()  # the pruning: prior, fine-tuning, finalizing
    pruner = plan.attach(net, target.example_inputs, steps)
    if plan.prior is not None:
        _start_from_prior(pruner, plan, target, dense)
    pruner.set_sparsity(plan.sparsity)
    evaluating = time.perf_counter()  # the two evaluations below are not the pruning's time
    scores["masked_before_finetune"] = target.quality(net)
    evaluation_seconds = time.perf_counter() - evaluating
    log.info(
        "masked at %.3f before fine-tuning: %s",
        plan.sparsity,
        target.describe(scores["masked_before_finetune"]),
    )
    pruner.set_sparsity(pruner.schedule(0))

    module = target.finetune_module(net, pruner, plan)
    checkpoints = ModelCheckpoint(dirpath=output_dir / "checkpoints", save_last=True)
    trainer = logged_trainer(cfg, output_dir, checkpoints, **target.finetune_limits(steps))
    trainer.fit(module, datamodule=target.datamodule, ckpt_path=cfg.ckpt_path)
    settle_masks(
        pruner,
        plan.sparsity,
        target.datamodule.train_dataloader(),
        cfg.task.bn_recalibration_batches,
        forward=target.batch_forward(module),
    )
    evaluating = time.perf_counter()
    scores["masked_after_finetune"] = target.quality(net)
    evaluation_seconds += time.perf_counter() - evaluating

    final, finalize = plan.finalize_model(pruner, target.check_inputs)
    prune_seconds = time.perf_counter() - pruning_started - evaluation_seconds
    scores["final"] = target.quality(final)
    log.info(
        "final (%s) %s (masked: %s)",
        finalize,
        target.describe(scores["final"]),
        target.describe(scores["masked_after_finetune"]),
    )
    if other_ranks_stop_here():
        return target.metrics(scores)

    target.after_finalize(dense, final, output_dir)
    return _report_and_export(
        cfg,
        plan,
        target,
        pruner,
        (final, dense, spec, origin),
        scores,
        output_dir,
        finalize=finalize,
        steps=int(trainer.global_step),
        started=started,
        extra={"prune_seconds": prune_seconds},
    )


def _start_from_prior(
    pruner: Pruner, plan: PruningPlan, target: PruningTarget, dense: nn.Module
) -> None:
    """``pruning.prior``: the learned masks start from a one-shot method's masks, computed on a
    copy of the dense network with the target's calibration data (its weight updates, if any,
    are not kept: the prior is a mask)."""
    result = plan.prune_oneshot(
        copy.deepcopy(dense), target.calibration(), target.calibration_forward, method=plan.prior
    )
    started = 0
    for layer in pruner.layers:
        if layer.name in result.masks and hasattr(layer.source, "set_prior"):
            layer.source.set_prior(result.masks[layer.name].to(layer.source.keep.device))
            started += 1
    log.info("%d masks start from the %s %s masks", started, plan.prior, plan.granularity)


def _prune_oneshot(
    cfg: DictConfig,
    plan: PruningPlan,
    target: PruningTarget,
    models: tuple[nn.Module, nn.Module, dict, str],
    scores: dict[str, dict[str, float]],
    output_dir: Path,
    started: float,
) -> dict[str, float]:
    """No fine-tuning budget: prune once, decoder block by block, on the target's calibration
    batches (magnitude, Wanda, SparseGPT); the weights are left dense with zeros."""
    net, dense, spec, origin = models
    progress = tqdm(total=None, desc=f"{plan.method} block by block", leave=False)

    def advance(index: int, count: int, seconds: float) -> None:
        progress.total = count
        progress.update(1)

    pruning_started = time.perf_counter()
    try:
        result = plan.prune_oneshot(
            net, target.calibration(), target.calibration_forward, progress=advance
        )
    finally:
        progress.close()
    prune_seconds = time.perf_counter() - pruning_started
    log.info(
        "%s %s: %d layers at sparsity %.4f in %.1f s (%d calibration tokens per block)",
        plan.method,
        plan.granularity,
        len(result.masks),
        result.achieved_sparsity(),
        prune_seconds,
        result.tokens,
    )
    scores["masked_before_finetune"] = scores["final"] = target.quality(net)
    log.info("final (one shot) %s", target.describe(scores["final"]))
    if other_ranks_stop_here():
        return target.metrics(scores)
    extra = {
        "prune_seconds": prune_seconds,
        "oneshot": {"calibration_tokens": result.tokens, "block_seconds": result.block_seconds},
    }
    return _report_and_export(
        cfg,
        plan,
        target,
        result,
        (net, dense, spec, origin),
        scores,
        output_dir,
        finalize="bake",
        steps=0,
        started=started,
        extra=extra,
    )


def _report_and_export(
    cfg: DictConfig,
    plan: PruningPlan,
    target: PruningTarget,
    masks: Any,
    models: tuple[nn.Module, nn.Module, dict, str],
    scores: dict[str, dict[str, float]],
    output_dir: Path,
    *,
    finalize: str,
    steps: int,
    started: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """The report (cost, latency, quality) and the export of the final model."""
    final, dense, spec, origin = models
    latency = cfg.task.latency
    profile = profile_with(latency, dense, final, target.make_input)
    report = pruning_report(
        plan,
        masks,
        batches=list(latency.batches),
        memory_format=latency.memory_format,
        finalize=finalize,
        origin=origin,
        profile=profile,
        scores=target.report_scores(scores),
        steps=steps,
        started=started,
    )
    report.update(target.report_extra(scores))
    report.update(extra or {})
    if latency.get("onnxruntime", False):
        report["onnxruntime"] = _onnx_latency(latency, dense, final, target)
    final_scores = target.report_scores({"final": scores["final"]})
    return write_pruning_outputs(
        output_dir,
        final,
        spec,
        report,
        target.metrics(scores),
        {
            **{name: values["final"] for name, values in final_scores.items()},
            "method": plan.method,
            "granularity": str(masks.granularity),
        },
        example_inputs=target.check_inputs,
    )


def _onnx_latency(latency: Any, dense: nn.Module, final: nn.Module, target: PruningTarget) -> dict:
    """The dense and final models in onnxruntime, side by side: ``{"dense": {"batch_<b>": ms},
    "final": ..., "speedup": ...}``; or ``{"error": why}`` when either does not export (logged; the
    pruned model and the rest of the report are kept)."""
    try:
        dense_part, inputs, prepare = exportable(dense, target.check_inputs)
        final_part = exported_part(final)
        make_input = target.make_input
        if prepare is not None:  # a network that refines a classical fill: its refining part

            def make_input(batch: int) -> tuple[Tensor, ...]:
                return prepare(*target.make_input(batch))

        signature = signature_for(dense_part, inputs)
        times = onnx_latency_pair(
            dense_part,
            final_part,
            signature,
            make_input,
            batches=list(latency.batches),
            repeats=latency.repeats,
            warmup=latency.warmup,
        )
    except Exception as error:  # a runtime's failure must not lose the pruned model
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning("onnxruntime latency not measured: %s", reason)
        return {"error": reason}
    speedup = {b: times["dense"][b] / times["final"][b] for b in times["dense"]}
    return {**times, "speedup": speedup}
