"""The prepared GPU check: what a lent GPU runs first, in at most 8 minutes, into one folder.

    python3 benchmarks/device_check.py --out OUT         # on the GPU machine
    python3 benchmarks/device_check.py --dry-run --out OUT   # the same steps on CPU, small (a minute)

Steps, in this order, each in its own process with its own time box, so that a failure or a hang in
one still leaves the others' results:

0. ``setup``: Torch-Pruning, Hydra, OmegaConf, antlr4 and kornia, where missing, installed from the
   wheels carried in ``.whl/`` (``pip install --no-index --target``); skipped if present.
1. ``tests``: the kernel and functional tests with CUDA tensors (``tests/kernels``,
   ``tests/functional``: every kernel against its torch reference, fp32/fp16/bf16, and the
   ``cuda``-marked tests). The dry run runs only the ``cuda``-marked ones, which skip on CPU.
2. ``suite1``-``suite3``: mask-product bandwidth, ``PartialConv2d`` against ``nn.Conv2d``, and the
   sparse paths, quick, with the dispatch table for this GPU written from suite 3.
3. ``train``: the default inpainting job on the GPU (bf16-mixed, 256-px crops) for a bounded number
   of steps, timed batch by batch: images/s and whether the data pipeline or the device is the
   bottleneck (``benchmarks/_throughput.py``).
4. ``device_check.json`` and ``device_check.md`` (every step's status, time and numbers, the commit
   and the device), beside the suites' JSON and the dispatch table: at most 8 files, ready to commit
   under ``benchmarks/results/`` (the table goes to ``masking/kernels/tables/``).

Exits 0 when every step that ran passed; a skipped step says why in the report.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUDGET_S = 480
# what the GPU machine's image lacks (benchmarks/README.md): the library needs Torch-Pruning, the
# training step Hydra and kornia; their wheels travel in .whl/
NEEDED = ["torch_pruning", "hydra", "omegaconf", "antlr4", "kornia", "kornia_rs"]


def steps(dry_run: bool, out: Path, work: Path) -> list[dict]:
    """The commands, with their time boxes (seconds), in the order they run."""
    py = sys.executable
    device = "cpu" if dry_run else "cuda"
    suites = work / "suites"  # their JSON is copied to out, their tables go into the report
    tests = (
        ["-m", "cuda", "tests/kernels", "tests/functional"]
        if dry_run
        else ["tests/kernels", "tests/functional"]
    )
    suite_args = {
        "suite1": ["bench_mask_product.py", *(["--scale", "64"] if dry_run else [])],
        "suite2": [
            "bench_partial_conv.py",
            "--quick",
            *(["--shapes", "8x16", "--rounds", "1"] if dry_run else ["--shapes", "64x128"]),
            "--holes",
            "0",
            "0.6",
        ],
        "suite3": [
            "bench_sparse.py",
            "--quick",
            *(["--linears", "64x64x8", "--convs", "8x8x3x8x2", "--sparsities", "0.5"] * dry_run),
            "--table",
            str(out / "dispatch_table.json"),
        ],
    }
    train = [
        "task=inpaint",
        "logger=none",
        "callbacks=none",
        f"hydra.run.dir={work / 'train'}",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "data.max_val_crops=8",
        "task.eval_masks_per_bin=2",
        f"+callbacks.throughput={{_target_:_throughput.Throughput,path:{work / 'throughput.json'}}}",
    ]
    if dry_run:  # the test suite's small U-Net on 32-px crops, 8 batches
        train += ["data.crop_size=32", "data.batch_size=4", "data.samples_per_epoch=32"]
        train += ["net.depth=3", "net.base_width=8", "+callbacks.throughput.warmup=2"]
    else:  # the default U-Net on 256-px crops, 60 batches of 16
        train += ["trainer=gpu", "trainer.precision=bf16-mixed", "data.crop_size=256"]
        train += ["data.batch_size=16", "data.samples_per_epoch=960"]
        train += ["data.num_workers=8", "data.pin_memory=true"]
    plan = [
        {
            "name": "tests",
            "box": 60 if dry_run else 200,
            "command": [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        },
    ]
    for name, (script, *args) in suite_args.items():
        command = [py, str(HERE / script), *args, "--device", device, "--out", str(suites)]
        plan.append({"name": name, "box": 60 if dry_run else 75, "command": command})
    plan.append({"name": "train", "box": 90 if dry_run else 140, "command": [py, "run.py", *train]})
    return plan


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def setup(env: dict, site: Path) -> dict:
    """Install Hydra/kornia from ``.whl/`` where they are missing; the step's record."""
    started = time.perf_counter()
    missing = missing_modules()
    if not missing:
        return {
            "name": "setup",
            "status": "skipped",
            "why": "Torch-Pruning, Hydra and kornia are installed",
        }
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    if not wheels:
        return {
            "name": "setup",
            "status": "skipped",
            "why": f"{missing} missing and no wheels in .whl/ (carry them: benchmarks/README.md)",
        }
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    command += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site)]
    result = subprocess.run([*command, *map(str, wheels)], capture_output=True, text=True)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    return {
        "name": "setup",
        "status": "passed" if result.returncode == 0 else "failed",
        "seconds": time.perf_counter() - started,
        "installed": [w.name for w in wheels],
        "tail": (result.stdout + result.stderr)[-1500:],
    }


