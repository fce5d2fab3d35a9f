"""Dependency-aware channel groups: the parameter rows that must be removed together.

Removing output channel ``c`` of a convolution also removes row ``c`` of the batch norm after it,
input column ``c`` of every layer that reads it, and, through residual additions and
concatenations, the matching rows of every other layer whose output is summed or stacked with it.
Torch-Pruning's ``DependencyGraph`` traces those couplings from one forward pass; this module turns
its groups into plain records (:class:`ChannelGroup`) and keeps only the groups that compaction can
remove exactly: zeroing a group's member rows for some channels ("masked model") and physically
removing those channels (``masking.pruning.compact``) give the same outputs.

A group is left out when removing its channels would change the model's output shape, when it
touches an ``ignored`` module, or when that equivalence cannot be guaranteed: grouped (not
depthwise) convolutions, normalisations that mix channels (LayerNorm, GroupNorm), channel
splits/slices, multi-channel partial convolutions (whose renormalisation counts input channels),
and any group whose channels a forward pass with all member rows zeroed does not silence at every
layer that reads them (an activation with ``f(0) != 0`` such as a sigmoid, a batch norm without
affine parameters, a coupling the tracer missed). Excluded groups are logged at DEBUG level with the
reason.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..layers import GatedConv2d, PartialConv2d, VanillaConv2d

__all__ = ["ChannelGroup", "CompactionError", "Member", "channel_groups"]

logger = logging.getLogger(__name__)

# Layers whose forward is ``(x, mask) -> (out, new_mask)``: only ``x`` carries channels.
_MASKED_LAYERS = (PartialConv2d, VanillaConv2d, GatedConv2d)


class CompactionError(RuntimeError):
    """A model, layer or channel selection that cannot be compacted; the message names the layer."""


@dataclass(frozen=True)
class Member:
    """Rows of one parameter that belong to a channel group.

    Attributes:
        module: qualified name of the module (as in ``model.named_modules()``).
        param: ``"weight"`` or ``"bias"``.
        dim: the dimension of the parameter that indexes channels.
        rows: indices along ``dim``.
        channels: for each entry of ``rows``, the channel of the group it belongs to.
    """

    module: str
    param: str
    dim: int
    rows: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together, numbered by the output channels of ``root``.

    Attributes:
        root: qualified name of the module whose output channels define the numbering.
        size: number of channels in the group.
        members: the output-side parameters: zeroing the rows of channel ``c`` in every member
            silences channel ``c`` everywhere it flows. Input-side parameters (the next layer's
            ``dim 1``) are not members.
        modules: every module the group touches (output and input side), in model order.
    """

    root: str
    size: int
    members: tuple[Member, ...]
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Touch:
    """One module's part in a group: which of its channel indices map to which group channel.

    ``side`` is ``"out"`` for the output side (including layers that couple input and output
    channels one to one: batch norm, depthwise convolution, PReLU) and ``"in"`` for layers that
    read the group's channels. ``idxs`` index the module's output channels (``"out"``) or its input
    features (``"in"``; after a flatten, one channel spans several features).
    """

    name: str
    module: nn.Module
    side: str
    idxs: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class TracedGroup:
    """A compactable group with the touches ``compact`` needs to remove its channels."""

    group: ChannelGroup
    touches: tuple[Touch, ...]


@dataclass(frozen=True)
class Analysis:
    """Result of :func:`analyse`: compactable groups and, per excluded root, the reason."""

    groups: tuple[TracedGroup, ...]
    excluded: dict[str, str]
    output_shapes: tuple[tuple[int, ...], ...]


def channel_groups(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Any],
    *,
    ignored: Iterable[str | type] = (),
) -> list[ChannelGroup]:
    """The model's compactable channel groups, in the order of their roots in ``named_modules()``.

    The model is traced once with ``example_inputs`` (and once more per group to check that zeroing
    the members silences the channels; see the module docstring for what is left out). Training
    flags and ``requires_grad`` are restored. A model with ``torch.nn.utils.parametrize``
    parametrizations is analysed on a copy with the parametrizations baked in; the names are the
    same.

    Args:
        model: the network (any ``nn.Module``; our masked layers are understood).
        example_inputs: a tensor, or a tuple of positional arguments (``(image, mask)`` for the
            inpainting networks). Small inputs suffice; their values do not matter.
        ignored: modules to leave alone, by qualified name (a name also covers its submodules) or by
            type; every group that touches one is left out.

    Returns:
        The groups, each with its members (output-side parameter rows) and touched modules.

    Raises:
        ValueError: ``ignored`` names a module the model does not have.
        CompactionError: the model cannot be run on ``example_inputs`` or traced.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> [(g.root, g.size, g.modules) for g in channel_groups(net, torch.rand(1, 3, 8, 8))]
        [('0', 8, ('0', '1', '3'))]
    """
    if parametrized_module(model) is not None:
        model = copy.deepcopy(model)
        for module in list(model.modules()):
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return [traced.group for traced in analyse(model, example_inputs, ignored=ignored).groups]


