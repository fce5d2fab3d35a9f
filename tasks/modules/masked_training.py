"""What the modules that train a network under a pruner's masks share: resuming, train mode at
the start of fitting, and the optimizers of the weights and of the estimator's parameters."""

from __future__ import annotations

import pytorch_lightning as pl

from ..runtime.checkpoints import check_resume
from .optim import build_scheduler, run_steps


class MaskedTraining(pl.LightningModule):
    """Base of the classification and language-model modules. Subclasses set ``net``,
    ``pruner`` (or None), ``optimizer_factory``, ``mask_optimizer_factory`` and
    ``scheduler_factory``."""

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_resume(self, checkpoint)

    def on_fit_start(self) -> None:
        # whatever mode the network was handed over in (a graph tracer, an evaluation, may leave
        # it in eval mode), it trains in train mode: BatchNorm statistics and dropout depend on it
        self.net.train()

    def configure_optimizers(self):
        """The weights' optimizer (none when the pruner freezes them, as maskllm does: they get
        no gradient either), the estimator's parameters' optimizer, a schedule for each."""
        pruner = self.pruner
        if pruner is None:
            masks, weights = [], [p for p in self.net.parameters() if p.requires_grad]
        else:
            masks, weights = pruner.mask_parameters(), pruner.weight_parameters()
        optimizers = [self.optimizer_factory(weights)] if weights else []
        if masks:
            optimizers.append(self.mask_optimizer_factory(masks))
        if pruner is not None and pruner.freezes_weights:
            learned = {id(m) for m in masks}
            for parameter in pruner.model.parameters():
                if id(parameter) not in learned:
                    parameter.requires_grad_(False)
        steps = run_steps(self)
        schedulers = [build_scheduler(self.scheduler_factory, o, steps) for o in optimizers]
        schedulers = [s for s in schedulers if s is not None]
        return (optimizers, schedulers) if schedulers else optimizers
