"""The summary of a multirun directory. After a multirun, :class:`SweepSummaryCallback` (registered in
``conf/config.yaml``) writes into the sweep directory

- ``summary.csv``: one row per job, every override and every metric;
- ``summary.md``: the same rows with the overrides that differ between jobs and the headline
  metrics, failed jobs with their error;
- ``summary_pareto.png`` for pruning jobs: final quality against achieved sparsity, one line per
  method and granularity, the Pareto front marked;
- ``summary_bins.png`` for inpainting jobs: PSNR and hole L1 per hole-ratio bin, one line per job.

``python -m tasks.sweep <multirun dir>`` writes them on demand (for a sweep that was stopped, or
one made before this existed).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..runtime.files import write_atomic
from .plots import plot_bins, plot_pareto
from .reading import Job, headline_metrics, read_sweep, varying_overrides

log = logging.getLogger(__name__)

SUMMARY_FILES = ("summary.csv", "summary.md", "summary_pareto.png", "summary_bins.png")


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def summary_csv(jobs: list[Job]) -> str:
    overrides = varying_overrides(jobs)
    metrics = sorted({k for job in jobs for k in job.metrics})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["job", "status", "wall_time_s", *overrides, *metrics, "overrides", "error"])
    for job in jobs:
        writer.writerow(
            [
                job.label,
                job.status,
                "" if job.wall_time_s is None else job.wall_time_s,
                *(job.overrides.get(k, "") for k in overrides),
                *(job.metrics.get(k, "") for k in metrics),
                " ".join(f"{k}={v}" for k, v in job.overrides.items()),
                job.error or "",
            ]
        )
    return buffer.getvalue()


def summary_markdown(jobs: list[Job], sweep_dir: Path, pictures: list[str]) -> str:
    overrides = varying_overrides(jobs)
    metrics = headline_metrics(jobs)
    common = {
        k: v
        for k, v in (jobs[0].overrides.items() if jobs else ())
        if k not in overrides and all(job.overrides.get(k) == v for job in jobs)
    }
    failed = [job for job in jobs if job.status != "completed"]
    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        f"{len(jobs)} jobs, {len(jobs) - len(failed)} completed"
        + (f", {len(failed)} not completed" if failed else "")
        + ".",
    ]
    if common:
        lines += [
            "",
            "Common to every job: `" + " ".join(f"{k}={v}" for k, v in common.items()) + "`",
        ]
    header = ["job", *overrides, *metrics, "wall time (s)", "status"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        status = job.status
        if job.error:
            status += ": " + job.error.replace("|", "\\|")[:200]
        cells = [
            job.label,
            *(job.overrides.get(k, "") for k in overrides),
            *(_format(job.metrics.get(k)) for k in metrics),
            _format(job.wall_time_s),
            status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for picture in pictures:
        lines += ["", f"![{picture}]({picture})"]
    return "\n".join(lines) + "\n"


def summarize(sweep_dir: str | Path) -> list[Job]:
    """Write the summary files into ``sweep_dir``; return its jobs."""
    sweep_dir = Path(sweep_dir)
    jobs = read_sweep(sweep_dir)
    if not jobs:
        raise ValueError(f"sweep_dir: {sweep_dir} holds no job folders (with job.json)")
    pictures = []
    for name, plot in (("summary_pareto.png", plot_pareto), ("summary_bins.png", plot_bins)):
        data = plot(jobs)
        if data is not None:
            write_atomic(sweep_dir / name, data)
            pictures.append(name)
    write_atomic(sweep_dir / "summary.csv", summary_csv(jobs))
    write_atomic(sweep_dir / "summary.md", summary_markdown(jobs, sweep_dir, pictures))
    return jobs


class SweepSummaryCallback(Callback):
    """Hydra callback: the summary of the sweep once every job has ended. A job that failed is
    a row with its error (the jobs catch their errors, so the sweep runs to the end); if any
    failed, the command ends with exit status 1 after the summary is written."""

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            jobs = summarize(sweep_dir)
        except (OSError, ValueError) as error:
            log.error("no sweep summary: %s", error)
            return
        log.info("sweep summary: %s", sweep_dir / "summary.md")
        failed = [job for job in jobs if job.status != "completed"]
        if failed:
            message = (
                f"{len(failed)} of {len(jobs)} jobs did not complete (jobs "
                f"{', '.join(job.label for job in failed)}); see {sweep_dir / 'summary.md'}"
            )
            log.error(message)
            if self.fail_on_error:
                raise SystemExit(f"error: {message}")


def main(argv: list[str] | None = None) -> int:
    """``python -m tasks.sweep <multirun dir>``: write the summary of a sweep."""
    parser = argparse.ArgumentParser(prog="python -m tasks.sweep", description=main.__doc__)
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. multirun/2026-11-29_10-00-00")
    args = parser.parse_args(argv)
    try:
        jobs = summarize(args.sweep_dir)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    completed = sum(job.status == "completed" for job in jobs)
    print(f"{completed} of {len(jobs)} jobs completed; wrote {Path(args.sweep_dir) / 'summary.md'}")
    return 0
