"""The application around the ``masking`` library: ``run(cfg)`` picks the job from the config.

- ``jobs/``: one file per job (inpaint, prune, prune_inpaint, predict, demo);
- ``modules/``: the LightningModules, their losses, metrics and schedules;
- ``pruning/``: the one pruning pipeline both pruning jobs configure, and its report;
- ``runtime/``: files, checkpoints, the trainer, processes and cost measurements;
- ``sweep/``: job records, the multirun summary and its plots.

Imports point one way: jobs → pruning, modules → runtime → masking (sweep → runtime).
"""

from .run import run

__all__ = ["run"]
