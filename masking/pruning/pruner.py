"""The pruner: attaches masks, steps the schedule, allocates sparsity, finalizes."""

from __future__ import annotations

import copy
import fnmatch
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_int
from ..layers import GatedConv2d
from .compact import check_equivalent, compact
from .estimators import ESTIMATORS, MagnitudeStats, MaskSource
from .granularity import Granularity, parse_granularity
from .graph import ChannelGroup, channel_groups
from .layout import out_in_view, stores_transposed
from .masks import HadamardMask, attach, bake
from .schedule import SparsitySchedule, check_sparsity

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    GatedConv2d,
)  # and Hugging Face's Conv1D, a linear layer that stores its weight transposed (see layout.py)
ALLOCATIONS = ("auto", "global", "layer")


@dataclass
class _Layer:
    """One masked weight (weight, block and n:m granularities)."""

    name: str
    module: nn.Module
    source: MaskSource
    counts: Tensor | None = None  # weights per mask entry where they differ (edge blocks)
    transposed: bool = False  # stored as (in, out): Hugging Face's Conv1D

    def weight(self) -> Tensor:
        """The unmasked weight in the ``(out, in, ...)`` view its mask is defined on."""
        weight = _original(self.module, "weight")
        return weight.t() if self.transposed else weight


@dataclass
class _Group:
    """One coupled channel group (channel granularity)."""

    group: ChannelGroup
    source: MaskSource
    scales: list[tuple[nn.Module, str]]  # BatchNorm weights of the group (slimming)


def _original(module: nn.Module, name: str) -> Tensor:
    """The unmasked tensor behind ``module.<name>`` (parametrized or not)."""
    plists = getattr(module, "parametrizations", None)
    if plists is not None and name in plists:
        return plists[name].original
    return getattr(module, name)


def _weight_view(module: nn.Module) -> Tensor:
    """The unmasked weight of ``module`` as ``(out, in, ...)`` (a Conv1D's transposed)."""
    return out_in_view(module, _original(module, "weight"))


def _prunable(module: nn.Module, types: tuple[type[nn.Module], ...]) -> bool:
    """One of ``types``; Hugging Face's Conv1D counts as an ``nn.Linear``."""
    if isinstance(module, types):
        return True
    return nn.Linear in types and stores_transposed(module)


def select_modules(
    model: nn.Module,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES,
) -> list[tuple[str, nn.Module]]:
    """Prunable modules whose qualified name matches ``include`` and no ``exclude`` entry.

    ``include`` and ``exclude`` hold glob patterns on qualified names (``layer4.*``, ``fc``) or
    class names (``Linear``, ``BatchNorm2d``, ``Conv1D``). Every pattern must match some module: a
    filter that matches nothing is a typo, and an error. Hugging Face's ``Conv1D`` (GPT-2's
    projections) is taken wherever ``nn.Linear`` is.
    """
    named = [(n, m) for n, m in model.named_modules() if n]

    def matches(pattern: str, name: str, module: nn.Module) -> bool:
        return fnmatch.fnmatchcase(name, pattern) or type(module).__name__ == pattern

    for label, patterns in (("include", include), ("exclude", exclude)):
        if isinstance(patterns, str) or not isinstance(patterns, Iterable):
            raise ValueError(f"{label} must be a list of name patterns, got {patterns!r}")
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"{label} entries must be non-empty strings, got {pattern!r}")
            if not any(matches(pattern, n, m) for n, m in named):
                examples = ", ".join(n for n, _ in named[:4])
                raise ValueError(
                    f"{label} pattern {pattern!r} matches no module (names look like {examples})"
                )
    chosen = [
        (n, m)
        for n, m in named
        if _prunable(m, types)
        and isinstance(getattr(m, "weight", None), Tensor)
        and any(matches(p, n, m) for p in include)
        and not any(matches(p, n, m) for p in exclude)
    ]
    if not chosen:
        raise ValueError(
            f"no prunable layer (Conv, Linear, Conv1D, GatedConv2d) left after "
            f"include={list(include)} and exclude={list(exclude)}"
        )
    return chosen