def analyse(
    model: nn.Module, example_inputs: Tensor | Sequence[Any], *, ignored: Iterable[str | type] = ()
) -> Analysis:
    """Trace ``model`` and return its compactable groups with their touches (for ``compact``).

    Args:
        model: the network, without parametrizations.
        example_inputs: a tensor or a tuple of positional arguments.
        ignored: module names or types whose groups are left out.

    Returns:
        The compactable groups, the reason each other root was left out, and the output shapes.
    """
    args = as_args(example_inputs)
    is_ignored = _ignore_rule(model, ignored)
    names = {module: name for name, module in model.named_modules()}
    with _tracing(model):
        graph, outputs = _trace(model, args)
        output_fns = {t.grad_fn for t in outputs if t.grad_fn is not None}
        candidates: list[TracedGroup] = []
        excluded: dict[str, str] = {}
        covered: set[nn.Module] = set()
        written: set[tuple[nn.Module, int]] = set()
        for root_name, root in model.named_modules():
            if root in covered or root not in graph.module2node:
                continue
            if not isinstance(root, (nn.modules.conv._ConvNd, nn.Linear, GatedConv2d)):
                continue
            touches, reason = _group_touches(graph, root, names, output_fns)
            outs = {(t.module, i) for t in touches if t.side == "out" for i in t.idxs}
            covered.update(module for module, _ in outs)
            if reason is None and outs & written:
                reason = "its channels overlap an earlier group's"
            written |= outs
            if reason is None:
                reason = _unsupported(touches, is_ignored)
            if reason is None:
                candidates.append(TracedGroup(_make_group(root_name, touches, names), touches))
            else:
                excluded[root_name] = reason
    with evaluating(model):
        excluded |= _silencing_failures(model, args, candidates)
    groups = [traced for traced in candidates if traced.group.root not in excluded]
    for root_name, reason in excluded.items():
        logger.debug("channel group %r left out: %s", root_name, reason)
    shapes = tuple(tuple(t.shape) for t in outputs)
    return Analysis(groups=tuple(groups), excluded=excluded, output_shapes=shapes)


def as_args(example_inputs: Tensor | Sequence[Any]) -> tuple[Any, ...]:
    """Positional arguments from a tensor or a tuple/list of arguments."""
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        "example_inputs must be a tensor or a tuple of positional arguments, got "
        f"{type(example_inputs).__name__}"
    )


def flatten_outputs(output: Any) -> list[Tensor]:
    """Every tensor in a (nested) tensor / tuple / list / dict output, in order."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in flatten_outputs(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in flatten_outputs(item)]
    return []


def gated_rows(out_channels: int, groups: int, channels: Sequence[int]) -> tuple[list, list]:
    """Weight rows of a :class:`GatedConv2d`'s gated output channels: (feature rows, gate rows).

    Per convolution group the weight holds ``out_channels / groups`` feature filters, then as many
    gate filters.
    """
    per_group = out_channels // groups
    features = [(c // per_group) * 2 * per_group + c % per_group for c in channels]
    return features, [row + per_group for row in features]


def parametrized_module(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            return name or type(model).__name__
    return None


def _ignore_rule(model: nn.Module, ignored: Iterable[str | type]):
    ignored = list(ignored)
    names = [item for item in ignored if isinstance(item, str)]
    types = tuple(item for item in ignored if isinstance(item, type))
    bad = [item for item in ignored if not isinstance(item, (str, type))]
    if bad:
        raise TypeError(f"ignored must hold module names or types, got {bad[0]!r}")
    known = {name for name, _ in model.named_modules()}
    for name in names:
        if name not in known:
            raise ValueError(f"ignored names {name!r}, which is not a module of the model")

    def is_ignored(name: str, module: nn.Module) -> bool:
        if types and isinstance(module, types):
            return True
        return any(name == prefix or name.startswith(prefix + ".") for prefix in names)

    return is_ignored


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block; every module's training flag is restored afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def _tracing(model: nn.Module) -> Iterator[None]:
    """Eval mode, autograd on and every parameter requiring grad (the tracer follows grad_fns);
    masked layers expose only ``x`` to the tracer, so the pixel mask never couples channels."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    hooks = [
        module.register_forward_hook(_hide_internals, with_kwargs=True, prepend=True)
        for module in model.modules()
        if isinstance(module, _MASKED_LAYERS)
    ]
    try:
        for p in frozen:
            p.requires_grad_(True)
        with evaluating(model), torch.enable_grad():
            yield
    finally:
        for p in frozen:
            p.requires_grad_(False)
        for hook in hooks:
            hook.remove()


