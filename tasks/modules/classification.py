"""The classification LightningModule: trains dense networks and fine-tunes pruned ones."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from masking.pruning import Pruner

from .masked_training import MaskedTraining
from .optim import (
    OptimizerFactory,
    SchedulerFactory,
    as_list,
    manual_step,
)


def _default_mask_optimizer(params: Iterable) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


class ClassificationModule(MaskedTraining):
    """Cross-entropy training of ``net``, optionally under a :class:`~masking.pruning.Pruner`.

    With a pruner, every optimizer step first sets the masks for that step (the schedule drives the
    sparsity), the loss gains the estimator's penalty, and the estimator's own parameters (scores,
    gates, thresholds) are trained by ``mask_optimizer`` (Adam at 1e-2 by default: their gradients
    have no natural scale) while the weights keep ``optimizer``.

    Args:
        net: the classifier (already carrying the pruner's masks, if any).
        optimizer: factory for the weights' optimizer, called with the parameters.
        scheduler: factory for each optimizer's learning-rate schedule (see
            :mod:`tasks.modules.optim`), stepped per optimizer step; None: constant.
        pruner: the pruner whose masks are attached to ``net``.
        mask_optimizer: factory for the estimator parameters' optimizer.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        pruner: Pruner | None = None,
        mask_optimizer: OptimizerFactory | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.mask_optimizer_factory = mask_optimizer or _default_mask_optimizer
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
        manual_step(self, total, as_list(self.optimizers()), as_list(self.lr_schedulers()))
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
