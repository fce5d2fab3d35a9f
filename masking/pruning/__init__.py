"""Pruning with learned Hadamard masks: parametrizations, estimators, schedules, compaction, export.

Typical use::

    pruner = Pruner(model, method="movement", granularity="weight", sparsity=0.9,
                    schedule=SparsitySchedule(0.9, kind="cubic", end_step=1000))
    for step, batch in enumerate(loader):
        pruner.step(step)                       # masks for this step
        loss = task_loss(model, batch) + pruner.penalty()
        ...
    model = pruner.bake()                       # or pruner.compact(example) for channel masks

Transformers: ``StructuredPruner(model, heads=0.25, neurons=0.5)`` masks attention heads (key/value
groups under grouped-query attention) and MLP neurons, and ``compact(example)`` removes them.
"""

from .compact import check_equivalent, compact
from .estimators import ESTIMATORS, MaskSource
from .export import export_pruned, load_example_inputs, load_pruned
from .granularity import Granularity, parse_granularity
from .graph import ChannelGroup, CompactionError, Member, channel_groups
from .masks import HadamardMask, bake, mask_sources, masked_tensors
from .pruner import PRUNABLE_TYPES, Pruner, select_modules
from .schedule import SCHEDULES, SparsitySchedule
from .sparsify import SparseConv2d, SparseLinear, sparsify
from .transformer import StructuredPruner, find_structures

__all__ = [
    "ESTIMATORS",
    "PRUNABLE_TYPES",
    "SCHEDULES",
    "ChannelGroup",
    "CompactionError",
    "Granularity",
    "HadamardMask",
    "MaskSource",
    "Member",
    "Pruner",
    "SparseConv2d",
    "SparseLinear",
    "SparsitySchedule",
    "StructuredPruner",
    "bake",
    "channel_groups",
    "check_equivalent",
    "compact",
    "export_pruned",
    "find_structures",
    "load_example_inputs",
    "load_pruned",
    "mask_sources",
    "masked_tensors",
    "parse_granularity",
    "select_modules",
    "sparsify",
]
