"""Entry point: ``python run.py [group=option ...]``; ``-m`` sweeps. See README.md."""

import logging
import os

import hydra
from omegaconf import DictConfig

from tasks import run

log = logging.getLogger("run")

# what the project raises for bad input: shown as one line, not a traceback
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        return run(cfg)
    except USER_ERRORS as error:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if os.environ.get("HYDRA_FULL_ERROR") == "1" or HydraConfig.get().mode != RunMode.RUN:
            raise  # the traceback on request; a sweep records the failed job and goes on
        log.error("%s: %s", type(error).__name__, error)
        raise SystemExit(f"error: {error} (HYDRA_FULL_ERROR=1 shows the traceback)") from None


if __name__ == "__main__":
    main()