class _Opaque(torch.autograd.Function):
    """``out`` as one autograd node whose inputs are ``x`` and the layer's parameters (never
    differentiated)."""

    @staticmethod
    def forward(ctx, out: Tensor, x: Tensor, *params: Tensor) -> Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # pragma: no cover - tracing never runs backward
        return (None, None, *(None for _ in ctx.needs_input_grad[2:]))


def _hide_internals(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    # A gated convolution computes its output through views, a select and a sigmoid, which the
    # tracer would see as separate operations (losing the channel mapping); a partial convolution's
    # op also takes the mask, which must not couple channels. One node from x (and the layer's own
    # parameters) to out makes each masked layer a single step of the graph, like a convolution.
    x = args[0] if args else kwargs.get("x")
    if not isinstance(x, Tensor):
        return None
    params = list(module.parameters(recurse=False))
    if isinstance(output, tuple):
        return (_Opaque.apply(output[0].detach(), x, *params), *output[1:])
    return _Opaque.apply(output.detach(), x, *params)


class _GatedConvPruner(tp.pruner.BasePruningFunc):
    """Tells the tracer how many channels a :class:`GatedConv2d` reads and writes.

    The removal itself is done by ``masking.pruning.compact``; distinct in/out methods mark the
    layer's input and output channels as independent.
    """

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise NotImplementedError("channels are removed by masking.pruning.compact")

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise NotImplementedError("channels are removed by masking.pruning.compact")

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels


def _trace(model: nn.Module, args: tuple[Any, ...]) -> tuple[tp.DependencyGraph, list[Tensor]]:
    captured: list[Any] = []

    def forward(module: nn.Module, inputs: tuple[Any, ...]) -> Any:
        captured.append(module(*inputs))
        return captured[-1]

    def traced_outputs(output: Any) -> list[Tensor]:
        return [t for t in flatten_outputs(output) if t.grad_fn is not None]

    pruner = _GatedConvPruner()
    gated_types = {type(m) for m in model.modules() if isinstance(m, GatedConv2d)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=args,
                forward_fn=forward,
                output_transform=traced_outputs,
                customized_pruners=dict.fromkeys(gated_types, pruner),
                verbose=False,
            )
    except Exception as exc:
        what = "run" if not captured else "trace"
        first_line = next(iter(str(exc).splitlines()), "")
        raise CompactionError(
            f"cannot {what} {type(model).__name__} on the example inputs "
            f"({type(exc).__name__}: {first_line})"
        ) from exc
    return graph, flatten_outputs(captured[0])


def _side(graph: tp.DependencyGraph, handler) -> str:
    return "out" if graph.is_out_channel_pruning_fn(handler) else "in"


def _group_touches(
    graph: tp.DependencyGraph,
    root: nn.Module,
    names: dict[nn.Module, str],
    output_fns: set,
) -> tuple[tuple[Touch, ...], str | None]:
    """The touches of ``root``'s group and the reason to leave it out (or None)."""
    pruner = graph.get_pruner_of_module(root)
    size = pruner.get_out_channels(root)
    try:
        group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(size)))
    except Exception as exc:
        touch = Touch(names[root], root, "out", tuple(range(size)), tuple(range(size)))
        return (touch,), f"the tracer failed on it ({type(exc).__name__}: {exc})"
    touches: list[Touch] = []
    reason = None
    for item in group:
        node = item.dep.target
        target, side = node.module, _side(graph, item.dep.handler)
        if (side == "out" and node.grad_fn in output_fns) or node.type == tp.ops.OPTYPE.OUTPUT:
            reason = reason or "its channels reach a model output"
        if node.type in (
            tp.ops.OPTYPE.SPLIT,
            tp.ops.OPTYPE.UNBIND,
            tp.ops.OPTYPE.SLICE,
            tp.ops.OPTYPE.EXPAND,
        ):
            reason = reason or f"its channels are split or sliced by position ({node.grad_fn})"
        if not isinstance(target, nn.Module) or target not in names:
            if node.type == tp.ops.OPTYPE.PARAMETER:
                reason = reason or "it touches a parameter outside a supported layer"
            continue  # the tracer's stand-ins for functions (add, cat, flatten, ...)
        roots = list(item.root_idxs)
        idxs = list(item.idxs)
        if any(r is None for r in roots) or len(roots) != len(idxs):
            reason = reason or f"the tracer lost the channel numbering at {names[target]!r}"
            continue
        touches.append(
            Touch(names[target], target, side, tuple(int(i) for i in idxs), tuple(roots))
        )
    return tuple(touches), reason


