"""``torch.compile(fullgraph=True)`` against eager, forward and backward, for the op and network
tests: the same outputs, the same gradients for every parameter and input, the same buffer updates."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tests.oracle import tolerance


def assert_compiles_like_eager(
    fn: Callable | nn.Module, inputs: Sequence[object], *, backend: str
) -> None:
    """Call ``fn(*inputs)`` eagerly and compiled with ``fullgraph=True`` (a graph break fails), then
    pull one random cotangent back through both.

    A module runs eagerly on a deep copy, so both start from the same parameters and buffers.
    Floating-point results are compared relative to the largest magnitude of the eager one, within
    the tolerance of its dtype (inductor may reorder a reduction); other results must be equal.
    At least one tensor must receive a gradient, and each one eager gives a gradient must get one.
    """
    torch._dynamo.reset()  # a fresh cache: earlier tests' graphs count towards recompile limits
    compiled_fn = torch.compile(fn, fullgraph=True, backend=backend)
    eager_fn = copy.deepcopy(fn) if isinstance(fn, nn.Module) else fn
    eager_inputs, compiled_inputs = _leaves(inputs), _leaves(inputs)
    eager_out = _flat(eager_fn(*eager_inputs))
    compiled_out = _flat(compiled_fn(*compiled_inputs))
    assert len(eager_out) == len(compiled_out)
    for i, (got, want) in enumerate(zip(compiled_out, eager_out)):
        _assert_same(got, want, f"output {i}")
    if isinstance(fn, nn.Module):
        for (name, got), (_, want) in zip(fn.named_buffers(), eager_fn.named_buffers()):
            _assert_same(got, want, f"buffer {name}")

    g = torch.Generator().manual_seed(0)
    cotangents = [
        torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)
        if isinstance(o, Tensor) and o.requires_grad
        else None
        for o in eager_out
    ]
    eager_grads = _grads(eager_fn, eager_inputs, eager_out, cotangents)
    compiled_grads = _grads(fn, compiled_inputs, compiled_out, cotangents)
    assert any(grad is not None for grad in eager_grads.values()), "nothing to differentiate"
    for name, want in eager_grads.items():
        got = compiled_grads[name]
        if want is not None:
            assert got is not None, f"compiled: no gradient for {name}"
            _assert_same(got, want, f"gradient of {name}")


def _leaves(inputs: Sequence[object]) -> list[object]:
    """Fresh leaf copies of the tensor inputs (keeping ``requires_grad``); other inputs as they are."""
    return [
        t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, Tensor) else t
        for t in inputs
    ]


def _flat(out: object) -> list[object]:
    return list(out) if isinstance(out, tuple | list) else [out]


def _grads(fn, inputs, outputs, cotangents) -> dict[str, Tensor | None]:
    leaves = {f"input {i}": t for i, t in enumerate(inputs) if isinstance(t, Tensor)}
    leaves = {name: t for name, t in leaves.items() if t.requires_grad}
    if isinstance(fn, nn.Module):
        leaves.update((n, p) for n, p in fn.named_parameters() if p.requires_grad)
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if c is not None]
    grads = torch.autograd.grad(
        [o for o, _ in pairs], list(leaves.values()), [c for _, c in pairs], allow_unused=True
    )
    return dict(zip(leaves, grads))


def _assert_same(got: object, want: object, what: str) -> None:
    if not isinstance(want, Tensor):
        assert got == want, what
        return
    assert isinstance(got, Tensor), what
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if not want.is_floating_point():
        assert torch.equal(got, want), what
        return
    largest = want.detach().abs().max().item() if want.numel() else 0.0
    scale = largest or 1.0  # all zeros: compared absolutely
    torch.testing.assert_close(
        got.detach().double() / scale,
        want.detach().double() / scale,
        **tolerance(want.dtype),
        msg=lambda message: f"{what}: {message}",
    )
