"""Jobs: the ``run(cfg)`` entry and, with the next issues, the Lightning tasks (inpaint, prune)."""

from .run import run

__all__ = ["run"]
