"""Verification of traced channel groups: zeroing a group's members must silence its channels.

The tracer can miss a coupling, and some layers pass a zero channel on as something else (an
activation with ``f(0) != 0`` such as a sigmoid, a batch norm without affine parameters). A group
is only compactable when a forward pass with its member rows zeroed gives exact zeros at the
group's channels at the input of every layer that reads them; :func:`silencing_failures` runs that
check for all candidate groups at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .groups import Touch, TracedGroup
from .rules import rule_for

__all__ = ["silencing_failures"]


def silencing_failures(
    model: nn.Module, args: tuple[Any, ...], candidates: Sequence[TracedGroup]
) -> dict[str, str]:
    """Groups whose channels a forward pass with their member rows zeroed does not silence.

    All groups are checked in one pass, each with a pseudo-random half of its channels zeroed (at
    least one): a reader must then see exact zeros at the zeroed channels' indices. Zeroing only
    part of every group keeps a coupling the tracer missed visible (the other group's copy of the
    channel is usually not zeroed). A failing group is left out and the others are checked again.

    Args:
        model: the network, in the mode it is to be checked in (the adapter uses eval mode).
        args: its positional inputs.
        candidates: the traced groups to check.

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
        dim = rule_for(touch.module).input_dim

        def hook(module: nn.Module, hook_args: tuple, kwargs: dict) -> None:
            x = hook_args[0] if hook_args else next(iter(kwargs.values()), None)
            if not isinstance(x, Tensor):
                return
            called.add((root, touch.name))
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