def run_step(step: dict, env: dict, deadline: float) -> dict:
    left = deadline - time.monotonic()
    box = min(step["box"], left)
    record = {"name": step["name"], "command": " ".join(step["command"][1:]), "box_s": box}
    if box < 10:
        return {**record, "status": "skipped", "why": f"{left:.0f} s left of the budget"}
    started = time.perf_counter()
    print(f"== {step['name']} (at most {box:.0f} s): {record['command']}", flush=True)
    try:
        result = subprocess.run(
            step["command"], cwd=REPO, env=env, capture_output=True, text=True, timeout=box
        )
        status = "passed" if result.returncode == 0 else "failed"
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as err:
        status = "timed out"
        output = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
            for part in (err.stdout, err.stderr)
        )
    record.update(status=status, seconds=time.perf_counter() - started, tail=output[-3000:])
    print(f"   {status} in {record['seconds']:.0f} s", flush=True)
    if step["name"] == "tests":
        counts = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)
        record["counts"] = {kind: int(n) for n, kind in counts}
    return record


def provenance(device_type: str) -> dict:
    sys.path.insert(0, str(HERE))
    import torch
    from _common import provenance as bench_provenance

    return bench_provenance(torch.device(device_type))


def markdown(report: dict) -> str:
    device = report["provenance"]["device"]
    lines = [
        "# Device check" + (" (dry run on CPU)" if report["dry_run"] else ""),
        "",
        f"{device.get('name', device['type'])}, torch {report['provenance']['versions']['torch']}, "
        f"commit {report['provenance']['commit']}, {report['seconds']:.0f} s in all.",
        "",
        "| step | status | seconds | notes |",
        "|---|---|---:|---|",
    ]
    for step in report["steps"]:
        notes = step.get("why", "")
        if "counts" in step:
            notes = ", ".join(f"{n} {kind}" for kind, n in step["counts"].items())
        if step["name"] == "train" and report.get("train"):
            t = report["train"]
            notes = (
                f"{t['images_per_s']:.1f} images/s ({t['step_images_per_s']:.1f} in the step "
                f"alone), data wait {100 * t['data_wait_fraction']:.0f} %: {t['bottleneck']} bound"
            )
        seconds = f"{step['seconds']:.0f}" if "seconds" in step else ""
        lines.append(f"| {step['name']} | {step['status']} | {seconds} | {notes} |")
    for table in report["suite_tables"]:
        lines += ["", "#" + table if table.startswith("# ") else table]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results (new)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes: a minute")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds in all (480)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these steps")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} holds files already; name a new folder")
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device is available (use --dry-run on CPU)")
    args.out.mkdir(parents=True, exist_ok=True)
    started, deadline = time.perf_counter(), time.monotonic() + args.budget
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        work = Path(tmp)
        suites = work / "suites"  # the suites' results: JSON copied to --out, tables to the report
        suites.mkdir()
        env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg", WANDB_MODE="offline")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
        if not args.dry_run:  # real kernels on the GPU, not the interpreter
            env.pop("TRITON_INTERPRET", None)
        records = [setup(env, work / "site")]
        for step in steps(args.dry_run, args.out, work):
            if args.only and step["name"] not in args.only:
                continue
            if step["name"] == "train" and records[0]["status"] == "failed":
                records.append({"name": "train", "status": "skipped", "why": "setup failed"})
                continue
            records.append(run_step(step, env, deadline))
        throughput = work / "throughput.json"
        train = json.loads(throughput.read_text()) if throughput.is_file() else None
        suite_tables = [md.read_text().strip() for md in sorted(suites.glob("*.md"))]
        for result in sorted(suites.glob("*.json")):
            (args.out / result.name).write_bytes(result.read_bytes())
    report = {
        "benchmark": "device_check",
        "dry_run": args.dry_run,
        "out": str(args.out),
        "budget_s": args.budget,
        "seconds": time.perf_counter() - started,
        "provenance": provenance("cpu" if args.dry_run else "cuda"),
        "steps": records,
        "train": train,
        "suite_tables": suite_tables,
    }
    (args.out / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "device_check.md").write_text(markdown(report))
    print((args.out / "device_check.md").read_text())
    bad = [r["name"] for r in records if r["status"] in ("failed", "timed out")]
    if bad:
        print(f"device check: {bad} did not pass (their output is in device_check.json)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
