"""Compose the project's Hydra config in tests, as `python run.py ...` would, or run that command."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def compose_config(output_dir, overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def run_cli(*arguments: str, env=None, timeout: int = 600):
    """``python run.py <arguments>`` from the repository root; the finished process."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "run.py", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def error_line(result) -> str:
    """The one ``error:`` line of a failed command, which must print no traceback or block."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "HYDRA_FULL_ERROR=1 for a complete stack trace" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    return line


def finished_run(run_dir, *overrides: str, timeout: int = 600) -> dict:
    """The metrics of ``python run.py <overrides>`` run into ``run_dir``, which must succeed."""
    import json

    result = run_cli(*overrides, f"hydra.run.dir={run_dir}", timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((Path(run_dir) / "metrics.json").read_text())
