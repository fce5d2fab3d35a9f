"""Reading a sweep back from disk: one :class:`Job` per job folder of a multirun directory."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .records import JOB_FILE

# the metrics the Markdown table shows, in this order (the CSV has every metric)
HEADLINE = (
    r"val/psnr",
    r"val/ssim",
    r"val/hole_l1",
    r"dense/acc",
    r"masked/acc",
    r"final/acc",
    r"dense/psnr",
    r"masked/psnr",
    r"final/psnr",
    r"final/hole_l1",
    r"dense/ppl",
    r"final/ppl",
    r"final/sparsity",
    r"final/params",
    r"final/nonzero_params",
    r"final/mac_reduction",
    r"final/latency_batch_\d+_ms",
    r"final/speedup_batch_\d+",
    r"train/steps",
    r"demo/psnr_hole",
)


@dataclass
class Job:
    """One job of a sweep as found on disk."""

    directory: Path
    number: int
    overrides: dict[str, str]
    status: str
    error: str | None = None
    wall_time_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.directory.name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _parse_overrides(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def read_job(directory: Path) -> Job | None:
    """The job in ``directory``, or None if it is not a job directory of a sweep."""
    record = _read_json(directory / JOB_FILE)
    hydra_overrides = directory / ".hydra" / "overrides.yaml"
    if not record and not hydra_overrides.is_file():
        return None
    # a job killed before it wrote job.json still has Hydra's record of its overrides
    overrides = record["overrides"] if "overrides" in record else OmegaConf.load(hydra_overrides)
    number = int(directory.name) if directory.name.isdigit() else -1
    metrics = _read_json(directory / "metrics.json")
    return Job(
        directory=directory,
        number=number,
        overrides=_parse_overrides(overrides),
        # a job with no record was killed, or is still running
        status=record.get("status", "unfinished"),
        error=record.get("error") or (None if record else "no job.json: killed or still running"),
        wall_time_s=record.get("wall_time_s"),
        metrics={k: v for k, v in metrics.items() if isinstance(v, int | float)},
        report=_read_json(directory / "prune_report.json"),
    )


def read_sweep(sweep_dir: str | Path) -> list[Job]:
    """The jobs of a multirun directory, in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NotADirectoryError(f"sweep_dir: no folder at {sweep_dir}")
    jobs = [job for d in sorted(sweep_dir.iterdir()) if d.is_dir() and (job := read_job(d))]
    return sorted(jobs, key=lambda job: (job.number, job.label))


def varying_overrides(jobs: list[Job]) -> list[str]:
    """The override keys whose value is not the same in every job, in first-seen order."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def headline_metrics(jobs: list[Job]) -> list[str]:
    present = {k for job in jobs for k in job.metrics}
    ordered = []
    for pattern in HEADLINE:
        ordered += sorted(k for k in present if re.fullmatch(pattern, k) and k not in ordered)
    return ordered