def _conv_kind(conv: nn.Module) -> str:
    """``plain`` (groups 1), ``depthwise`` (one input per output channel) or ``grouped``."""
    if conv.groups == 1:
        return "plain"
    if conv.groups == conv.in_channels == conv.out_channels and not getattr(conv, "transposed", 0):
        return "depthwise"
    return "grouped"


def _unsupported(touches: tuple[Touch, ...], is_ignored) -> str | None:
    """Why compaction cannot remove this group exactly, or None."""
    for touch in touches:
        name, module, side = touch.name, touch.module, touch.side
        if is_ignored(name, module):
            return f"it touches the ignored module {name!r}"
        if len(set(touch.idxs)) != len(touch.idxs):
            return f"it maps two channels onto one index of {name!r}"
        if isinstance(module, GatedConv2d):
            if module.groups != 1:
                return f"{name!r} is a grouped gated convolution (groups={module.groups})"
        elif isinstance(module, nn.modules.conv._ConvNd):
            kind = _conv_kind(module)
            if kind == "grouped":
                return f"{name!r} is a grouped convolution (groups={module.groups})"
            if side == "in" and isinstance(module, PartialConv2d) and module.multi_channel:
                return (
                    f"{name!r} is a multi-channel partial convolution, whose renormalisation "
                    "counts its input channels"
                )
        elif isinstance(module, nn.Linear):
            pass
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if side != "out":  # pragma: no cover - batch norm couples input and output
                return f"{name!r} reads the channels without writing them"
        elif isinstance(module, nn.PReLU):
            pass  # one slope per channel, or one shared slope that stays
        else:
            return f"{name!r} ({type(module).__name__}) cannot be compacted"
    return None


def _members_of(touch: Touch) -> list[Member]:
    module, rows, channels = touch.module, list(touch.idxs), list(touch.channels)
    params: list[tuple[str, int, list[int], list[int]]] = []
    if isinstance(module, GatedConv2d):
        features, gates = gated_rows(module.out_channels, module.groups, rows)
        params.append(("weight", 0, features + gates, channels + channels))
        if module.bias is not None:
            params.append(("bias", 0, features + gates, channels + channels))
    elif isinstance(module, nn.modules.conv._ConvNd):
        params.append(("weight", 1 if module.transposed else 0, rows, channels))
        if module.bias is not None:
            params.append(("bias", 0, rows, channels))
    elif isinstance(module, nn.Linear):
        params.append(("weight", 0, rows, channels))
        if module.bias is not None:
            params.append(("bias", 0, rows, channels))
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.affine:
            params += [("weight", 0, rows, channels), ("bias", 0, rows, channels)]
    elif isinstance(module, nn.PReLU) and module.num_parameters > 1:
        params.append(("weight", 0, rows, channels))
    return [Member(touch.name, p, d, tuple(r), tuple(c)) for p, d, r, c in params]


