"""A CIFAR-style ResNet: the small-image classifier the pruning job starts from."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..checks import check_int


def _check_ints(name: str, values: object, minimum: int) -> tuple[int, ...]:
    """A non-empty sequence of ints >= ``minimum`` (a list, tuple or Hydra ``ListConfig``)."""
    items = None
    if isinstance(values, Sequence) and not isinstance(values, str | bytes):
        items = tuple(values)
    if not items or any(
        isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in items
    ):
        shown = list(values) if isinstance(values, Sequence) else values
        raise ValueError(f"{name} must be a non-empty sequence of ints >= {minimum}, got {shown!r}")
    return items


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 conv → BN stages with an identity shortcut, or a 1×1 conv → BN one where the shape
    changes; ReLU after the first stage and after the sum.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the shortcut).

    Shape:
        - input: ``(B, in_channels, H, W)``
        - output: ``(B, out_channels, ⌈H / stride⌉, ⌈W / stride⌉)``
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet for small images (He et al., 2016, as adapted to CIFAR): a 3×3 stride-1 stem without
    max-pooling, stages of ``BasicBlock``, global average pooling and a linear classifier.

    The first stage keeps the resolution, every later stage halves it in its first block. Built from
    plain ``torch.nn`` modules with no in-place operations, so dependency-graph pruning tools
    (Torch-Pruning) can trace it and remove channels.

    Args:
        depths: blocks per stage.
        widths: output channels per stage, as many as ``depths``.
        num_classes: classifier outputs.
        in_channels: image channels.

    Shape:
        - input: ``(B, in_channels, H, W)``, any H, W >= 1 (32×32 is the design size).
        - output: ``(B, num_classes)`` logits.

    Example:
        >>> net = ResNet(depths=(1, 1), widths=(8, 16), num_classes=5)
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        depths = _check_ints("depths", depths, 1)
        widths = _check_ints("widths", widths, 1)
        if len(widths) != len(depths):
            raise ValueError(
                f"widths must have one entry per stage ({len(depths)}), got {list(widths)!r}"
            )
        check_int("num_classes", num_classes, 1)
        check_int("in_channels", in_channels, 1)
        self.depths, self.widths = depths, widths
        self.num_classes, self.in_channels = num_classes, in_channels

        self.stem = nn.Sequential(
            _conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages = []
        channels = widths[0]
        for i, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled features the classifier sees, ``(B, widths[-1])``."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be (B, {self.in_channels}, H, W), got {got}")
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def resnet18_cifar(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet:
    """ResNet-18 for 32×32 images: four stages of two blocks, widths ``width · (1, 2, 4, 8)``.

    With ``width=64`` and 10 classes it has 11,173,962 parameters.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        width: channels of the first stage.

    Returns:
        A freshly initialised ``ResNet``.

    Example:
        >>> net = resnet18_cifar(width=8)
        >>> net(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    check_int("width", width, 1)
    return ResNet(
        depths=(2, 2, 2, 2),
        widths=tuple(width * k for k in (1, 2, 4, 8)),
        num_classes=num_classes,
        in_channels=in_channels,
    )
