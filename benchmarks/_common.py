"""What every benchmark shares: side-by-side timing and the provenance written with each result.

Method: ``torch.utils.benchmark.Timer`` (it synchronises CUDA inside the timed region) with every
candidate warmed up, then timed for a short block of consecutive calls per round, with the
candidates interleaved in a rotating order, so a noisy neighbour slows all candidates of a round
alike. We report the median and the interquartile range of the per-call block means over rounds, and
ratios of medians taken in the same run.

On Linux with glibc, importing this module pins the allocator (``pin_allocator``): left alone, glibc
hands every freed block above its moving mmap threshold back to the kernel, so a fresh 16 MB output is
page-faulted again on each call or not, depending on what earlier calls left in the heap. Measured on
the 2-core CI machine, ``nn.Conv2d`` at (64, 128²) took 12 ms in one state and 24-29 ms in the
other, and a 64 MB output 49 against 97 ms: the allocator, not the kernels, then decides a ratio.
Pinned, freed memory stays in the heap and every candidate runs on warm pages.
``MASKING_BENCH_MALLOC=default`` leaves glibc as it is; each result records which it was.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from masking.io import write_atomic
from masking.pruning import Pruner

REPO = Path(__file__).resolve().parent.parent

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_PINNED_BYTES = 2**30


def pin_allocator() -> str:
    """Keep freed CPU memory in glibc's heap (mmap and trim thresholds at 1 GiB); says what it did."""
    if os.environ.get("MASKING_BENCH_MALLOC") == "default":
        return "default (MASKING_BENCH_MALLOC=default)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "default (not glibc)"
    libc = ctypes.CDLL("libc.so.6")
    pinned = all(
        libc.mallopt(param, _PINNED_BYTES) == 1 for param in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD)
    )
    return (
        "glibc, mmap and trim thresholds pinned at 1 GiB" if pinned else "default (mallopt failed)"
    )


ALLOCATOR = pin_allocator()


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(device: torch.device) -> dict:
    """Commit, library versions and device description for a result file."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "torchvision"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        desc = {
            "type": "cuda",
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
        }
        versions["cuda"] = torch.version.cuda
    else:
        desc = {"type": "cpu", "name": _cpu_name(), "threads": torch.get_num_threads()}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "device": desc,
        "allocator": ALLOCATOR,
    }


def time_side_by_side(
    candidates: dict[str, Callable[[], object]], *, rounds: int, warmup: int = 2, block: int = 3
) -> dict[str, dict[str, float]]:
    """Median and IQR (ms per call) of each candidate over ``rounds`` interleaved blocks of calls."""
    threads = torch.get_num_threads()
    timers = {
        name: Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
        for name, fn in candidates.items()
    }
    for timer in timers.values():
        timer.timeit(warmup)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(timers[name].timeit(block).median * 1e3)
    out = {}
    for name, values in samples.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[name] = {
            "median_ms": statistics.median(values),
            "iqr_ms": q[2] - q[0],
            "min_ms": min(values),
            "rounds": len(values),
            "calls_per_round": block,
        }
    return out


def pruned_pair(
    dense: torch.nn.Module, example: torch.Tensor, head: str
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The two pruned forms of ``dense`` the suites time: 50 % of the channels of every group
    removed by magnitude and compacted (``head``, the classifier, kept whole), and 90 % of every
    layer's weights zeroed by magnitude and baked (dense with zeros). ``dense`` is not changed."""
    channel = Pruner(
        copy.deepcopy(dense),
        method="magnitude",
        granularity="channel",
        sparsity=0.5,
        example_inputs=example,
        exclude=(head,),
    )
    weight = Pruner(
        copy.deepcopy(dense),
        method="magnitude",
        granularity="weight",
        sparsity=0.9,
        allocation="layer",
    )
    return channel.compact(example).eval(), weight.bake().eval()


RESULTS = REPO / "benchmarks" / "results"


def machine_line(payload: dict) -> str:
    """``<CPU or GPU>, <n> threads, torch <v>, commit <sha>``: where a result was measured."""
    device = payload["device"]
    threads = f", {device['threads']} threads" if "threads" in device else ""
    return f"{device['name']}{threads}, torch {payload['versions']['torch']}, commit {payload['commit']}"


def write_json(path: Path, payload: dict) -> Path:
    """``payload`` as indented JSON, atomically (no import of ``tasks``, which needs Hydra: the
    benchmarks run on machines that have only torch and the library's own needs)."""
    return write_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def result_name(suite: str, payload: dict) -> str:
    """``<suite>--<device>--torch<version>`` from a result's provenance (top level or under
    ``provenance``): ``cpu`` or ``cuda-<device name, slugged>``, torch without its local build tag.

    >>> result_name("sparse", {"device": {"type": "cuda", "name": "NVIDIA H200"},
    ...                        "versions": {"torch": "2.14.1+cu130"}})
    'sparse--cuda-h200--torch2.14.1'
    """
    prov = payload.get("provenance", payload)
    device = prov["device"]
    slug = device["type"]
    if device["type"] != "cpu":
        name = re.sub(r"^nvidia\s+", "", device.get("name", "").lower())
        name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
        slug = f"{device['type']}-{name}" if name else device["type"]
    torch_version = prov["versions"]["torch"].split("+")[0]
    return f"{suite}--{slug}--torch{torch_version}"


def _free_stem(stem: Path, date: str) -> Path:
    """``stem``, or where a result is already there, ``stem--<date>`` (then ``-2``, ``-3``, ...)."""

    def taken(candidate: Path) -> bool:
        return any(candidate.with_name(candidate.name + ext).exists() for ext in (".json", ".md"))

    if not taken(stem):
        return stem
    dated = stem.with_name(f"{stem.name}--{date}")
    n = 2
    candidate = dated
    while taken(candidate):
        candidate = dated.with_name(f"{dated.name}-{n}")
        n += 1
    return candidate


def write_report(out: Path | None, payload: dict, table: str, *, suite: str | None = None) -> Path:
    """Write ``<stem>.json`` and ``<stem>.md`` atomically, print the table, and return the stem.

    ``out`` is a results folder (``None``: ``benchmarks/results/``), where the stem is
    ``result_name(suite, payload)`` (``suite`` defaults to ``payload["benchmark"]``, and a
    ``payload["variant"]`` is appended to it as ``<suite>-<variant>``), or a path without extension.
    An existing result is never overwritten: the new one gets ``--<date of the run>`` appended.
    """
    out = RESULTS if out is None else Path(out)
    if out.is_dir():
        suite = suite or payload.get("benchmark")
        if not suite:
            raise ValueError("write_report needs suite= to name a result in a folder")
        if payload.get("variant"):
            suite = f"{suite}-{payload['variant']}"
        stem = out / result_name(suite, payload)
    else:
        stem = out.with_suffix("") if out.suffix in (".json", ".md") else out
    date = str(payload.get("provenance", payload).get("date") or datetime.now(timezone.utc))[:10]
    free = _free_stem(stem, date)
    json_path, md_path = (free.with_name(free.name + ext) for ext in (".json", ".md"))
    write_json(json_path, payload)
    write_atomic(md_path, table)
    print(table)
    if free != stem:
        print(f"{stem.name}.json is there already and is kept")
    print(f"wrote {json_path} and .md")
    return free
