"""Sweeps: what each job records, and the summary of a multirun directory.

Every job writes ``job.json`` beside its ``metrics.json``: its status, the error that ended it,
its wall time and its overrides. After a multirun, :class:`SweepSummaryCallback` (registered in
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

import csv
import io
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .distributed import is_main_process
from .io import write_atomic, write_json

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
SUMMARY_FILES = ("summary.csv", "summary.md", "summary_pareto.png", "summary_bins.png")

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
    r"final/sparsity",
    r"final/params",
    r"final/nonzero_params",
    r"final/mac_reduction",
    r"final/latency_batch_\d+_ms",
    r"final/speedup_batch_\d+",
    r"train/steps",
    r"demo/psnr_hole",
)


# -- what a job records --------------------------------------------------------------------------


def job_overrides() -> list[str]:
    """The command-line overrides of the running Hydra job (empty outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


def run_recorded(cfg: DictConfig) -> float:
    """:func:`tasks.run` that leaves ``job.json`` in the run directory however the job ends."""
    from .run import run

    started, clock = time.time(), time.perf_counter()
    record: dict[str, Any] = {"status": "failed", "error": None, "value": None}
    try:
        value = run(cfg)
        record.update(status="completed", value=value if math.isfinite(value) else None)
        return value
    except BaseException as error:
        if not isinstance(error, Exception):
            record["status"] = "interrupted"  # SIGTERM, Ctrl-C: resumable, not a failure
        message = str(error).strip().splitlines()
        record["error"] = f"{type(error).__name__}: {message[0] if message else ''}".strip()
        raise
    finally:
        if is_main_process():
            record.update(
                task=str(cfg.task.name),
                overrides=job_overrides(),
                optimized_metric=str(cfg.get("optimized_metric")),
                started=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                wall_time_s=round(time.perf_counter() - clock, 3),
                # which process ran it and when: shows a parallel launcher's jobs overlapping
                pid=os.getpid(),
                start_unix=started,
                end_unix=time.time(),
            )
            try:
                write_json(Path(cfg.output_dir) / JOB_FILE, record)
            except OSError as error:  # never hide the job's own outcome behind this one
                log.warning("could not write %s: %s", JOB_FILE, error)


# -- reading a sweep ------------------------------------------------------------------------------


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
    if "overrides" in record:
        overrides = record["overrides"]
    else:
        from omegaconf import OmegaConf

        overrides = list(OmegaConf.load(hydra_overrides))
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


# -- writing the summary --------------------------------------------------------------------------


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


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def pareto_front(
    points: list[tuple[float, float]], resolution: float = 1e-3
) -> list[tuple[float, float]]:
    """The points no other point beats on both sparsity and quality (higher is better for both),
    by increasing sparsity. Sparsities within ``resolution`` count as equal (a target of 0.9 is
    reached as 0.8999998 or 0.9000001 depending on ties)."""
    front: list[tuple[float, float]] = []
    for sparsity, quality in sorted(points, key=lambda p: (-round(p[0] / resolution), -p[1])):
        if not front or quality > front[-1][1]:
            front.append((sparsity, quality))
    return sorted(front)


def _quality_key(job: Job) -> str | None:
    for key in ("final/acc", "final/psnr"):
        if key in job.metrics:
            return key
    return None


def plot_pareto(jobs: list[Job]) -> bytes | None:
    """Final quality against achieved sparsity for the pruning jobs; None when there are none."""
    rows = [j for j in jobs if "final/sparsity" in j.metrics and _quality_key(j)]
    if not rows:
        return None
    key = _quality_key(rows[0])
    rows = [j for j in rows if key in j.metrics]
    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for job in rows:
        method = job.report.get("method") or job.overrides.get("pruning", "?")
        granularity = job.report.get("granularity") or job.overrides.get(
            "pruning.granularity", "weight"
        )
        groups.setdefault(f"{method}, {granularity}", []).append(
            (job.metrics["final/sparsity"], job.metrics[key])
        )
    for name, points in sorted(groups.items()):
        xs, ys = zip(*sorted(points))
        axes.plot(xs, ys, marker="o", label=name)
    front = pareto_front([p for points in groups.values() for p in points])
    if front:
        xs, ys = zip(*front)
        axes.plot(xs, ys, "k--", linewidth=1, label="Pareto front")
        axes.scatter(xs, ys, s=160, facecolors="none", edgecolors="k", linewidths=1.2)
    dense_key = key.replace("final/", "dense/")
    dense = [j.metrics[dense_key] for j in rows if dense_key in j.metrics]
    if dense:
        axes.axhline(sum(dense) / len(dense), color="grey", linestyle=":", label="dense")
    axes.set_xlabel(
        "achieved sparsity (fraction of weights, or of channels for channel granularity)"
    )
    axes.set_ylabel({"final/acc": "final accuracy (%)", "final/psnr": "final PSNR (dB)"}[key])
    axes.set_title("Quality against sparsity, one line per estimator and granularity")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def _bins(job: Job) -> list[str]:
    return sorted(k.rsplit("/", 1)[1] for k in job.metrics if k.startswith("val/psnr/hole_"))


def _bin_label(name: str) -> str:
    low, high = name.removeprefix("hole_").split("_")
    return f"{int(low)}–{int(high)} %"


def _styles(jobs: list[Job], keys: list[str], styles: list[str]) -> dict[str, str]:
    """A style per job from the value of ``keys`` (the same value, the same style)."""
    values = list(dict.fromkeys(tuple(job.overrides.get(k) for k in keys) for job in jobs))
    return {
        job.label: styles[values.index(tuple(job.overrides.get(k) for k in keys)) % len(styles)]
        for job in jobs
    }


def plot_bins(jobs: list[Job]) -> bytes | None:
    """PSNR and hole L1 per hole-ratio bin, one line per inpainting job; None when there are
    none."""
    rows = [j for j in jobs if _bins(j)]
    if not rows:
        return None
    varying = varying_overrides(rows)
    plt = _figure()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    # colour by the first override that varies (e.g. layer), line style by the second (mask)
    colours = _styles(rows, varying[:1], [f"C{i}" for i in range(10)])
    dashes = _styles(rows, varying[1:2], ["-", "--", ":", "-."])
    for job in rows:
        bins = _bins(job)
        label = ", ".join(f"{k}={job.overrides.get(k, '')}" for k in varying) or job.label
        style = {"color": colours[job.label], "linestyle": dashes[job.label], "marker": "o"}
        x = range(len(bins))
        left.plot(x, [job.metrics[f"val/psnr/{b}"] for b in bins], label=label, **style)
        right.plot(x, [job.metrics[f"val/hole_l1/{b}"] for b in bins], label=label, **style)
    bins = _bins(rows[0])
    for axes, title in ((left, "PSNR (dB), higher is better"), (right, "hole L1, lower is better")):
        axes.set_xticks(range(len(bins)), [_bin_label(b) for b in bins], fontsize=8)
        axes.set_xlabel("hole ratio of the evaluation masks")
        axes.set_title(title)
        axes.grid(alpha=0.3)
    right.legend(fontsize=7, loc="upper left")
    figure.suptitle("Inpainting quality by hole-ratio bin, one line per job")
    data = _png(figure)
    plt.close(figure)
    return data


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
    import argparse

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


if __name__ == "__main__":
    sys.exit(main())
