"""What a network costs: parameters (total and nonzero), multiply-accumulates and latency, and
the dense and pruned networks measured side by side for the pruning report.

Plain functions over an ``nn.Module`` and example inputs; no Lightning.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count

import masking  # noqa: F401  (registers the masking:: custom ops counted below)
from masking.checks import check_int

__all__ = [
    "count_macs",
    "count_params",
    "latency_table",
    "measure_latency",
    "profile_pair",
    "profile_with",
]

MEMORY_FORMATS = ("contiguous", "channels_last")


def _check_module(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _as_args(example_inputs: object) -> tuple:
    """A tensor becomes a one-element tuple; a tuple or list of arguments passes as is."""
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, tuple | list) and example_inputs:
        return tuple(example_inputs)
    raise TypeError(
        "example_inputs must be a tensor or a non-empty tuple of forward arguments, got "
        f"{type(example_inputs).__name__}"
    )


@contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the block; every submodule gets its own training flag back afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameter count of ``model`` and how many entries are nonzero.

    Unstructured sparsity (weights zeroed in place, or masked) shows up as ``nonzero_params <
    params``; removed channels show up in ``params`` itself. A tensor under a
    ``torch.nn.utils.parametrize`` parametrization (a pruning mask, say) counts as its effective,
    masked value, computed in eval mode: what an export would hold. The parametrizations' own
    parameters (mask scores, gates) are training state and are not counted. Shared parameters count
    once.

    Args:
        model: the network.

    Returns:
        ``{"params": int, "nonzero_params": int}``.

    Example:
        >>> layer = torch.nn.Linear(4, 2)
        >>> with torch.no_grad():
        ...     layer.weight[0] = 0
        >>> count_params(layer)
        {'params': 10, 'nonzero_params': 6}
    """
    _check_module(model)
    owned_by_parametrizations = set()
    for module in model.modules():
        if parametrize.is_parametrized(module):
            owned_by_parametrizations.update(id(p) for p in module.parametrizations.parameters())
    params = nonzero = 0
    seen = set()
    for p in model.parameters():
        if id(p) in owned_by_parametrizations or id(p) in seen:
            continue
        seen.add(id(p))
        params += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    with torch.no_grad(), _eval_mode(model):
        for module in model.modules():
            if not parametrize.is_parametrized(module):
                continue
            for name in module.parametrizations:
                value = getattr(module, name)
                params += value.numel()
                nonzero += int(torch.count_nonzero(value))
    return {"params": params, "nonzero_params": nonzero}


def _partial_conv2d_flops(x_shape, mask_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """A partial convolution costs its convolution; the mask bookkeeping is elementwise, which
    ``FlopCounterMode`` does not count for any op."""
    return conv_flop_count(x_shape, w_shape, out_shape[0], transposed=False)


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Attention on CPU (``_scaled_dot_product_flash_attention_for_cpu``) costs what the GPU
    kernels ``FlopCounterMode`` knows cost: its two matrix products."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_mha_flops(
    query_shape, key_shape, value_shape, embed_dim, num_heads, qkv_weight_shape, *args, **kwargs
) -> int:
    """``nn.MultiheadAttention``'s fused inference path (``_native_multi_head_attention``, taken
    in eval mode without gradients): the q/k/v and output projections and the two attention
    products, as the same module costs on its unfused path."""
    *batch, length, width = query_shape
    sources = key_shape[-2]
    count = math.prod(batch) if batch else 1
    inner = qkv_weight_shape[0] // 3
    projections = 2 * count * width * inner * (length + 2 * sources)
    attention = 2 * 2 * count * length * sources * inner
    output = 2 * count * length * inner * embed_dim
    return projections + attention + output