class Pruner:
    """Learned Hadamard masks on a model, from attachment to the final baked or compacted model.

    Convolutions, ``nn.Linear`` and Hugging Face's ``Conv1D`` (GPT-2's projections, stored
    ``(in, out)``) are masked; every mask is defined on the weight's ``(out, in, ...)`` view
    (:mod:`masking.pruning.layout`), so n:m groups run along input features for all of them.
    Channel granularity does not take ``Conv1D``.

    Args:
        model: the (pretrained) network; masks are attached in place.
        method: estimator name: ``magnitude``, ``movement``, ``hard_concrete``, ``str``,
            ``slimming`` (channel granularity only).
        granularity: ``weight``, ``channel``, ``block4x4``-style or ``n:m`` (see
            :func:`parse_granularity`).
        sparsity: final fraction of zeros in [0, 1): of the masked weights (``param_sparsity``), or of
            the channels for channel granularity (``channel_sparsity``).
        schedule: the sparsity per optimizer step; default one-shot at ``sparsity``.
        allocation: ``global`` (one threshold across layers), ``layer`` (every layer at the same
            sparsity) or ``auto`` (global for weights and blocks, per layer for channels).
        include, exclude: module filters (glob on names, or class names).
        example_inputs: a batch (tensor or tuple of forward arguments) to trace channel coupling;
            required for channel granularity.
        round_to: channel granularity: kept channels per group rounded up to a multiple of this.
        penalty: weight of the estimator's penalty in the loss.
        estimator_args: extra keyword arguments for the estimator class.
        update_every: recompute masks every this many steps (and whenever the target changes).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str = "magnitude",
        granularity: str | Granularity = "weight",
        sparsity: float = 0.5,
        schedule: SparsitySchedule | None = None,
        allocation: str = "auto",
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        example_inputs: Any = None,
        round_to: int = 1,
        penalty: float = 0.0,
        estimator_args: Mapping[str, Any] | None = None,
        update_every: int = 1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if method not in ESTIMATORS:
            raise ValueError(f"method must be one of {', '.join(ESTIMATORS)}, got {method!r}")
        self.granularity = parse_granularity(granularity)
        self.sparsity = check_sparsity("sparsity", sparsity)
        fixed = self.granularity.fixed_sparsity
        if fixed is not None and not math.isclose(self.sparsity, fixed, abs_tol=1e-9):
            raise ValueError(
                f"sparsity must be {fixed:g} for granularity {self.granularity} (n of every m "
                f"kept), got {sparsity!r}"
            )
        if method == "slimming" and not self.granularity.structured:
            raise ValueError(
                f"method 'slimming' ranks channels by their BatchNorm scale: it needs "
                f"granularity=channel, got {self.granularity}"
            )
        if allocation not in ALLOCATIONS:
            raise ValueError(
                f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}"
            )
        if allocation == "auto":
            allocation = self.granularity.default_allocation
        self.allocation = allocation
        check_int("round_to", round_to, 1)
        check_int("update_every", update_every, 1)
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty >= 0:
            raise ValueError(f"penalty must be a number >= 0, got {penalty!r}")
        if schedule is None:
            schedule = SparsitySchedule(self.sparsity, kind="one_shot")
        elif not math.isclose(schedule.target, self.sparsity):
            raise ValueError(
                f"schedule target ({schedule.target}) must equal sparsity ({self.sparsity})"
            )
        self.model = model
        self.method = method
        self.schedule = schedule
        self.round_to = round_to
        self.penalty_weight = float(penalty)
        self.update_every = update_every
        self.estimator_args = dict(estimator_args or {})
        self.layers: list[_Layer] = []
        self.groups: list[_Group] = []
        self.skipped: list[str] = []
        self.current: float | None = None
        self._last_update: int | None = None
        modules = select_modules(model, include, exclude)
        if self.granularity.structured:
            fused = [name for name, module in modules if stores_transposed(module)]
            if fused:
                more = f" and {len(fused) - 1} more" if len(fused) > 1 else ""
                raise ValueError(
                    f"granularity={self.granularity}: Hugging Face Conv1D layers ({fused[0]}{more}) "
                    "cannot be pruned by channel; choose granularity weight, block<R>x<C> or n:m, "
                    "or exclude them"
                )
            if example_inputs is None:
                raise ValueError("example_inputs is required for granularity=channel")
            self._attach_channels(model, modules, example_inputs)
        else:
            self._attach_weights(modules)

    # ------------------------------------------------------------------------------- attaching
    def _make_source(
        self, shape: tuple[int, ...], magnitude: Tensor, stats: MagnitudeStats | None
    ) -> MaskSource:
        estimator = ESTIMATORS[self.method]
        extra: dict[str, Any] = (
            {"stats": stats} if estimator.takes_stats and stats is not None else {}
        )
        if estimator.takes_granularity:
            extra["granularity"] = self.granularity
        try:
            return estimator(shape, magnitude, **self.estimator_args, **extra)
        except TypeError as error:
            raise ValueError(f"estimator_args for {self.method}: {error}") from None

    def _shared_stats(self, magnitudes: list[Tensor]) -> MagnitudeStats | None:
        """Under global allocation, the statistics of every source's magnitudes together: learned
        state scaled by them starts in the global magnitude ranking (per layer, each source
        scales by its own)."""
        return MagnitudeStats.of(magnitudes) if self.allocation == "global" else None

    def _attach_weights(self, modules: list[tuple[str, nn.Module]]) -> None:
        granularity = self.granularity
        chosen = []
        misfit = None
        for name, module in modules:
            weight = _weight_view(module)  # masks are defined on the (out, in, ...) view
            if (reason := granularity.misfit(weight.shape)) is not None:
                self.skipped.append(name)
                misfit = reason
                continue
            chosen.append((name, module, weight, granularity.scores(weight)))
        stats = self._shared_stats([magnitude for *_, magnitude in chosen]) if chosen else None
        for name, module, weight, magnitude in chosen:
            source = self._make_source(granularity.mask_shape(weight.shape), magnitude, stats)
            transposed = stores_transposed(module)
            attach(module, "weight", HadamardMask(source, granularity, transposed=transposed))
            counts = granularity.entry_sizes(weight.shape)
            self.layers.append(_Layer(name, module, source, counts, transposed))
        if self.skipped:
            warnings.warn(
                f"{len(self.skipped)} layer(s) left dense: their {misfit}: "
                f"{', '.join(self.skipped)}",
                stacklevel=3,
            )
        if not self.layers:
            raise ValueError(f"no layer can take granularity {self.granularity}")

    def _attach_channels(
        self, model: nn.Module, modules: list[tuple[str, nn.Module]], example_inputs: Any
    ) -> None:
        chosen = {id(m) for _, m in modules}
        ignored = [n for n, m in model.named_modules() if n and _prunable(m, PRUNABLE_TYPES)]
        ignored = [n for n in ignored if id(model.get_submodule(n)) not in chosen]
        groups = channel_groups(model, example_inputs, ignored=ignored)
        if not groups:
            raise ValueError(
                "no channel group can be pruned: every group reaches the model's output or an "
                "excluded layer"
            )
        named = dict(model.named_modules())
        magnitudes = [self._group_magnitude(group, named) for group in groups]
        stats = self._shared_stats(magnitudes)
        for group, magnitude in zip(groups, magnitudes):
            source = self._make_source((group.size,), magnitude, stats)
            scales = []
            for index, member in enumerate(group.members):
                module = named[member.module]
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and member.param == "weight":
                    scales.append((module, "weight"))
                rows = torch.tensor(member.rows, dtype=torch.long)
                channels = torch.tensor(member.channels, dtype=torch.long)
                identity = torch.equal(rows, channels) and len(rows) == group.size
                identity = identity and _original(module, member.param).shape[member.dim] == len(
                    rows
                )
                mask = HadamardMask(
                    source,
                    self.granularity,
                    dim=member.dim,
                    rows=None if identity else rows,
                    channels=None if identity else channels,
                    first=index == 0,
                )
                attach(module, member.param, mask)
            self.groups.append(_Group(group, source, scales))

    def _group_magnitude(self, group: ChannelGroup, named: Mapping[str, nn.Module]) -> Tensor:
        members = [(m, _original(named[m.module], m.param)) for m in group.members]
        return self.granularity.group_scores(group.size, members)

    # ------------------------------------------------------------------------------- stepping
    @property
    def sources(self) -> list[MaskSource]:
        return [entry.source for entry in (*self.layers, *self.groups)]

    def mask_parameters(self) -> list[nn.Parameter]:
        """The estimators' learned parameters (scores, gates, thresholds): give them their own
        optimizer or parameter group."""
        return [p for source in self.sources for p in source.parameters()]

    @property
    def freezes_weights(self) -> bool:
        """Whether the estimator learns the masks alone (``maskllm``): nothing else trains."""
        return ESTIMATORS[self.method].freezes_weights

    def weight_parameters(self) -> list[nn.Parameter]:
        """The model's trainable parameters other than :meth:`mask_parameters`: what the task's
        optimizer trains (none when :attr:`freezes_weights`)."""
        if self.freezes_weights:
            return []
        masks = {id(p) for p in self.mask_parameters()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in masks]

    def step(self, step: int) -> float:
        """Update the masks for optimizer step ``step``; returns the scheduled sparsity."""
        target = self.schedule(step)
        start, end = self.schedule.start_step, self.schedule.end_step
        progress = 1.0 if end is None or end <= start else (step - start) / (end - start)
        for source in self.sources:
            source.anneal(progress)
        due = self._last_update is None or step - self._last_update >= self.update_every
        if target != self.current or due:
            self.set_sparsity(target)
            self._last_update = step
        return target

    @torch.no_grad()
    def refresh_importance(self) -> None:
        """Recompute magnitude importance from the current (unmasked) weights."""
        for layer in self.layers:
            magnitude = self.granularity.scores(layer.weight())
            layer.source.magnitude = magnitude.to(layer.source.keep.device)
        if self.groups:
            named = dict(self.model.named_modules())
            for entry in self.groups:
                magnitude = self._group_magnitude(entry.group, named)
                if self.method == "slimming" and entry.scales:
                    magnitude = torch.stack(
                        [_original(m, n).detach().abs().float().cpu() for m, n in entry.scales]
                    ).mean(0)
                entry.source.magnitude = magnitude.to(entry.source.keep.device)

    @torch.no_grad()
    def set_sparsity(self, sparsity: float) -> None:
        """Choose which entries survive so the masked layers reach ``sparsity``."""
        sparsity = check_sparsity("sparsity", sparsity)
        if ESTIMATORS[self.method].ranks_by_magnitude:
            self.refresh_importance()
        sources = self.sources
        sizes = [layer.counts for layer in self.layers] + [None] * len(self.groups)
        keeps = self.granularity.select(
            [source.importance() for source in sources],
            sparsity,
            allocation=self.allocation,
            sizes=sizes,
            round_to=self.round_to,
        )
        for source, keep in zip(sources, keeps):
            source.keep.copy_(keep)
        self.current = sparsity

    def penalty(self) -> Tensor:
        """The estimator's penalty times ``penalty`` (a scalar tensor; 0 for penalty-free methods)."""
        device = self.sources[0].keep.device
        if self.penalty_weight == 0:
            return torch.zeros((), device=device)
        if self.method == "slimming":
            scales = [_original(m, n).abs() for entry in self.groups for m, n in entry.scales]
            if not scales:
                return torch.zeros((), device=device)
            return self.penalty_weight * torch.cat(scales).sum()  # the paper's λ·Σ|γ|
        terms = [t for t in (source.penalty() for source in self.sources) if t is not None]
        if not terms:
            return torch.zeros((), device=device)
        total = torch.stack([value for value, _ in terms]).sum()
        return self.penalty_weight * total / sum(count for _, count in terms)

    # ------------------------------------------------------------------------------- reporting
    @torch.no_grad()
    def layer_sparsity(self) -> list[dict[str, Any]]:
        """Per masked layer (or channel group): elements, zeros after masking, sparsity."""
        training = self.model.training
        self.model.eval()
        rows = []
        try:
            for layer in self.layers:
                weight = layer.module.weight
                zeros = int((weight == 0).sum())
                rows.append(
                    {
                        "layer": layer.name,
                        "params": weight.numel(),
                        "zeros": zeros,
                        "sparsity": zeros / weight.numel(),
                    }
                )
            for entry in self.groups:
                size = entry.group.size
                kept = int(entry.source.keep.sum())
                rows.append(
                    {
                        "layer": entry.group.root,
                        "channels": size,
                        "kept_channels": kept,
                        "channel_sparsity": 1 - kept / size,
                    }
                )
        finally:
            self.model.train(training)
        return rows

    def achieved_sparsity(self) -> float:
        """The sparsity the masks reach now: of masked weights, or of channels."""
        rows = self.layer_sparsity()
        if self.groups:
            return 1 - sum(r["kept_channels"] for r in rows) / sum(r["channels"] for r in rows)
        return sum(r["zeros"] for r in rows) / sum(r["params"] for r in rows)

    # ------------------------------------------------------------------------------- finalizing
    def keep_by_group(self) -> dict[str, Tensor]:
        """Channel granularity: group root name → bool mask of surviving channels."""
        return {entry.group.root: entry.source.keep.detach().cpu().clone() for entry in self.groups}

    def bake(self) -> nn.Module:
        """Set the final sparsity, then fold ``weight ⊙ mask`` into the weights and drop the
        parametrizations. Returns the model (dense tensors with zeros)."""
        if self.current != self.schedule.target:
            self.set_sparsity(self.schedule.target)
        return bake(self.model)

    def compact(self, example_inputs: Any, *, rtol: float = 1e-4, atol: float = 1e-5) -> nn.Module:
        """Bake, then physically remove the dropped channels (and everything coupled to them).

        The compacted model's outputs are checked against the baked (masked) model's on
        ``example_inputs``; a difference raises ``CompactionError``. Returns the compacted model.
        """
        if not self.granularity.structured:
            raise ValueError(
                f"compact removes channels: it needs granularity=channel, got "
                f"{self.granularity} (use bake for weight, block and n:m masks)"
            )
        if self.current != self.schedule.target:
            self.set_sparsity(self.schedule.target)  # before reading which channels survive
        keep = self.keep_by_group()
        baked = self.bake()
        reference = copy.deepcopy(baked)
        slim = compact(baked, example_inputs, keep)
        check_equivalent(reference, slim, example_inputs, rtol=rtol, atol=atol)
        return slim
