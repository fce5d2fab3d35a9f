"""What each job records: ``job.json`` beside its ``metrics.json``, with its status, the error
that ended it, its wall time and its overrides, written however the job ends."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..runtime.files import write_json
from ..runtime.job import job_overrides
from ..runtime.processes import is_main_process

log = logging.getLogger(__name__)

JOB_FILE = "job.json"


def error_line(error: BaseException) -> str:
    """``Type: first line of the message``: what a summary table shows of a failure."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}".strip()


class JobRecord:
    """The record being filled in while a job runs."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {"status": "failed", "error": None, "value": None}

    def completed(self, value: float) -> None:
        self.fields.update(status="completed", value=value if math.isfinite(value) else None)


@contextlib.contextmanager
def recording(cfg: DictConfig) -> Iterator[JobRecord]:
    """Leave ``job.json`` in ``cfg.output_dir`` however the block ends (rank 0 only)."""
    started, clock = time.time(), time.perf_counter()
    record = JobRecord()
    try:
        yield record
    except BaseException as error:
        if not isinstance(error, Exception):
            record.fields["status"] = "interrupted"  # SIGTERM, Ctrl-C: resumable, not a failure
        record.fields["error"] = error_line(error)
        raise
    finally:
        if is_main_process():
            record.fields.update(
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
                write_json(Path(cfg.output_dir) / JOB_FILE, record.fields)
            except OSError as error:  # never hide the job's own outcome behind this one
                log.warning("could not write %s: %s", JOB_FILE, error)