def count_macs(model: nn.Module, example_inputs: Tensor | Sequence[Any]) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``example_inputs``.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2): convolutions, matrix
    products and attention (also on CPU, and ``nn.MultiheadAttention``'s fused inference path,
    which ``FlopCounterMode`` alone counts as zero); elementwise work (bias, batch norm,
    activations, masks) is not counted.
    Runs in eval mode without gradients and restores the training flags. The project's
    ``masking::partial_conv2d`` custom op counts as the convolution it contains; other custom ops
    unknown to ``FlopCounterMode`` count as zero.

    Args:
        model: the network.
        example_inputs: the forward's input, or a tuple of its arguments. MACs scale with the
            batch size.

    Returns:
        The MAC count, an int.

    Example:
        >>> count_macs(torch.nn.Conv2d(3, 8, 3, padding=1), torch.rand(1, 3, 8, 8))
        13824
    """
    _check_module(model)
    args = _as_args(example_inputs)
    mapping = {
        torch.ops.masking.partial_conv2d: _partial_conv2d_flops,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
        torch.ops.aten._native_multi_head_attention: _native_mha_flops,
    }
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.no_grad(), _eval_mode(model), counter:
        model(*args)
    return counter.get_total_flops() // 2


def _on_cuda(model: nn.Module, args: tuple) -> bool:
    tensors = [a for a in args if isinstance(a, Tensor)]
    tensors += list(model.parameters()) + list(model.buffers())
    return any(t.is_cuda for t in tensors)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile, as ``numpy.quantile``'s default."""
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def measure_latency(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Any],
    *,
    repeats: int = 30,
    warmup: int = 5,
    threads: int | None = None,
) -> dict[str, float | int]:
    """Wall-clock time of one forward pass: median and spread over ``repeats`` timed calls.

    Eval mode under ``torch.inference_mode()``, after ``warmup`` untimed calls; each call is timed
    with ``time.perf_counter``, the CUDA device synchronised before and after it when the model or
    the inputs live there. The training flags and the torch thread count are restored afterwards.

    Args:
        model: the network, on the inputs' device.
        example_inputs: the forward's input, or a tuple of its arguments.
        repeats: timed calls, >= 1.
        warmup: untimed calls first, >= 0.
        threads: torch intra-op threads during the measurement (``None``: leave as set).

    Returns:
        ``{"median_ms", "p10_ms", "p90_ms": float, "repeats": int, "batch": int}``, ``batch`` being
        the first dimension of the first tensor argument.
    """
    _check_module(model)
    args = _as_args(example_inputs)
    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    if threads is not None:
        check_int("threads", threads, 1)
    first = next((a for a in args if isinstance(a, Tensor)), None)
    if first is None or first.dim() == 0:
        raise ValueError("example_inputs must include a tensor with a batch dimension")
    cuda = _on_cuda(model, args)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    previous_threads = torch.get_num_threads()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode(), _eval_mode(model):
            for _ in range(warmup):
                model(*args)
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                model(*args)
                sync()
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)
    times.sort()
    return {
        "median_ms": _quantile(times, 0.5),
        "p10_ms": _quantile(times, 0.1),
        "p90_ms": _quantile(times, 0.9),
        "repeats": repeats,
        "batch": int(first.shape[0]),
    }


def latency_table(
    model: nn.Module,
    make_input: Callable[[int], Any],
    batches: Sequence[int] = (1, 32),
    *,
    repeats: int = 30,
    warmup: int = 5,
    threads: int | None = None,
) -> dict[str, dict[str, float | int]]:
    """``measure_latency`` at several batch sizes, keyed ``"batch_1"``, ``"batch_32"``, ...

    Args:
        model: the network.
        make_input: returns the example input (a tensor or a tuple of arguments) for a batch size.
        batches: batch sizes, ints >= 1.
        repeats, warmup, threads: as in ``measure_latency``.

    Returns:
        One ``measure_latency`` result per batch size.
    """
    if not callable(make_input):
        raise TypeError(f"make_input must be callable, got {type(make_input).__name__}")
    sizes = tuple(batches) if isinstance(batches, Sequence) else ()
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ValueError(f"batches must be a non-empty sequence of ints >= 1, got {batches!r}")
    return {
        f"batch_{b}": measure_latency(
            model, make_input(b), repeats=repeats, warmup=warmup, threads=threads
        )
        for b in sizes
    }


def _prepare_for_inference(model: nn.Module, memory_format: str) -> nn.Module:
    """The inference path the latency is measured on (the same for dense and pruned)."""
    model = copy.deepcopy(model).eval()
    if memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    elif memory_format != "contiguous":
        raise ValueError(
            f"task.latency.memory_format must be one of {', '.join(MEMORY_FORMATS)}, got "
            f"{memory_format!r}"
        )
    return model


def profile_pair(
    dense: nn.Module,
    final: nn.Module,
    make_input: Callable[[int], Any],
    *,
    batches: Sequence[int],
    repeats: int,
    warmup: int,
    memory_format: str,
) -> dict[str, dict]:
    """Params, MACs and latency of the dense and final models, measured side by side.

    Returns ``{"dense": ..., "final": ...}``, each ``{"params", "nonzero_params", "macs",
    "latency_ms": {"batch_<b>": median}}``; the latency is the median of three interleaved blocks
    (a noisy neighbour hits both models alike), each :func:`measure_latency`'s median.
    """
    models = {
        "dense": _prepare_for_inference(dense, memory_format),
        "final": _prepare_for_inference(final, memory_format),
    }
    out: dict[str, dict] = {}
    for key, model in models.items():
        out[key] = {**count_params(model), "macs": count_macs(model, make_input(1))}
        out[key]["latency_ms"] = {}
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    for batch in batches:
        example = make_input(batch)
        if isinstance(example, Tensor):
            example = example.contiguous(memory_format=fmt)
        else:  # forward arguments: image-like ones in the same memory format
            example = tuple(
                t.contiguous(memory_format=fmt) if isinstance(t, Tensor) and t.dim() == 4 else t
                for t in example
            )
        runs: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(3):
            for key, model in models.items():
                result = measure_latency(model, example, repeats=repeats, warmup=warmup)
                runs[key].append(result["median_ms"])
        for key in models:
            values = sorted(runs[key])
            out[key]["latency_ms"][f"batch_{batch}"] = values[len(values) // 2]
    return out


def profile_with(latency: Any, dense: nn.Module, final: nn.Module, make_input) -> dict[str, dict]:
    """:func:`profile_pair` with the settings of a job's ``task.latency`` (``batches``,
    ``repeats``, ``warmup``, ``memory_format``)."""
    return profile_pair(
        dense,
        final,
        make_input,
        batches=list(latency.batches),
        repeats=latency.repeats,
        warmup=latency.warmup,
        memory_format=latency.memory_format,
    )
