"""Compaction: physically remove dropped channels from every coupled layer, and check the result.

The hand-off from mask learning is a dense model whose dropped channels are zero in every member of
their group (``masking.pruning.graph``). Compaction removes those channels, each layer by its rule
(``masking.pruning.rules``): output rows of the layers that write them, input columns of the layers
that read them, batch-norm statistics, the feature and gate rows of gated convolutions. Removing a
zero channel does not change what the model computes, so :func:`check_equivalent` against the masked
model is the acceptance test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import rules
from .graph import analyse, as_args, evaluating, flatten_outputs, parametrized_module
from .groups import CompactionError, TracedGroup

__all__ = ["CompactionError", "check_equivalent", "compact"]


def compact(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Any],
    keep: Mapping[str, Tensor],
    *,
    ignored: Iterable[str | type] = (),
) -> nn.Module:
    """Remove the dropped channels of the given groups from ``model``, in place.

    The groups are those of ``channel_groups(model, example_inputs, ignored=ignored)``; groups not
    named in ``keep`` are untouched. Every coupled layer shrinks: convolutions (plain, depthwise,
    our partial/vanilla/gated ones), linear layers (after a flatten, all features of a channel),
    batch norms (parameters and running statistics). The compacted model is run once on
    ``example_inputs`` to check that it still works and that its output shapes are unchanged.

    Args:
        model: the network, with any parametrizations baked in first
            (``torch.nn.utils.parametrize.remove_parametrizations(..., leave_parametrized=True)``).
        example_inputs: a tensor, or a tuple of positional arguments.
        keep: group root name -> bool tensor of shape ``(size,)``; True keeps the channel.
        ignored: as in ``channel_groups``; must match the call that produced the groups.

    Returns:
        ``model``, compacted (the same object).

    Raises:
        ValueError: a key of ``keep`` is not a group root, or its mask has the wrong shape or dtype.
        CompactionError: the model has parametrizations, cannot be traced, a group would lose all its
            channels, or the compacted model fails on the example inputs (the model is then left
            partly compacted).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> keep = {"0": torch.tensor([True, False] * 4)}
        >>> compact(net, torch.rand(1, 3, 8, 8), keep)[3]
        Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1))
    """
    where = parametrized_module(model)
    if where is not None:
        raise CompactionError(
            f"{where!r} has parametrizations; bake them first with "
            "torch.nn.utils.parametrize.remove_parametrizations(module, name, "
            "leave_parametrized=True)"
        )
    analysis = analyse(model, example_inputs, ignored=ignored)
    groups = {traced.group.root: traced for traced in analysis.groups}
    dropped = {root: _dropped(root, mask, groups, analysis.excluded) for root, mask in keep.items()}
    removals: dict[tuple[nn.Module, str], set[int]] = {}
    names: dict[nn.Module, str] = {}
    for root, channels in dropped.items():
        if channels:
            _collect(groups[root], channels, removals, names)
    for module in dict.fromkeys(module for module, _ in removals):
        try:
            rules.shrink(
                module,
                out_drop=sorted(removals.get((module, "out"), ())),
                in_drop=sorted(removals.get((module, "in"), ())),
            )
        except Exception as exc:  # pragma: no cover - supported layers are checked by analyse
            raise CompactionError(f"cannot shrink {names[module]!r}: {exc}") from exc
    _check_still_runs(model, as_args(example_inputs), analysis.output_shapes)
    return model


def check_equivalent(
    reference: nn.Module,
    compacted: nn.Module,
    example_inputs: Tensor | Sequence[Any],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Check that ``compacted`` computes what ``reference`` (the masked model) computes.

    Both run in eval mode under ``torch.no_grad`` (their training flags are restored); every output
    tensor is compared elementwise with ``|a - b| <= atol + rtol * |a|``, NaNs matching NaNs.

    Args:
        reference: the model before compaction, dropped channels zeroed.
        compacted: the compacted model.
        example_inputs: a tensor, or a tuple of positional arguments.
        rtol, atol: tolerances (the defaults suit fp32: compaction changes summation order).

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        CompactionError: the outputs differ in number, shape or value (naming the output and the
            largest difference).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> check_equivalent(net, net, torch.rand(1, 3, 8, 8))
        0.0
    """
    args = as_args(example_inputs)
    with torch.no_grad(), evaluating(reference), evaluating(compacted):
        expected = flatten_outputs(reference(*args))
        actual = flatten_outputs(compacted(*args))
    if len(expected) != len(actual):
        raise CompactionError(
            f"the reference returns {len(expected)} tensors, the compacted model {len(actual)}"
        )
    largest = 0.0
    for i, (a, b) in enumerate(zip(expected, actual)):
        if a.shape != b.shape:
            raise CompactionError(
                f"output {i} has shape {tuple(a.shape)} in the reference and {tuple(b.shape)} in "
                "the compacted model"
            )
        if not a.is_floating_point():
            if not torch.equal(a, b.to(a.device)):
                raise CompactionError(f"output {i} ({a.dtype}) differs")
            continue
        a, b = a.double(), b.double().to(a.device)
        both_nan = a.isnan() & b.isnan()
        diff = (a - b).abs().masked_fill(both_nan, 0).nan_to_num(float("inf"))
        difference = float(diff.max()) if diff.numel() else 0.0
        allowed = atol + rtol * a.abs().masked_fill(both_nan, 0)
        if bool((diff > allowed).any()):
            raise CompactionError(
                f"output {i} differs: max abs difference {difference:.3g} "
                f"(rtol={rtol:g}, atol={atol:g})"
            )
        largest = max(largest, difference)
    return largest


def _dropped(
    root: str, mask: Tensor, groups: dict[str, TracedGroup], excluded: dict[str, str]
) -> list[int]:
    if root not in groups:
        if root in excluded:
            raise ValueError(f"keep[{root!r}]: not a compactable channel group ({excluded[root]})")
        known = ", ".join(list(groups)[:5]) + (", ..." if len(groups) > 5 else "")
        raise ValueError(f"keep has unknown group root {root!r} (roots: {known or 'none'})")
    size = groups[root].group.size
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (size,):
        got = (
            f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        )
        raise ValueError(f"keep[{root!r}] must be a bool tensor of shape ({size},), got {got}")
    if not bool(mask.any()):
        raise CompactionError(f"group {root!r} would lose all {size} channels; keep at least one")
    return (~mask).nonzero().flatten().tolist()


def _collect(
    traced: TracedGroup,
    channels: list[int],
    removals: dict[tuple[nn.Module, str], set[int]],
    names: dict[nn.Module, str],
) -> None:
    dropped = set(channels)
    for touch in traced.touches:
        idxs = {i for i, c in zip(touch.idxs, touch.channels) if c in dropped}
        if idxs:
            names[touch.module] = touch.name
            removals.setdefault((touch.module, touch.side), set()).update(idxs)


def _check_still_runs(
    model: nn.Module, args: tuple[Any, ...], shapes: tuple[tuple[int, ...], ...]
) -> None:
    try:
        with torch.no_grad(), evaluating(model):
            outputs = flatten_outputs(model(*args))
    except Exception as exc:
        first_line = next(iter(str(exc).splitlines()), "")
        raise CompactionError(
            f"the compacted model fails on the example inputs ({type(exc).__name__}: "
            f"{first_line}); it is left partly compacted"
        ) from exc
    got = tuple(tuple(t.shape) for t in outputs)
    if got != shapes:
        raise CompactionError(f"compaction changed the output shapes from {shapes} to {got}")
