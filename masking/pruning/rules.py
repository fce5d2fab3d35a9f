"""Per-layer channel rules: what removing a channel means for each layer type.

One :class:`LayerRule` per layer type says which parameter rows an output channel owns
(:meth:`~LayerRule.members`), whether the layer's channels on one side can be removed exactly and
why not (:meth:`~LayerRule.unsupported`), and how to remove them (:meth:`~LayerRule.shrink`), plus
what the tracer must know about the layer. The graph adapter (``masking.pruning.graph``),
verification (``masking.pruning.verify``) and compaction (``masking.pruning.compact``) look rules up
with :func:`rule_for`, the most specific registered class first; a layer without a rule is never
compacted. :func:`register` adds a rule for another layer type.

Example:
    >>> from masking.layers import PartialConv2d
    >>> type(rule_for(PartialConv2d(3, 8, 3))).__name__, type(rule_for(nn.Conv1d(3, 8, 3))).__name__
    ('PartialConvRule', 'ConvRule')
    >>> conv = nn.ConvTranspose2d(8, 4, 2)
    >>> [(m.param, m.dim, m.rows) for m in rule_for(conv).members("up", conv, [0, 2], [0, 1])]
    [('weight', 1, (0, 2)), ('bias', 0, (0, 2))]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..layers import GatedConv2d, PartialConv2d, VanillaConv2d
from .groups import CompactionError, Member

__all__ = [
    "RULES",
    "BatchNormRule",
    "ConvRule",
    "GatedConvRule",
    "LayerRule",
    "LinearRule",
    "PReLURule",
    "PartialConvRule",
    "VanillaConvRule",
    "gated_rows",
    "register",
    "rule_for",
    "shrink",
]


class LayerRule:
    """How channel removal treats one layer type. Subclasses are registered with :func:`register`.

    Attributes:
        roots: the layer writes new channels, so its output channels can start a group.
        opaque: its forward is ``(x, mask) -> (out, new_mask)`` or built from views and selects:
            the tracer sees it as one step from ``x`` to ``out``, so only ``x`` carries channels.
        custom_tracing: Torch-Pruning does not know the layer; the adapter tells it the layer's
            ``in_channels`` and ``out_channels``.
        input_dim: the dimension of the layer's input that indexes channels.
    """

    roots: ClassVar[bool] = False
    opaque: ClassVar[bool] = False
    custom_tracing: ClassVar[bool] = False
    input_dim: ClassVar[int] = 1

    def unsupported(self, name: str, module: nn.Module, side: str) -> str | None:
        """Why the channels this layer touches on ``side`` (``"out"`` or ``"in"``) cannot be
        removed exactly, or None."""
        return None

    def members(
        self, name: str, module: nn.Module, rows: Sequence[int], channels: Sequence[int]
    ) -> list[Member]:
        """The parameter rows that output channels ``rows`` (group channels ``channels``) own."""
        return []

    def shrink(self, module: nn.Module, *, out_drop: list[int], in_drop: list[int]) -> None:
        """Remove output channels ``out_drop`` and input channels ``in_drop``, in place."""
        raise NotImplementedError


RULES: dict[type[nn.Module], LayerRule] = {}

_Rule = TypeVar("_Rule", bound=type[LayerRule])


def register(*types: type[nn.Module]) -> Callable[[_Rule], _Rule]:
    """Class decorator: the rule applies to ``types`` and their subclasses (unless a subclass has
    its own rule)."""
    for layer_type in types:
        if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
            raise TypeError(f"register takes nn.Module subclasses, got {layer_type!r}")

    def decorate(rule: _Rule) -> _Rule:
        instance = rule()
        for layer_type in types:
            RULES[layer_type] = instance
        return rule

    return decorate


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule of the most specific registered class of ``module``, or None."""
    for cls in type(module).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


