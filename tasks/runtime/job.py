"""What Hydra knows about the running job: the folder it was launched from, its overrides, and
which sweep it belongs to. Outside Hydra (a test, a notebook) each falls back to a plain value."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

# the exception types a bad setting raises, re-raised with their message when a config builds them
SETTING_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)


def _hydra() -> Any | None:
    try:
        return HydraConfig.get()
    except ValueError:  # not inside a Hydra job
        return None


def launch_dir() -> Path:
    """The folder the command was started from (Hydra changes into the run folder)."""
    hydra = _hydra()
    return Path(hydra.runtime.cwd) if hydra is not None else Path.cwd()


def launch_path(value: Any) -> Path:
    """A path from the config: ``~`` expanded, a relative one taken from the launch folder."""
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else launch_dir() / path


def job_overrides() -> list[str]:
    """The command-line overrides of the running Hydra job (empty outside Hydra)."""
    hydra = _hydra()
    return list(hydra.overrides.task) if hydra is not None else []


def in_multirun() -> bool:
    hydra = _hydra()
    return hydra is not None and hydra.mode == RunMode.MULTIRUN


def sweep_identity() -> dict[str, Any] | None:
    """``{"group", "job", "overrides"}`` of the running multirun job; None outside a sweep."""
    if not in_multirun():
        return None
    hydra = _hydra()
    return {
        "group": os.path.basename(os.path.normpath(str(hydra.sweep.dir))),
        "job": int(hydra.job.num),
        "overrides": list(hydra.overrides.task),
    }


def setting_error(error: InstantiationException) -> BaseException:
    """The error a config object's constructor raised, out of Hydra's wrapper: the same type,
    its message prefixed with the config key that built it unless it names the key already
    (``data: crop_size must be an int >= 8, got 7``). Other errors come back as they are."""
    cause: BaseException = error
    while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
        cause = cause.__cause__
    if type(cause) not in SETTING_ERRORS:
        return error if cause is error else cause
    key = next(
        (line.split(":", 1)[1].strip() for line in str(error).splitlines() if "full_key:" in line),
        "",
    )
    message = str(cause.args[0]) if len(cause.args) == 1 else str(cause)
    if key and not message.startswith(key):
        message = f"{key}: {message}"
    return type(cause)(message)


def _finished_run(folder: Path) -> str | None:
    """What in ``folder`` shows a finished run: its ``metrics.json``, or a ``job.json`` whose status
    is ``completed``. An interrupted or failed run's folder is not one (a run may resume there)."""
    if (folder / "metrics.json").is_file():
        return "metrics.json"
    try:
        record = json.loads((folder / "job.json").read_text())
    except (OSError, ValueError):
        return None
    return "job.json" if isinstance(record, dict) and record.get("status") == "completed" else None


class RunFolderGuard(Callback):
    """Hydra callback: refuse, before Hydra writes anything, to start a run in a folder that holds
    a finished run's results (``hydra.run.dir`` given twice), or a sweep in a folder that holds
    another sweep (``hydra.sweep.dir``). A stopped run's folder may be resumed in. The later ranks
    of a multi-process job share their folder and are let through."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("RANK", "0") != "0" or os.environ.get("SLURM_PROCID", "0") != "0":
            return
        folder = Path(str(config.hydra.run.dir))
        taken = _finished_run(folder)
        if taken:
            raise SystemExit(
                f"error: hydra.run.dir {str(folder)!r} holds another run's {taken}; give the run "
                "a new folder (its results would replace that run's)"
            )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        if (folder / "multirun.yaml").is_file():
            raise SystemExit(
                f"error: hydra.sweep.dir {str(folder)!r} holds another sweep; give the sweep a "
                "new folder (its jobs would replace that sweep's)"
            )
