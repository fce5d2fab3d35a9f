"""``python -m tasks <config.yaml>``: one started rank of a one-machine data-parallel job.

:func:`tasks.runtime.processes.local_ranks` saves the job's resolved config and starts this once
per extra rank, with the rendezvous variables set; the rank runs the whole job, as under torchrun.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import OmegaConf

from .run import run


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(
            "usage: python -m tasks <resolved config.yaml> (started by a DDP job)", file=sys.stderr
        )
        return 2
    rank = os.environ.get("RANK", "?")
    logging.basicConfig(level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(message)s")
    run(OmegaConf.load(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
