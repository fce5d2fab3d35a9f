"""One-shot pruning from calibration data, block by block: ``magnitude``, ``wanda``, ``sparsegpt``.

A transformer is pruned one block (decoder layer) at a time, in order. The calibration batches run
through the model once, up to the first block, and the block's inputs are kept; then for every
block: the inputs go through it while hooks gather the statistics of each of its linear layers'
inputs, the layers are pruned from those statistics, and the inputs go through the now pruned block
again to become the next block's inputs. Each block is thus calibrated on the activations of the
blocks already pruned (as Wanda and SparseGPT do), and only one block's statistics are held at a
time.

- ``magnitude``: ``|W|``, compared across the whole layer (the papers' magnitude baseline). It
  needs no data.
- ``wanda`` (Sun et al., 2024): ``|W_ij| · ‖X_j‖₂``, compared within each output row.
- ``sparsegpt`` (Frantar & Alistarh, 2023): columns pruned left to right in blocks; each block's
  mask is chosen by ``W² / [H⁻¹]²_jj`` (``H = XᵀX`` damped), and the error of every pruned column
  is spread over the columns still to come through the Cholesky factor of ``H⁻¹`` (the optimal
  brain surgeon update), so the remaining weights change as well.

Granularities: unstructured at a target sparsity, or ``n:m`` (``n`` of every ``m`` consecutive
input features kept in every output row). The pruned weights are written in place, dense with zeros
(the hand-off to baking, export and the sparse kernels); :func:`prune_oneshot` returns the masks.

Linear layers are ``nn.Linear`` and Hugging Face's ``Conv1D`` (GPT-2's fused projections, which
store their weight as ``(in, out)``); both are handled through their ``(out, in)`` view
(:mod:`masking.pruning.layout`), as the learned masks of the pruner are.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .granularity import Granularity, NMGranularity, WeightGranularity, parse_granularity
from .layout import out_in_view, stores_transposed
from .schedule import check_sparsity

__all__ = [
    "ONESHOT_METHODS",
    "OneShotResult",
    "decoder_blocks",
    "is_linear",
    "linear_weight",
    "oneshot_keep",
    "prune_oneshot",
    "sparsegpt_prune",
]

ONESHOT_METHODS = ("magnitude", "wanda", "sparsegpt")

# where the decoder layers of the supported model families live, by attribute path
_BLOCK_PATHS = (
    ("model.layers", "Llama, Mistral, Qwen2 and other Llama-family models"),
    ("transformer.h", "GPT-2"),
    ("model.decoder.layers", "OPT"),
    ("gpt_neox.layers", "GPT-NeoX / Pythia"),
)


def is_linear(module: nn.Module) -> bool:
    """``nn.Linear``, or Hugging Face's ``Conv1D`` (a linear layer with its weight transposed)."""
    return isinstance(module, nn.Linear) or stores_transposed(module)


