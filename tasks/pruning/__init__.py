"""The one pruning pipeline that every pruning job configures (:func:`prune` with a
:class:`PruningTarget`), the plan the ``pruning/`` config group builds, the report, and the
dense-model cache."""

from .dense import cache_dense, dense_cache_path
from .pipeline import PruningTarget, prune, pruning_plan
from .plan import PruningPlan
from .report import pruning_report, report_markdown, write_pruning_outputs
from .settle import recalibrate_batchnorm, settle_masks

__all__ = [
    "PruningPlan",
    "PruningTarget",
    "cache_dense",
    "dense_cache_path",
    "prune",
    "pruning_plan",
    "pruning_report",
    "recalibrate_batchnorm",
    "report_markdown",
    "settle_masks",
    "write_pruning_outputs",
]
