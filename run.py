"""Entry point: ``python run.py [group=option ...]``; ``-m`` sweeps. See README.md."""

import logging
import os

import hydra
from omegaconf import DictConfig

from tasks import run
from tasks.runtime.job import in_multirun

log = logging.getLogger("run")

# what the project raises for bad input: shown as one line, not a traceback
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        return run(cfg)  # leaves job.json (status, error, wall time) in the run folder
    except Exception as error:
        if in_multirun():
            # the sweep goes on; the summary lists this job with its error (Optuna counts the
            # NaN as a failed trial)
            log.exception("this job failed: %s", error)
            return float("nan")
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(error, USER_ERRORS):
            raise
        log.error("%s: %s", type(error).__name__, error)
        raise SystemExit(f"error: {error} (HYDRA_FULL_ERROR=1 shows the traceback)") from None


if __name__ == "__main__":
    main()