def linear_weight(module: nn.Module) -> Tensor:
    """The layer's weight as ``(out_features, in_features)``: a view, so writing to it prunes."""
    return out_in_view(module)


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The attribute path and the list of a causal language model's decoder blocks.

    Raises ``ValueError`` naming the model's class and the supported families otherwise.
    """
    for path, _ in _BLOCK_PATHS:
        found: Any = model
        for part in path.split("."):
            found = getattr(found, part, None)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    families = "; ".join(f"{path} ({what})" for path, what in _BLOCK_PATHS)
    raise ValueError(
        f"model: {type(model).__name__} has no list of decoder blocks where the supported "
        f"families keep them: {families}"
    )


def _granularity(granularity: str | Granularity, sparsity: float) -> tuple[Granularity, float]:
    granularity = parse_granularity(granularity)
    if not isinstance(granularity, WeightGranularity | NMGranularity):
        raise ValueError(
            f"granularity must be weight (unstructured) or n:m for one-shot pruning, got "
            f"{granularity}"
        )
    if isinstance(granularity, NMGranularity):
        return granularity, granularity.fixed_sparsity
    sparsity = check_sparsity("sparsity", sparsity)
    return granularity, sparsity


def _check_fits(name: str, weight: Tensor, granularity: Granularity) -> None:
    if isinstance(granularity, NMGranularity) and weight.shape[1] % granularity.m:
        raise ValueError(
            f"granularity {granularity}: {name} has {weight.shape[1]} input features, not a "
            f"multiple of m={granularity.m}"
        )


def oneshot_keep(
    scores: Tensor, granularity: str | Granularity, sparsity: float = 0.5, *, per_row: bool = False
) -> Tensor:
    """The bool mask (True = keep) of ``scores`` ``(out, in)``: the highest survive.

    Unstructured: the lowest ``round(sparsity · count)`` entries are dropped, of the whole layer or
    (``per_row``) of every output row. ``n:m``: the ``m - n`` lowest of every ``m`` consecutive
    entries of a row are dropped. Ties go to the lower index (deterministic).
    """
    granularity, sparsity = _granularity(granularity, sparsity)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (out, in), got shape {tuple(scores.shape)}")
    scores = scores.float()
    rows, cols = scores.shape
    if isinstance(granularity, NMGranularity):
        n, m = granularity.n, granularity.m
        if cols % m:
            raise ValueError(
                f"granularity {granularity}: {cols} input features, not a multiple of {m}"
            )
        groups = scores.reshape(rows, cols // m, m)
        order = groups.argsort(dim=-1, descending=True, stable=True)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(-1, order[..., :n], True)
        return keep.reshape(rows, cols)
    flat = scores.reshape(rows, cols) if per_row else scores.reshape(1, -1)
    drop = round(sparsity * flat.shape[1])
    keep = torch.ones_like(flat, dtype=torch.bool)
    if drop:
        order = flat.argsort(dim=-1, stable=True)
        keep.scatter_(-1, order[:, :drop], False)
    return keep.reshape(rows, cols)


@torch.no_grad()
def sparsegpt_prune(
    weight: Tensor,
    hessian: Tensor,
    granularity: str | Granularity = "weight",
    sparsity: float = 0.5,
    *,
    keep: Tensor | None = None,
    block_size: int = 128,
    damp: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """SparseGPT on one layer: the pruned weight and its keep mask.

    Args:
        weight: ``(out, in)``; not modified (a float32 copy is updated).
        hessian: ``XᵀX`` of the layer's calibration inputs, ``(in, in)`` (any positive scale).
        granularity, sparsity: unstructured at ``sparsity``, or ``n:m``.
        keep: a fixed mask to reconstruct under instead of choosing one (True = keep).
        block_size: columns per lazy-update block (a multiple of ``m`` for ``n:m``).
        damp: added to the diagonal, as a fraction of its mean.

    Returns:
        ``(pruned weight in weight's dtype, bool keep mask)``. Unstructured masks drop exactly
        ``round(sparsity · count)`` weights; ``n:m`` masks hold exactly ``n`` of every ``m``.
    """
    granularity, sparsity = _granularity(granularity, sparsity)
    if weight.ndim != 2:
        raise ValueError(f"weight must be (out, in), got shape {tuple(weight.shape)}")
    cols = weight.shape[1]
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian must be ({cols}, {cols}) for weight {tuple(weight.shape)}")
    nm = granularity if isinstance(granularity, NMGranularity) else None
    _check_fits("the weight", weight, granularity)
    if nm is not None and block_size % nm.m:
        block_size = nm.m * max(1, block_size // nm.m)
    if not damp > 0:
        raise ValueError(f"damp must be > 0, got {damp!r}")
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()
    dead = h.diagonal() == 0  # inputs that were always zero: their weights do nothing
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * h.diagonal().mean())
    factor = _inverse_cholesky(h)
    drop = torch.zeros_like(w, dtype=torch.bool) if keep is None else ~keep.to(w.device)
    target = round(sparsity * w.numel())
    dropped = 0
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = w[:, start:end].clone()
        f = factor[start:end, start:end]
        diag = f.diagonal()
        errors = torch.zeros_like(block)
        dropping = drop[:, start:end].clone(memory_format=torch.contiguous_format)
        if keep is None and nm is None:
            # this block's share of the target, so the layer's total is exact
            count = round(target * end / cols) - dropped
            if count > 0:
                saliency = (block.square() / diag.square()).flatten()
                chosen = saliency.argsort(stable=True)[:count]
                dropping.view(-1)[chosen] = True
            dropped += count
        for j in range(end - start):
            if keep is None and nm is not None and j % nm.m == 0:
                span = block[:, j : j + nm.m].square() / diag[j : j + nm.m].square()
                order = span.argsort(dim=-1, stable=True)[:, : nm.m - nm.n]
                dropping[:, j : j + nm.m].scatter_(1, order, True)
            column = block[:, j]
            pruned = column.masked_fill(dropping[:, j], 0.0)
            error = (column - pruned) / diag[j]
            block[:, j:] -= error[:, None] * f[j, j:][None, :]
            block[:, j] = pruned
            errors[:, j] = error
        w[:, start:end] = block
        drop[:, start:end] = dropping
        w[:, end:] -= errors @ factor[start:end, end:]
    w[drop] = 0.0
    return w.to(weight.dtype), ~drop


def _inverse_cholesky(h: Tensor) -> Tensor:
    """The upper Cholesky factor of ``h⁻¹``; more damping when ``h`` is not positive definite."""
    extra = h.diagonal().mean() * 1e-2
    for _ in range(6):
        lower, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
        h = h.clone()
        h.diagonal().add_(extra)
        extra = extra * 10
    raise ValueError("sparsegpt: the calibration Hessian is not positive definite even damped")


class _InputStatistics:
    """The statistics of one linear layer's inputs that a pruner needs (sum of squares per input
    feature; with ``hessian``, ``XᵀX``), summed in float32 over every token."""

    def __init__(self, features: int, hessian: bool, device: torch.device) -> None:
        self.squares = torch.zeros(features, device=device)
        self.hessian = torch.zeros(features, features, device=device) if hessian else None
        self.tokens = 0

    def add(self, x: Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.tokens += x.shape[0]
        self.squares += x.square().sum(0)
        if self.hessian is not None:
            self.hessian.addmm_(x.t(), x)

    def merge(self, other: _InputStatistics) -> None:
        """Add ``other``'s sums (of the same features) to these."""
        self.tokens += other.tokens
        self.squares += other.squares
        if self.hessian is not None:
            self.hessian += other.hessian


