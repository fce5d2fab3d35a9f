"""The classification LightningModule used to train dense networks and fine-tune pruned ones."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from masking.pruning import Pruner, mask_sources

OptimizerFactory = Callable[[Iterable], Optimizer]
LR_SCHEDULES = ("constant", "cosine", "onecycle")


class ClassificationTask(pl.LightningModule):
    """Cross-entropy training of ``net``, optionally under a :class:`~masking.pruning.Pruner`.

    With a pruner, every optimizer step first sets the masks for that step (the schedule drives the
    sparsity), the loss gains the estimator's penalty, and the estimator's own parameters (scores,
    gates, thresholds) are trained by ``mask_optimizer`` (Adam by default: their gradients have no
    natural scale) while the weights keep ``optimizer``.

    Args:
        net: the classifier (already carrying the pruner's masks, if any).
        optimizer: factory for the weights' optimizer, called with the parameters.
        lr_schedule: ``"cosine"`` (to 0 over the run's steps), ``"onecycle"`` (a quarter warm-up to
            the optimizer's lr, then down: trains a dense net from scratch in a few epochs) or
            ``"constant"``.
        pruner: the pruner whose masks are attached to ``net``.
        mask_optimizer: factory for the estimator parameters' optimizer.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        optimizer: OptimizerFactory,
        lr_schedule: str = "cosine",
        pruner: Pruner | None = None,
        mask_optimizer: OptimizerFactory | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}"
            )
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.net = net
        self.optimizer_factory = optimizer
        self.mask_optimizer_factory = mask_optimizer or (
            lambda params: torch.optim.Adam(params, lr=1e-2)
        )
        self.lr_schedule = lr_schedule
        self.pruner = pruner
        self.label_smoothing = label_smoothing
        self.automatic_optimization = False
        # optimizer steps taken under the pruner: drives its schedule, restored on resume
        self.register_buffer("prune_step", torch.zeros((), dtype=torch.long))
        # sums over every image of every process (a mean of per-process means would weight the
        # processes' shares of the validation set equally)
        self.val_acc, self.val_loss = MeanMetric(), MeanMetric()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self):
        if self.pruner is None:
            masks, weights = [], [p for p in self.net.parameters() if p.requires_grad]
        else:
            masks, weights = self.pruner.mask_parameters(), self.pruner.weight_parameters()
        optimizers = [self.optimizer_factory(weights)]
        if masks:
            optimizers.append(self.mask_optimizer_factory(masks))
        if self.lr_schedule == "constant":
            return optimizers
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        if self.lr_schedule == "onecycle":
            if steps < 2:
                return optimizers  # no cycle in one step
            # a quarter warm-up, but at least 1.5 steps: OneCycleLR divides by the warm-up's
            # length, which is zero for short runs (a debug run, a sweep's small budget)
            warmup = max(0.25, 1.5 / steps)
            schedulers = [
                torch.optim.lr_scheduler.OneCycleLR(
                    o,
                    max_lr=[g["lr"] for g in o.param_groups],
                    total_steps=steps,
                    pct_start=warmup,
                )
                for o in optimizers
            ]
        else:
            schedulers = [
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps) for o in optimizers
            ]
        return optimizers, schedulers

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        if self.pruner is not None:
            sparsity = self.pruner.step(int(self.prune_step))
            self.log("prune/sparsity", sparsity, on_step=True, on_epoch=False)
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        total = loss
        if self.pruner is not None and self.pruner.penalty_weight:
            penalty = self.pruner.penalty()
            total = loss + penalty
            self.log("train/penalty", penalty, on_step=True, on_epoch=True, sync_dist=True)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        for opt in optimizers:
            opt.step()
        schedulers = self.lr_schedulers()
        if schedulers is not None:
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()
        self.prune_step += 1
        acc = (logits.argmax(1) == labels).float().mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        self.log("train/acc", acc, on_step=False, on_epoch=True, sync_dist=True)
        return total

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images)
        self.val_loss.update(F.cross_entropy(logits, labels, reduction="none"))
        self.val_acc.update((logits.argmax(1) == labels).float())
        self.log("val/loss", self.val_loss, on_epoch=True)
        self.log("val/acc", self.val_acc, prog_bar=True, on_epoch=True)


@torch.no_grad()
def evaluate(net: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy (%) of ``net`` over ``loader`` in evaluation mode."""
    training = net.training
    net.eval()
    correct = total = 0
    try:
        for images, labels in loader:
            logits = net(images.to(device))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            total += len(labels)
    finally:
        net.train(training)
    if total == 0:
        raise ValueError("the evaluation loader is empty")
    return 100.0 * correct / total


@torch.no_grad()
def recalibrate_batchnorm(
    net: nn.Module,
    loader: Iterable,
    batches: int,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> int:
    """Re-estimate BatchNorm running statistics with the masks in their evaluation form.

    Stochastic masks (hard-concrete gates) are sampled during training, so the running statistics
    describe noisy networks while evaluation uses the deterministic gates. This runs ``batches``
    training batches (no labels, no gradients) with the masks deterministic and the BatchNorm layers
    accumulating a plain average. ``forward(net, batch)`` runs one batch (default: ``net(batch[0])``,
    an ``(images, labels)`` loader). Returns the number of batches used.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    training = net.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    net.train()
    for source in mask_sources(net):
        source.eval()
    used = 0
    try:
        for batch in loader:
            if used >= batches:
                break
            forward(net, batch) if forward is not None else net(batch[0])
            used += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.train(training)
    return used
