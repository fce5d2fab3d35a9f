"""The logger and the extra callbacks of a training job (``logger/`` and ``callbacks/`` groups).

Under a sweep, a wandb run joins the sweep's group (the multirun folder's name), is named after
its job number and overrides, and carries the overrides and the resolved config as its config, so
that the runs of one sweep line up in wandb's table. Offline unless the user sets it up.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# callbacks that read the logger: left out, with a note, when the run has none
NEED_LOGGER = ("LearningRateMonitor", "DeviceStatsMonitor")


def sweep_identity() -> dict[str, Any] | None:
    """``{"group", "job", "overrides"}`` of the running multirun job; None outside a sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return {
        "group": os.path.basename(os.path.normpath(str(hydra_cfg.sweep.dir))),
        "job": int(hydra_cfg.job.num),
        "overrides": list(hydra_cfg.overrides.task),
    }


def build_logger(cfg: DictConfig) -> Any:
    """``cfg.logger`` instantiated (False for ``logger=none``); wandb runs of a sweep share a
    group and carry their overrides."""
    from hydra.utils import instantiate

    logger_cfg = cfg.logger
    if not logger_cfg.get("_target_"):
        return False
    if not str(logger_cfg._target_).endswith("WandbLogger"):
        return instantiate(logger_cfg)
    from hydra.utils import get_class

    os.environ.setdefault("WANDB_MODE", "offline")
    arguments = OmegaConf.to_container(logger_cfg, resolve=True)
    target = arguments.pop("_target_")
    sweep = sweep_identity()
    if sweep is not None:
        if arguments.get("group") is None:
            arguments["group"] = sweep["group"]
        if arguments.get("name") is None:
            arguments["name"] = f"{sweep['job']}: " + " ".join(sweep["overrides"])
    # passed to wandb.init as it is (through instantiate, its nested _target_ nodes would be built)
    config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    config["overrides"] = sweep["overrides"] if sweep else []
    return get_class(target)(**arguments, config=config)


def build_callbacks(cfg: DictConfig, logger: Any) -> list[Any]:
    """The callbacks of ``cfg.callbacks`` (a mapping of name to config), those that need a logger
    left out when there is none."""
    from hydra.utils import instantiate

    callbacks = []
    for name, spec in (cfg.get("callbacks") or {}).items():
        if spec is None or not spec.get("_target_"):
            continue
        if logger is False and str(spec._target_).rsplit(".", 1)[-1] in NEED_LOGGER:
            log.info("callbacks.%s needs a logger; logger=none, so it is left out", name)
            continue
        callbacks.append(instantiate(spec))
    return callbacks
