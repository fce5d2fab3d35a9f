"""The jobs a user runs first, end to end: wall time and final metrics of ``python run.py`` (the
default inpainting job) and ``python run.py task=prune`` (the default pruning job, its dense model
trained from scratch into a fresh cache).

    python benchmarks/bench_jobs.py                       # both, full size (40 min on 2 cores)
    python benchmarks/bench_jobs.py --jobs inpaint        # one of them
    python benchmarks/bench_jobs.py --jobs inpaint -- trainer.max_epochs=2   # extra overrides

Each job runs as the README's command in a subprocess from the repository root, into a temporary
run folder (kept with ``--keep``); the wall time is the subprocess's, so it includes Python's and
the libraries' start-up, as a user's command does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine_line, provenance, write_report

JOBS = {
    "inpaint": {
        "command": [],
        "metrics": ["val/psnr", "val/ssim", "val/hole_l1", "train/steps"],
    },
    "prune": {
        "command": ["task=prune"],
        "metrics": ["dense/acc", "masked/acc", "final/acc", "final/sparsity"],
    },
}


def run_job(name: str, extra: list[str], work: Path) -> dict:
    run_dir = work / name
    command = [*JOBS[name]["command"], *extra, f"hydra.run.dir={run_dir}"]
    if name == "prune":  # a fresh cache: the dense training is part of the job's first run
        command.append(f"task.cache_dir={work / 'cache'}")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "run.py", *command], cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: job {name} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "job": name,
        "command": "python run.py " + " ".join([*JOBS[name]["command"], *extra]),
        "wall_time_s": wall,
        "metrics": metrics,
        "headline": {k: metrics[k] for k in JOBS[name]["metrics"] if k in metrics},
    }


def markdown(payload: dict) -> str:
    lines = [
        "# The default jobs end to end",
        "",
        machine_line(payload) + ".",
        "",
        "| job | command | wall time | metrics |",
        "|---|---|---:|---|",
    ]
    for row in payload["results"]:
        minutes, seconds = divmod(round(row["wall_time_s"]), 60)
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in row["headline"].items())
        lines.append(
            f"| {row['job']} | `{row['command']}` | {minutes} min {seconds} s | {metrics} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS))
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every job (after --)")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_jobs_"))
    try:
        results = [run_job(name, args.overrides, work) for name in args.jobs]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    payload = {"benchmark": "jobs", **provenance(torch.device("cpu")), "results": results}
    write_report(args.out, payload, markdown(payload), suite="jobs")
    return payload


if __name__ == "__main__":
    main()