@dataclass
class OneShotResult:
    """What :func:`prune_oneshot` did.

    Attributes:
        masks: qualified layer name → bool keep mask in the ``(out, in)`` view.
        block_seconds: wall time of each block (statistics, pruning and the pass to the next).
        tokens: calibration tokens seen by every block.
    """

    granularity: Granularity
    allocation: str
    masks: dict[str, Tensor] = field(default_factory=dict)
    block_seconds: list[float] = field(default_factory=list)
    tokens: int = 0

    def achieved_sparsity(self) -> float:
        """The fraction of zeros over every pruned layer's mask (as ``Pruner.achieved_sparsity``)."""
        total = sum(mask.numel() for mask in self.masks.values())
        return 1 - sum(int(mask.sum()) for mask in self.masks.values()) / max(total, 1)

    def layer_sparsity(self) -> list[dict[str, Any]]:
        """Per pruned layer: elements, zeros, sparsity (as ``Pruner.layer_sparsity``)."""
        rows = []
        for name, mask in self.masks.items():
            zeros = int(mask.numel() - mask.sum())
            rows.append(
                {
                    "layer": name,
                    "params": mask.numel(),
                    "zeros": zeros,
                    "sparsity": zeros / mask.numel(),
                }
            )
        return rows


class _Captured(Exception):
    """Raised by the hook on the first block once its inputs are recorded."""


def _default_forward(model: nn.Module, batch: Any) -> Any:
    return model(batch)


def _block_output(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple | list) else output


