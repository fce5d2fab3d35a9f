"""Dependency-aware channel groups: the parameter rows that must be removed together.

Removing output channel ``c`` of a convolution also removes row ``c`` of the batch norm after it,
input column ``c`` of every layer that reads it, and, through residual additions and
concatenations, the matching rows of every other layer whose output is summed or stacked with it.
Torch-Pruning's ``DependencyGraph`` traces those couplings from one forward pass; this module turns
its groups into plain records (:class:`ChannelGroup`) and keeps only the groups that compaction can
remove exactly: zeroing a group's member rows for some channels ("masked model") and physically
removing those channels (``masking.pruning.compact``) give the same outputs.

What each layer type contributes to a group, and whether it can shrink, is its rule
(``masking.pruning.rules``); this module is the adapter around the tracer. A group is left out when
removing its channels would change the model's output shape, when it touches an ``ignored`` module,
when it touches a layer without a rule or whose rule refuses it (grouped, not depthwise,
convolutions; multi-channel partial convolutions, whose renormalisation counts input channels;
normalisations that mix channels such as LayerNorm or GroupNorm have no rule), when channels are
split or sliced by position, or when verification (``masking.pruning.verify``) finds that a forward
pass with all member rows zeroed does not silence the channels at every layer that reads them.
Excluded groups are logged at DEBUG level with the reason.
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

from .groups import ChannelGroup, CompactionError, Member, Touch, TracedGroup
from .rules import rule_for
from .verify import silencing_failures

__all__ = ["ChannelGroup", "CompactionError", "Member", "channel_groups"]

logger = logging.getLogger(__name__)


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
            rule = rule_for(root)
            if rule is None or not rule.roots:
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
        excluded |= silencing_failures(model, args, candidates)
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
    layers whose rule is ``opaque`` expose only ``x`` to the tracer, so a pixel mask never couples
    channels."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    hooks = [
        module.register_forward_hook(_hide_internals, with_kwargs=True, prepend=True)
        for module in model.modules()
        if (rule := rule_for(module)) is not None and rule.opaque
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


class _ChannelCounts(tp.pruner.BasePruningFunc):
    """Tells the tracer how many channels a layer it does not know reads and writes (the layers
    whose rule has ``custom_tracing``, such as :class:`~masking.layers.GatedConv2d`).

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

    pruner = _ChannelCounts()
    custom_types = {
        type(m)
        for m in model.modules()
        if (rule := rule_for(m)) is not None and rule.custom_tracing
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=args,
                forward_fn=forward,
                output_transform=traced_outputs,
                customized_pruners=dict.fromkeys(custom_types, pruner),
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


def _unsupported(touches: tuple[Touch, ...], is_ignored) -> str | None:
    """Why compaction cannot remove this group exactly, or None."""
    for touch in touches:
        name, module = touch.name, touch.module
        if is_ignored(name, module):
            return f"it touches the ignored module {name!r}"
        if len(set(touch.idxs)) != len(touch.idxs):
            return f"it maps two channels onto one index of {name!r}"
        rule = rule_for(module)
        if rule is None:
            return f"{name!r} ({type(module).__name__}) cannot be compacted"
        reason = rule.unsupported(name, module, touch.side)
        if reason is not None:
            return reason
    return None


def _members_of(touch: Touch) -> list[Member]:
    return rule_for(touch.module).members(touch.name, touch.module, touch.idxs, touch.channels)


def _make_group(root: str, touches: tuple[Touch, ...], names: dict) -> ChannelGroup:
    order = {name: i for i, name in enumerate(names.values())}
    members = [m for touch in touches if touch.side == "out" for m in _members_of(touch)]
    members.sort(key=lambda m: (order[m.module], m.param))
    modules = sorted({touch.name for touch in touches}, key=order.__getitem__)
    size = len(next(t for t in touches if t.name == root and t.side == "out").idxs)
    return ChannelGroup(root=root, size=size, members=tuple(members), modules=tuple(modules))
