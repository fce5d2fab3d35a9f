"""After fine-tuning: the masks at their target, and BatchNorm statistics that describe the
network as it will be evaluated."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from masking.pruning import Pruner, mask_sources

log = logging.getLogger(__name__)

BatchForward = Callable[[nn.Module, Any], Any]


@torch.no_grad()
def recalibrate_batchnorm(
    net: nn.Module, loader: Iterable, batches: int, forward: BatchForward | None = None
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


def settle_masks(
    pruner: Pruner,
    sparsity: float,
    loader: Iterable,
    batches: int,
    forward: BatchForward | None = None,
) -> None:
    """The masks at the target ``sparsity`` (a run cut short may end before the schedule does),
    and for sampled masks BatchNorm statistics re-estimated with the deterministic ones."""
    if pruner.current != sparsity:
        log.warning("fine-tuning ended before the schedule reached %s: setting it now", sparsity)
        pruner.set_sparsity(sparsity)
    if any(source.stochastic for source in pruner.sources):
        used = recalibrate_batchnorm(pruner.model, loader, batches, forward=forward)
        log.info("BatchNorm statistics re-estimated on %d batches with deterministic gates", used)