def _with_hidden(args: tuple, kwargs: dict, hidden: Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


@torch.no_grad()
def prune_oneshot(
    model: nn.Module,
    calibration: Iterable[Any],
    *,
    method: str,
    granularity: str | Granularity = "weight",
    sparsity: float = 0.5,
    blocks: Sequence[nn.Module] | None = None,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    forward: Callable[[nn.Module, Any], Any] = _default_forward,
    block_size: int = 128,
    damp: float = 0.01,
    progress: Callable[[int, int, float], None] | None = None,
) -> OneShotResult:
    """Prune every linear layer of ``model``'s blocks in place, one block at a time.

    Args:
        model: the network (a causal LM: its decoder blocks are found by :func:`decoder_blocks`
            unless ``blocks`` is given).
        calibration: batches the model is called on through ``forward(model, batch)``; each
            block is calibrated on the activations of the blocks already pruned. Unused by
            ``magnitude``.
        method: ``magnitude``, ``wanda`` or ``sparsegpt``.
        granularity, sparsity: ``weight`` at ``sparsity`` in [0, 1), or ``n:m`` (sparsity
            ``1 - n/m``).
        blocks: the blocks to prune, in the order the model runs them.
        include, exclude: globs on the layers' qualified names (``*.self_attn.*``,
            ``transformer.h.0.mlp.c_fc``); layers outside the blocks (``lm_head``) are never pruned.
        forward: how a batch runs through the model.
        block_size, damp: SparseGPT's column block and diagonal damping.
        progress: called after each block with ``(index, count, seconds)``.

    Returns:
        The masks of the pruned layers (names qualified from ``model``), time per block, tokens.

    The model runs in evaluation mode throughout (no dropout in the statistics) and is handed back
    in the mode it came in.
    """
    training = model.training
    model.eval()
    try:
        return _prune_blocks(
            model,
            calibration,
            method,
            granularity,
            sparsity,
            blocks,
            include,
            exclude,
            forward,
            block_size,
            damp,
            progress,
        )
    finally:
        model.train(training)


def _prune_blocks(
    model: nn.Module,
    calibration: Iterable[Any],
    method: str,
    granularity: str | Granularity,
    sparsity: float,
    blocks: Sequence[nn.Module] | None,
    include: Sequence[str],
    exclude: Sequence[str],
    forward: Callable[[nn.Module, Any], Any],
    block_size: int,
    damp: float,
    progress: Callable[[int, int, float], None] | None,
) -> OneShotResult:
    if method not in ONESHOT_METHODS:
        raise ValueError(f"method must be one of {', '.join(ONESHOT_METHODS)}, got {method!r}")
    granularity, sparsity = _granularity(granularity, sparsity)
    if blocks is None:
        blocks = decoder_blocks(model)[1]
    names = {id(module): name for name, module in model.named_modules()}
    layers = [_block_linears(block, names, include, exclude) for block in blocks]
    if not any(layers):
        raise ValueError(
            f"include={list(include)} and exclude={list(exclude)} leave no linear layer to prune"
        )
    for chosen in layers:
        for name, module in chosen:
            _check_fits(name, linear_weight(module), granularity)
    # how the kept weights are compared: the whole layer, each output row, blocks of columns
    allocation = {"magnitude": "layer", "wanda": "row", "sparsegpt": "column_block"}[method]
    if isinstance(granularity, NMGranularity):
        allocation = "group"
    result = OneShotResult(granularity, allocation)
    inputs = (
        [] if method == "magnitude" else _first_block_inputs(model, blocks[0], calibration, forward)
    )
    if method != "magnitude" and not inputs:
        raise ValueError("calibration: no batch reached the first block (is it empty?)")
    result.tokens = sum(_hidden(args, kwargs).shape[:-1].numel() for args, kwargs in inputs)
    for index, (block, chosen) in enumerate(zip(blocks, layers)):
        started = time.perf_counter()
        statistics = _gather(block, chosen, inputs, hessian=method == "sparsegpt")
        for name, module in chosen:
            view = linear_weight(module)
            if method == "magnitude":
                keep = oneshot_keep(view.abs(), granularity, sparsity)
            elif method == "wanda":
                norms = statistics[name].squares.sqrt()
                keep = oneshot_keep(
                    view.abs() * norms[None, :], granularity, sparsity, per_row=True
                )
            else:
                stats = statistics[name]
                new, keep = sparsegpt_prune(
                    view,
                    stats.hessian,
                    granularity,
                    sparsity,
                    block_size=block_size,
                    damp=damp,
                )
                view.copy_(new)
            view.mul_(keep.to(view.dtype))
            result.masks[name] = keep.cpu()
        del statistics
        if index + 1 < len(blocks) and inputs:
            inputs = [
                _with_hidden(args, kwargs, _block_output(block(*args, **kwargs)))
                for args, kwargs in inputs
            ]
        result.block_seconds.append(time.perf_counter() - started)
        if progress is not None:
            progress(index, len(blocks), result.block_seconds[-1])
    return result


def _block_linears(
    block: nn.Module, names: dict[int, str], include: Sequence[str], exclude: Sequence[str]
) -> list[tuple[str, nn.Module]]:
    chosen = []
    for local, module in block.named_modules():
        if not local or not is_linear(module):
            continue
        name = names.get(id(module), local)
        if any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
            fnmatch.fnmatchcase(name, p) for p in exclude
        ):
            chosen.append((name, module))
    return chosen