def _make_group(root: str, touches: tuple[Touch, ...], names: dict) -> ChannelGroup:
    order = {name: i for i, name in enumerate(names.values())}
    members = [m for touch in touches if touch.side == "out" for m in _members_of(touch)]
    members.sort(key=lambda m: (order[m.module], m.param))
    modules = sorted({touch.name for touch in touches}, key=order.__getitem__)
    size = len(next(t for t in touches if t.name == root and t.side == "out").idxs)
    return ChannelGroup(root=root, size=size, members=tuple(members), modules=tuple(modules))


def _silencing_failures(
    model: nn.Module, args: tuple[Any, ...], candidates: list[TracedGroup]
) -> dict[str, str]:
    """Groups whose channels a forward pass with their member rows zeroed does not silence.

    All groups are checked in one pass, each with a pseudo-random half of its channels zeroed (at
    least one): a reader must then see exact zeros at the zeroed channels' indices. Zeroing only
    part of every group keeps a coupling the tracer missed visible (the other group's copy of the
    channel is usually not zeroed). A failing group is left out and the others are checked again.

    Returns:
        Root name -> reason, for the groups that fail.
    """
    generator = torch.Generator().manual_seed(0)
    zeroed_channels: dict[str, set[int]] = {}
    for traced in candidates:
        pick = torch.rand(traced.group.size, generator=generator) < 0.5
        if not pick.any():
            pick[torch.randint(traced.group.size, (1,), generator=generator)] = True
        zeroed_channels[traced.group.root] = set(pick.nonzero().flatten().tolist())
    failures: dict[str, str] = {}
    remaining = list(candidates)
    while remaining:
        found = _silencing_pass(model, args, remaining, zeroed_channels)
        if not found:
            break
        failures |= found
        remaining = [t for t in remaining if t.group.root not in found]
    return failures


def _silencing_pass(
    model: nn.Module,
    args: tuple[Any, ...],
    candidates: list[TracedGroup],
    zeroed_channels: dict[str, set[int]],
) -> dict[str, str]:
    params = dict(model.named_parameters())
    zeroed: dict[str, Tensor] = {}
    for traced in candidates:
        channels = zeroed_channels[traced.group.root]
        for member in traced.group.members:
            key = f"{member.module}.{member.param}" if member.module else member.param
            rows = [r for r, c in zip(member.rows, member.channels) if c in channels]
            current = zeroed.get(key, params[key].detach())
            index = torch.tensor(rows, dtype=torch.long, device=current.device)
            zeroed[key] = current.index_fill(member.dim, index, 0)
    failures: dict[str, str] = {}
    called: set[tuple[str, str]] = set()

    def reader_hook(root: str, touch: Touch, idxs: list[int]):
        def hook(module: nn.Module, hook_args: tuple, kwargs: dict) -> None:
            x = hook_args[0] if hook_args else next(iter(kwargs.values()), None)
            if not isinstance(x, Tensor):
                return
            called.add((root, touch.name))
            dim = -1 if isinstance(module, nn.Linear) else 1
            index = torch.tensor(idxs, dtype=torch.long, device=x.device)
            largest = float(x.index_select(dim, index).abs().nan_to_num(float("inf")).max())
            if largest != 0 and root not in failures:
                failures[root] = (
                    f"zeroing its members leaves values up to {largest:.3g} at the input of "
                    f"{touch.name!r}"
                )

        return hook

    hooks = []
    for traced in candidates:
        root, channels = traced.group.root, zeroed_channels[traced.group.root]
        for touch in traced.touches:
            idxs = [i for i, c in zip(touch.idxs, touch.channels) if c in channels]
            if touch.side == "in" and idxs:
                hook = reader_hook(root, touch, idxs)
                hooks.append(
                    touch.module.register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
                )
    try:
        with torch.no_grad():
            torch.func.functional_call(model, zeroed, args, strict=False)
    except Exception as exc:
        reason = f"the model fails with its members zeroed ({type(exc).__name__}: {exc})"
        if len(candidates) == 1:
            return {candidates[0].group.root: reason.splitlines()[0]}
        for hook in hooks:
            hook.remove()
        hooks = []
        for traced in candidates:  # find the culprits one group at a time
            failures |= _silencing_pass(model, args, [traced], zeroed_channels)
        return failures
    finally:
        for hook in hooks:
            hook.remove()
    for traced in candidates:
        root = traced.group.root
        for touch in traced.touches:
            if touch.side == "in" and (root, touch.name) not in called and root not in failures:
                failures[root] = f"{touch.name!r} was not called with the group's channels"
    return failures
