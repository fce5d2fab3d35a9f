"""Data-parallel runs on one machine: ``trainer=ddp`` / ``trainer=ddp_cpu`` start their own ranks.

Lightning starts the other ranks of a ``ddp`` run by running the command line again, which under
Hydra re-runs a whole ``-m`` sweep in every child and breaks jobs started from Python (tests,
notebooks, sweep launchers). Here the job starts them itself instead: it saves its resolved config,
starts ``python -m tasks <config>`` once per extra rank with the rendezvous variables set, and
takes rank 0 itself, as ``torchrun`` would. Lightning then sees processes launched from
outside and only joins them. Every rank runs the whole job (the ``torchrun`` model); only rank 0
writes the run's files (:func:`is_main_process`).

Nothing is started when the ranks come from outside: a cluster (SLURM through
``hydra/launcher=submitit_slurm``, whose ``tasks_per_node`` start one process per device),
``torchrun``, or a parent job of this module.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.environments import (
    LSFEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from .job import launch_dir

log = logging.getLogger(__name__)

# strategies whose ranks are separate processes started by a launcher (not ``*_spawn`` or
# ``*_fork``, which Lightning starts itself, and not single-process ones)
LAUNCHED_STRATEGIES = ("ddp", "fsdp", "deepspeed")


def is_main_process() -> bool:
    """True on global rank 0 (and in a run that is not distributed): the one that writes files."""
    return getattr(rank_zero_only, "rank", 0) == 0


def other_ranks_stop_here() -> bool:
    """After a job's last collective step: wait for every rank, then tell the non-zero ranks to
    end their job, so that rank 0 measures latency and writes the run's files alone. True on
    the ranks that should stop."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    torch.distributed.barrier()
    return not is_main_process()


def launched_from_outside() -> bool:
    """Whether this process is one rank of a job whose ranks something else started."""
    return (
        "LOCAL_RANK" in os.environ
        or SLURMEnvironment.detect()
        or TorchElasticEnvironment.detect()
        or LSFEnvironment.detect()
    )


def _strategy_name(strategy: Any) -> str:
    if isinstance(strategy, str):
        return strategy
    if isinstance(strategy, DictConfig | dict):  # a strategy object: DDPStrategy, FSDPStrategy
        target = str(strategy.get("_target_", "")).rsplit(".", 1)[-1].lower()
        return target.removesuffix("strategy")
    return type(strategy).__name__.lower().removesuffix("strategy")


def processes_per_node(trainer_cfg: DictConfig) -> int:
    """How many processes ``trainer_cfg`` asks for on this machine (1 unless it names a launched
    strategy such as ``ddp`` with several devices)."""
    name = _strategy_name(trainer_cfg.get("strategy", "auto"))
    if not name.startswith(LAUNCHED_STRATEGIES) or any(
        kind in name
        for kind in ("spawn", "fork", "notebook")  # Lightning starts those itself
    ):
        return 1
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    devices = trainer_cfg.get("devices", "auto")
    if isinstance(devices, str) and "," in devices:  # "0,1": device indices
        devices = [d for d in devices.split(",") if d.strip()]
    if not isinstance(devices, int | str):
        return len(list(devices))
    if accelerator in ("gpu", "cuda"):
        if devices in ("auto", "-1", -1):
            return max(1, torch.cuda.device_count())
        return _device_count(devices)
    if accelerator == "cpu":
        return 1 if devices == "auto" else _device_count(devices)
    return 1  # other accelerators: the launch is left to Lightning


def _device_count(devices: int | str) -> int:
    try:
        count = int(devices)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            f"trainer.devices must be a positive number of devices, a list of device indices or "
            f"'auto', got {devices!r}"
        )
    return count


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_ranks(cfg: DictConfig, output_dir: Path) -> Iterator[None]:
    """Start the other ranks of a one-machine data-parallel run for the duration of the job.

    Starts nothing when one process is asked for or the ranks come from outside. On exit waits for
    the started ranks and raises if one failed; if this rank fails, the others are stopped. The
    environment and the torch thread count of this process are restored afterwards, and its
    process group destroyed, so a sweep can run the next job in the same process.
    """
    processes = processes_per_node(cfg.trainer)
    if processes <= 1 or launched_from_outside():
        yield
        return
    num_nodes = int(cfg.trainer.get("num_nodes", 1))
    if num_nodes != 1:
        raise ValueError(
            f"trainer.num_nodes={num_nodes} needs a cluster launcher that starts every rank "
            "(hydra/launcher=submitit_slurm, or torchrun on each node)"
        )
    config_dir = output_dir / ".ddp"
    config_dir.mkdir(parents=True, exist_ok=True)
    config_file = config_dir / "config.yaml"
    # resolved: the ranks need neither Hydra nor its ${now:...} run folder
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    OmegaConf.save(OmegaConf.create(resolved), config_file)

    rendezvous = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(processes),
        "NODE_RANK": "0",
    }
    on_cpu = str(cfg.trainer.get("accelerator", "auto")) == "cpu" or not torch.cuda.is_available()
    threads = max(1, (os.cpu_count() or 1) // processes) if on_cpu else torch.get_num_threads()
    log.info("starting %d more process(es) for %d-process DDP", processes - 1, processes)
    children = []
    for rank in range(1, processes):
        env = {
            **os.environ,
            **rendezvous,
            "LOCAL_RANK": str(rank),
            "RANK": str(rank),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
        }
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "tasks", str(config_file)],
                env=env,
                cwd=launch_dir(),
            )
        )
    done = threading.Event()
    threading.Thread(target=_report_failures, args=(children, done), daemon=True).start()
    saved_env = {k: os.environ.get(k) for k in (*rendezvous, "LOCAL_RANK", "RANK")}
    saved_threads = torch.get_num_threads()
    os.environ.update({**rendezvous, "LOCAL_RANK": "0", "RANK": "0"})
    torch.set_num_threads(threads)
    failed = True
    try:
        yield
        failed = False
    finally:
        done.set()
        if failed:
            for child in children:
                if child.poll() is None:
                    child.kill()
        codes = [child.wait() for child in children]
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    bad = [(rank, code) for rank, code in enumerate(codes, start=1) if code != 0]
    if bad:
        rank, code = bad[0]
        raise RuntimeError(
            f"rank {rank} of the {processes}-process run ended with exit status {code} (its "
            "messages are above)"
        )


def _report_failures(children: list[subprocess.Popen], done: threading.Event) -> None:
    """Say at once when a started rank dies: rank 0 may be waiting for it in a collective, which
    fails only when the connection breaks or the collective times out."""
    reported: set[int] = set()
    while not done.wait(1.0):
        for rank, child in enumerate(children, start=1):
            code = child.poll()
            if code not in (None, 0) and rank not in reported:
                reported.add(rank)
                log.error("rank %d ended with exit status %s while rank 0 still runs", rank, code)


Job = Callable[[DictConfig, Path], dict[str, float]]


def data_parallel(job: Job) -> Job:
    """Mark a job that trains through ``cfg.trainer``: for its duration, the other ranks of a
    one-machine data-parallel trainer are started (:func:`local_ranks`)."""

    @functools.wraps(job)
    def with_ranks(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
        with local_ranks(cfg, output_dir):
            return job(cfg, output_dir)

    return with_ranks