def gated_rows(out_channels: int, groups: int, channels: Sequence[int]) -> tuple[list, list]:
    """Weight rows of a :class:`GatedConv2d`'s gated output channels: (feature rows, gate rows).

    Per convolution group the weight holds ``out_channels / groups`` feature filters, then as many
    gate filters.
    """
    per_group = out_channels // groups
    features = [(c // per_group) * 2 * per_group + c % per_group for c in channels]
    return features, [row + per_group for row in features]


def _members(name: str, params: list[tuple[str, int, list[int], list[int]]]) -> list[Member]:
    return [Member(name, p, d, tuple(r), tuple(c)) for p, d, r, c in params]


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters(), torch.empty(0)).device


def _kept(size: int, drop: list[int], device: torch.device) -> Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[drop] = False
    return keep.nonzero().flatten().to(device)


def _select(module: nn.Module, name: str, dim: int, index: Tensor) -> None:
    """Replace a parameter or buffer by its entries at ``index`` along ``dim``."""
    old = getattr(module, name)
    if old is None:
        return
    new = old.detach().index_select(dim, index.to(old.device))
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        setattr(module, name, new)


def _shrink_matrix(
    module: nn.Module,
    sizes: tuple[str, str],
    dims: tuple[int, int],
    out_drop: list[int],
    in_drop: list[int],
) -> None:
    """A conv or linear layer: drop weight rows (and bias) for outputs, columns for inputs.

    ``sizes`` names the layer's (output, input) size attributes, ``dims`` the weight's dimensions.
    """
    device = _device(module)
    out_size, in_size = sizes
    if out_drop:
        index = _kept(getattr(module, out_size), out_drop, device)
        _select(module, "weight", dims[0], index)
        _select(module, "bias", 0, index)
        setattr(module, out_size, len(index))
    if in_drop:
        _select(module, "weight", dims[1], _kept(getattr(module, in_size), in_drop, device))
        setattr(module, in_size, getattr(module, in_size) - len(in_drop))


def _depthwise(conv: nn.modules.conv._ConvNd) -> bool:
    """One input channel per output channel: input and output channels are coupled one to one."""
    same = conv.groups == conv.in_channels == conv.out_channels
    return conv.groups > 1 and same and not conv.transposed


@register(nn.modules.conv._ConvNd)
class ConvRule(LayerRule):
    """Convolutions (plain, transposed, depthwise): output rows of the weight (dim 1 when
    transposed) and bias, input columns. Grouped (not depthwise) convolutions are left out: their
    groups would have to lose channels in step."""

    roots = True

    def unsupported(self, name: str, module: nn.Module, side: str) -> str | None:
        if module.groups != 1 and not _depthwise(module):
            return f"{name!r} is a grouped convolution (groups={module.groups})"
        return None

    def members(self, name, module, rows, channels):
        params = [("weight", 1 if module.transposed else 0, list(rows), list(channels))]
        if module.bias is not None:
            params.append(("bias", 0, list(rows), list(channels)))
        return _members(name, params)

    def shrink(self, module, *, out_drop, in_drop):
        if module.groups > 1:  # depthwise: the tracer reports its coupled channels on one side
            index = _kept(module.out_channels, out_drop, _device(module))
            _select(module, "weight", 0, index)
            _select(module, "bias", 0, index)
            module.out_channels = module.in_channels = module.groups = len(index)
            return
        dims = (1, 0) if module.transposed else (0, 1)
        _shrink_matrix(module, ("out_channels", "in_channels"), dims, out_drop, in_drop)


@register(PartialConv2d)
class PartialConvRule(ConvRule):
    """A partial convolution: a convolution whose pixel mask the tracer must not see. With
    ``multi_channel`` its renormalisation counts input channels, so its inputs cannot shrink."""

    opaque = True

    def unsupported(self, name: str, module: nn.Module, side: str) -> str | None:
        reason = super().unsupported(name, module, side)
        if reason is None and side == "in" and module.multi_channel:
            reason = (
                f"{name!r} is a multi-channel partial convolution, whose renormalisation "
                "counts its input channels"
            )
        return reason


@register(VanillaConv2d)
class VanillaConvRule(ConvRule):
    """The masked-layer interface over a plain convolution: only ``x`` carries channels."""

    opaque = True


@register(GatedConv2d)
class GatedConvRule(LayerRule):
    """A gated convolution: every output channel owns a feature row and a gate row of the weight
    (and bias), which go together."""

    roots = True
    opaque = True
    custom_tracing = True

    def unsupported(self, name: str, module: nn.Module, side: str) -> str | None:
        if module.groups != 1:
            return f"{name!r} is a grouped gated convolution (groups={module.groups})"
        return None

    def members(self, name, module, rows, channels):
        features, gates = gated_rows(module.out_channels, module.groups, list(rows))
        both = list(channels) + list(channels)
        params = [("weight", 0, features + gates, both)]
        if module.bias is not None:
            params.append(("bias", 0, features + gates, both))
        return _members(name, params)

    def shrink(self, module, *, out_drop, in_drop):
        device = _device(module)
        if out_drop:
            kept = _kept(module.out_channels, out_drop, device).tolist()
            features, gates = gated_rows(module.out_channels, module.groups, kept)
            rows = torch.tensor(features + gates, device=device)
            _select(module, "weight", 0, rows)
            _select(module, "bias", 0, rows)
            module.out_channels = len(kept)
        if in_drop:
            _select(module, "weight", 1, _kept(module.in_channels, in_drop, device))
            module.in_channels -= len(in_drop)


@register(nn.Linear)
class LinearRule(LayerRule):
    """A linear layer: output rows and bias; input columns (after a flatten, all the features
    of a channel)."""

    roots = True
    input_dim = -1

    def members(self, name, module, rows, channels):
        params = [("weight", 0, list(rows), list(channels))]
        if module.bias is not None:
            params.append(("bias", 0, list(rows), list(channels)))
        return _members(name, params)

    def shrink(self, module, *, out_drop, in_drop):
        _shrink_matrix(module, ("out_features", "in_features"), (0, 1), out_drop, in_drop)


@register(nn.modules.batchnorm._BatchNorm)
class BatchNormRule(LayerRule):
    """A batch norm couples input and output channels one to one: its scale and shift are members
    (without affine parameters it has no rows to zero), its running statistics shrink too."""

    def unsupported(self, name: str, module: nn.Module, side: str) -> str | None:
        if side != "out":  # pragma: no cover - batch norm couples input and output
            return f"{name!r} reads the channels without writing them"
        return None

    def members(self, name, module, rows, channels):
        if not module.affine:
            return []
        rows, channels = list(rows), list(channels)
        return _members(name, [("weight", 0, rows, channels), ("bias", 0, rows, channels)])

    def shrink(self, module, *, out_drop, in_drop):
        index = _kept(module.num_features, out_drop, _device(module))
        for name in ("weight", "bias", "running_mean", "running_var"):
            _select(module, name, 0, index)
        module.num_features = len(index)


@register(nn.PReLU)
class PReLURule(LayerRule):
    """A PReLU: one slope per channel (a member), or one slope shared by all that stays."""

    def members(self, name, module, rows, channels):
        if module.num_parameters == 1:
            return []
        return _members(name, [("weight", 0, list(rows), list(channels))])

    def shrink(self, module, *, out_drop, in_drop):
        if module.num_parameters == 1:
            return
        index = _kept(module.num_parameters, out_drop, _device(module))
        _select(module, "weight", 0, index)
        module.num_parameters = len(index)


def shrink(module: nn.Module, *, out_drop: list[int], in_drop: list[int]) -> None:
    """Remove output channels ``out_drop`` and input channels ``in_drop`` of one layer by its rule.

    Raises:
        CompactionError: the layer has no rule.
    """
    rule = rule_for(module)
    if rule is None:
        raise CompactionError(f"{type(module).__name__} cannot be compacted")
    rule.shrink(module, out_drop=out_drop, in_drop=in_drop)
