"""Serve baked sparse weights through the fastest measured path: ``sparsify(model, example)``.

After ``bake`` a pruned model holds dense weights with zeros. ``sparsify`` records the shape each
``nn.Linear`` and ``nn.Conv2d`` sees on ``example``, asks ``masking.kernels.table.choose`` which path
is measured fastest for that layer on this device (dense below the break-even sparsity), swaps the
layers whose path is not dense for :class:`SparseLinear` / :class:`SparseConv2d`, and checks that the
model's outputs did not change. The returned report says what each layer got and why.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    >>> with torch.no_grad():
    ...     net[0].weight[:, 8:] = 0  # 88 % of the first layer pruned
    >>> net, report = sparsify(net, torch.randn(4, 64), paths="csr")
    >>> type(net[0]).__name__, report[0]["path"], round(report[0]["path_sparsity"], 3)
    ('SparseLinear', 'csr', 0.875)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..checks import conv_output_size
from ..kernels import sparse, table
from .graph import as_args, flatten_outputs

CONV_PATHS = ("dense", "rows", "csr")


class SparseLinear(nn.Module):
    """``nn.Linear`` whose weight is stored for one path of ``masking.kernels.sparse``."""

    def __init__(self, linear: nn.Linear, path: str) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = sparse.Packed(linear.weight.detach(), path)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    @property
    def path(self) -> str:
        return self.packed.path

    def forward(self, x: Tensor) -> Tensor:
        out = self.packed(x.reshape(-1, self.in_features))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.packed = _follow_device(self.packed, fn)
        return self

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, path={self.path!r}"


class SparseConv2d(nn.Module):
    """``nn.Conv2d`` (``groups == 1``) over a weight stored for ``dense``, ``rows`` or ``csr``.

    ``rows`` convolves with the output channels whose filters are not all zero and writes zeros
    (then the bias) for the others; ``csr`` unfolds the input and multiplies by the sparse weight.
    """

    def __init__(self, conv: nn.Conv2d, path: str) -> None:
        super().__init__()
        if path not in CONV_PATHS:
            raise ValueError(f"path for a Conv2d must be one of {CONV_PATHS}, got {path!r}")
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("SparseConv2d takes groups=1, zero padding given as numbers")
        self.out_channels, self.in_channels = conv.out_channels, conv.in_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        weight = conv.weight.detach()
        self.path = path
        if path == "dense":
            self.register_buffer("weight", weight.clone())
        elif path == "rows":
            kept = weight.flatten(1).ne(0).any(1).nonzero().flatten()
            self.register_buffer("weight", weight.index_select(0, kept).contiguous())
            self.register_buffer("kept", kept)
        else:
            self.packed = sparse.Packed(weight.flatten(1), "csr")
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        args = (self.stride, self.padding, self.dilation)
        if self.path == "dense":
            out = F.conv2d(x, self.weight, None, *args)
        elif self.path == "rows":
            kept = F.conv2d(x, self.weight, None, *args)
            out = x.new_zeros(x.shape[0], self.out_channels, *kept.shape[2:])
            out.index_copy_(1, self.kept, kept)
        else:
            b = x.shape[0]
            h, w = conv_output_size(tuple(x.shape[2:]), self.kernel_size, *args)
            cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
            cols = cols.transpose(1, 2).reshape(b * h * w, -1)
            out = self.packed(cols).view(b, h, w, -1).permute(0, 3, 1, 2)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.path == "csr":
            self.packed = _follow_device(self.packed, fn)
        return self

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, path={self.path!r}"
        )


def _follow_device(packed: sparse.Packed, fn) -> sparse.Packed:
    """``packed`` on the device that ``Module._apply``'s ``fn`` (``.to``, ``.cuda``, ...) sends
    tensors to; its sparse tensors are not parameters or buffers, so the module moves them."""
    device = packed.data[0].device
    target = fn(torch.empty(0, device=device)).device
    return packed if target == device else packed.to(target)


def _layer_paths(module: nn.Module) -> tuple[str, Tensor, tuple[str, ...]]:
    """The op name, the GEMM view of the weight and the paths that can serve ``module``."""
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return "linear", weight, sparse.PATHS
    plain = module.groups == 1 and module.padding_mode == "zeros"
    plain = plain and not isinstance(module.padding, str)
    return "conv2d", weight.flatten(1), CONV_PATHS if plain else ("dense",)


def sparsify(
    model: nn.Module,
    example_inputs: Tensor | tuple[Any, ...],
    *,
    paths: str | dict[str, str] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Swap each baked ``nn.Linear``/``nn.Conv2d`` of ``model`` (in place) for the fastest measured
    path on its device, check the outputs on ``example_inputs`` are unchanged, and report.

    Args:
        model: a model whose pruned weights are baked (dense with zeros), in evaluation mode for the
            check; parameters stay where they are.
        example_inputs: a tensor or a tuple of positional inputs; fixes each layer's GEMM shape
            (batch × spatial size), which the choice depends on.
        paths: manual override: one path for every layer, or ``{layer name: path}`` for some (the
            others are chosen from the table). Conv2d takes ``dense``, ``rows`` or ``csr``.
        atol, rtol: tolerance of the output check.

    Returns:
        ``(model, report)``: one dict per layer with ``layer``, ``kind``, ``gemm`` (out, in, n),
        ``path``, ``path_sparsity``, ``measured_speedup`` (NaN for overrides) and ``reason``.

    Raises:
        ValueError: a masked (parametrized) layer, an unknown layer name or a path that cannot run a
            layer; RuntimeError if the outputs changed (the model is restored first).
    """
    if isinstance(paths, dict):
        names = dict(model.named_modules())
        unknown = [n for n in paths if not isinstance(names.get(n), (nn.Linear, nn.Conv2d))]
        if unknown:
            raise ValueError(f"paths names no Linear/Conv2d layer of the model: {unknown}")
    parametrized = [n for n, m in model.named_modules() if parametrize.is_parametrized(m)]
    if parametrized:
        raise ValueError(
            f"{parametrized[0]} still carries a mask parametrization; bake the masks first "
            "(masking.pruning.bake)"
        )
    args = as_args(example_inputs)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(_recorder(shapes, name))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    try:
        with torch.no_grad():
            before = flatten_outputs(model(*args))
    finally:
        for hook in hooks:
            hook.remove()
    report, swapped = [], []
    for name, module in list(model.named_modules()):
        if name not in shapes:
            continue
        op, weight, allowed = _layer_paths(module)
        forced = paths if isinstance(paths, str) else (paths or {}).get(name)
        if forced is not None:
            if forced not in allowed:
                raise ValueError(
                    f"paths: {name} is a {op}, which takes one of {allowed}, not {forced!r}"
                )
            why = sparse.supports(forced, weight) if op == "linear" else None
            if why is not None:
                raise ValueError(f"paths: {forced!r} cannot run {name}: {why}")
            choice = table.Choice(forced, float("nan"), "override")
        else:

            def sparsity_of(path: str, weight: Tensor = weight, allowed=allowed) -> float | None:
                if path not in allowed or sparse.supports(path, weight) is not None:
                    return None
                return sparse.path_sparsity(weight, path)

            choice = table.choose(op, weight.device, weight.dtype, shapes[name], sparsity_of)
            if choice.reason == "override" and sparsity_of(choice.path) is None:
                # MASKING_PATHS or table.prefer named a path this layer cannot take
                why = f"override {choice.path!r} cannot run this layer"
                choice = table.Choice("dense", 1.0, why)
        report.append(
            {
                "layer": name,
                "kind": op,
                "gemm": list(shapes[name]),
                "path": choice.path,
                "path_sparsity": sparse.path_sparsity(weight, choice.path),
                "measured_speedup": choice.speedup,
                "reason": choice.reason,
            }
        )
        if choice.path != "dense" or forced is not None:
            new = (SparseLinear if op == "linear" else SparseConv2d)(module, choice.path)
            swapped.append((name, module))
            _set(model, name, new)
    with torch.no_grad():
        after = flatten_outputs(model(*args))
    same = len(before) == len(after) and all(
        torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(before, after)
    )
    if not same:
        for name, module in swapped:
            _set(model, name, module)
        raise RuntimeError("sparsify changed the model's outputs; the original layers are restored")
    return model, report


def _recorder(shapes: dict, name: str):
    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if isinstance(module, nn.Linear):
            n = inputs[0].numel() // module.in_features
            shapes[name] = (module.out_features, module.in_features, n)
        else:
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            shapes[name] = (
                module.out_channels,
                k,
                output.shape[0] * output.shape[2] * output.shape[3],
            )

    return hook


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
