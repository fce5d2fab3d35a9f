"""Sweeps: the record each job leaves (``job.json``), reading a multirun folder back, its
summary table and plots, and the Hydra callback that writes them when a sweep ends."""

from .plots import pareto_front, plot_bins, plot_pareto
from .reading import Job, read_job, read_sweep, varying_overrides
from .records import JOB_FILE, recording
from .summary import SUMMARY_FILES, SweepSummaryCallback, main, summarize

__all__ = [
    "JOB_FILE",
    "SUMMARY_FILES",
    "Job",
    "SweepSummaryCallback",
    "main",
    "pareto_front",
    "plot_bins",
    "plot_pareto",
    "read_job",
    "read_sweep",
    "recording",
    "summarize",
    "varying_overrides",
]
