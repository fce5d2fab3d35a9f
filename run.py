"""Entry point: ``python run.py [group=option ...]``; ``-m`` sweeps. See README.md."""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from tasks import run
from tasks.runtime.job import in_multirun

log = logging.getLogger("run")

# what the project raises for bad input, and what the system raises for a file it cannot read or
# write (a full disk, a read-only folder): shown as one line, not a traceback
USER_ERRORS = (ValueError, TypeError, OSError, MissingMandatoryValue)


def one_line(error: Exception) -> str:
    """The message of ``error`` on one line; a missing ``???`` value names its key."""
    if isinstance(error, MissingMandatoryValue):
        key = error.full_key or "a value"
        return f"{key} must be given (add {key}=... to the command)"
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split())


def composition_error(error: Exception) -> str:
    """Hydra's several-line message for a bad override on one line: the problem, then the hint."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0].removeprefix("In 'config': ").rstrip(".") if lines else type(error).__name__
    text = str(error)
    listed = (
        text.split("Available options in", 1)[1].splitlines()[1:] if "Available" in text else []
    )
    options = []
    for line in listed:  # the tab-indented lines after the header, up to the next paragraph
        if not line.startswith("\t"):
            break
        if not line.strip().startswith("_"):  # _common.yaml and the like are parts, not options
            options.append(line.strip())
    if options:
        return f"{first} (the options are {', '.join(options)})"
    override = getattr(error, "override", None)  # an override that does not parse
    if isinstance(override, str):
        return f"override {override!r} does not parse ({first})"
    hint = next((x for x in lines if x.startswith("To append to your config use")), None)
    if hint is not None:
        return (
            f"{first}: no such key (to add one, {hint.removeprefix('To append to your config ')})"
        )
    return first


def check_overrides(argv: list[str]) -> None:
    """Compose the config from the command line as Hydra will, so that a typo in an override is
    one ``error:`` line rather than Hydra's block. Left to Hydra when any flag is given (``-m``,
    ``--cfg``, ``--help``...): a sweep's overrides are lists, and the flags have their own output."""
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(Path(__file__).parent / "conf"), version_base="1.3"):
            compose("config", overrides=argv)
    except (HydraException, OmegaConfBaseException) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return  # Hydra reports it in full
        raise SystemExit(f"error: {composition_error(error)}") from None


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
        message = one_line(error)
        log.error("%s: %s", type(error).__name__, message)
        raise SystemExit(f"error: {message} (HYDRA_FULL_ERROR=1 shows the traceback)") from None


if __name__ == "__main__":
    check_overrides(sys.argv[1:])
    main()