def _hidden(args: tuple, kwargs: dict) -> Tensor:
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, Tensor):
        raise ValueError("the first block is not called with its hidden states as a tensor")
    return hidden


def _first_block_inputs(
    model: nn.Module, first: nn.Module, calibration: Iterable[Any], forward: Callable
) -> list[tuple[tuple, dict]]:
    """The arguments the first block is called with, one entry per calibration batch."""
    recorded: list[tuple[tuple, dict]] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        _hidden(args, kwargs)
        recorded.append((args, dict(kwargs)))
        raise _Captured

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in calibration:
            try:
                forward(model, batch)
            except _Captured:
                continue
            raise ValueError(
                "calibration: the model ran to the end without calling its first block"
            )
    finally:
        handle.remove()
    return recorded


def _gather(
    block: nn.Module,
    chosen: list[tuple[str, nn.Module]],
    inputs: list[tuple[tuple, dict]],
    *,
    hessian: bool,
) -> dict[str, _InputStatistics]:
    """Each chosen layer's input statistics over every calibration batch (every call counts).
    Within a batch, an input tensor read by several layers (a Llama block's q, k and v; its gate
    and up projections) has its sums computed once and added to each of them: the Hessian,
    ``tokens × in²`` per input, dominates SparseGPT's time, while adding it is ``in²``."""
    if not inputs:
        return {}
    statistics: dict[str, _InputStatistics] = {}
    # this batch's inputs by identity: (the tensor, its version, its sums)
    seen: dict[int, tuple[Tensor, int, _InputStatistics]] = {}

    def record(name: str, module: nn.Module, x: Tensor) -> None:
        if name not in statistics:
            statistics[name] = _InputStatistics(x.shape[-1], hessian, linear_weight(module).device)
        known = seen.get(id(x))
        if known is None or known[0] is not x or known[1] != x._version:
            sums = _InputStatistics(x.shape[-1], hessian, linear_weight(module).device)
            sums.add(x)
            known = seen[id(x)] = (x, x._version, sums)
        statistics[name].merge(known[2])

    handles = [
        module.register_forward_hook(lambda m, a, o, name=name: record(name, m, a[0]))
        for name, module in chosen
    ]
    try:
        for args, kwargs in inputs:
            seen.clear()
            block(*args, **kwargs)
    finally:
        seen.clear()
        for handle in handles:
            handle.remove()
    missing = [name for name, _ in chosen if name not in statistics]
    if missing:
        raise ValueError(
            f"calibration: {missing[0]} was never called by its block, so it has no input "
            "statistics (exclude it with pruning.exclude)"
        )
    return statistics
