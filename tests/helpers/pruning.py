"""Pruning test helpers: a small network and its training loop, channel selections and masked
references for compaction; a small ViT and a few steps of training its transformer masks."""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import Tensor, nn

from masking.pruning import ChannelGroup, Pruner


def randomise_norms(model: nn.Module) -> None:
    """Batch norms away from the identity, so a misaligned statistic changes the output."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)


def random_keep(groups: list[ChannelGroup], seed: int = 0) -> dict[str, Tensor]:
    """About half of every group's channels, at least one, seeded."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for group in groups:
        mask = torch.rand(group.size, generator=g) < 0.5
        mask[torch.randint(group.size, (1,), generator=g)] = True
        keep[group.root] = mask
    return keep


def masked_copy(model: nn.Module, groups: list[ChannelGroup], keep: dict[str, Tensor]):
    """The masked model: every member row of a dropped channel zeroed."""
    masked = copy.deepcopy(model)
    params = dict(masked.named_parameters())
    with torch.no_grad():
        for group in groups:
            for m in group.members:
                rows = [r for r, c in zip(m.rows, m.channels) if not keep[group.root][c]]
                params[f"{m.module}.{m.param}"].index_fill_(m.dim, torch.tensor(rows).long(), 0)
    return masked


def small_net() -> nn.Sequential:
    """Two convolutions (one with a batch norm) and a linear head, for 8 × 8 inputs of 4 channels."""
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


def train(net: nn.Module, pruner: Pruner, steps: int) -> None:
    """A few real optimisation steps on random data: weights by SGD, mask state by Adam."""
    mask_ids = {id(p) for p in pruner.mask_parameters()}
    weights = torch.optim.SGD([p for p in net.parameters() if id(p) not in mask_ids], lr=0.01)
    masks = torch.optim.Adam(pruner.mask_parameters(), lr=0.05) if mask_ids else None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, 8, 8, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    for step in range(steps):
        pruner.step(step)
        loss = nn.functional.cross_entropy(net(x), y) + pruner.penalty()
        weights.zero_grad()
        if masks:
            masks.zero_grad()
        loss.backward()
        weights.step()
        if masks:
            masks.step()


# a small torchvision ViT and two images for it: structure, not accuracy, is under test
IMAGES = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
SMALL_VIT = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 4, "hidden_dim": 32}


def small_vit(**extra) -> nn.Module:
    return torchvision.models.VisionTransformer(**SMALL_VIT, mlp_dim=64, num_classes=10, **extra)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-zero biases and no zero-initialised weights (torchvision's ViT head), so a misplaced row
    or column shows; the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 or not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def train_masks(model: nn.Module, pruner, steps: int, *, lr: float = 0.01) -> None:
    """``steps`` steps of a :class:`~masking.pruning.StructuredPruner` on :data:`IMAGES`: SGD on
    the weights at ``lr``, Adam at 0.05 on the estimator's scores or gates, its penalty added."""
    weights = torch.optim.SGD(pruner.weight_parameters(), lr=lr)
    masks = pruner.mask_parameters()
    optimizers = [weights, *([torch.optim.Adam(masks, lr=0.05)] if masks else [])]
    labels = torch.tensor([1, 7])
    for step in range(steps):
        pruner.step(step)
        loss = nn.functional.cross_entropy(model(IMAGES), labels) + pruner.penalty()
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
