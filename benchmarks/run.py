"""Run benchmark suites by number: each writes JSON (commit, versions, device, medians and spreads) and
a Markdown table under ``benchmarks/results/``.

    python benchmarks/run.py --suite all            # 1-4 and the training step, full size
    python benchmarks/run.py --suite 3 --quick      # minutes on CPU
    python benchmarks/run.py --suite 1 2 --device cuda

Suites:
  1  mask product bandwidth as a fraction of a same-device copy (bench_mask_product.py)
  2  partial conv vs nn.Conv2d vs the dense ones-kernel form, hole ratios 0-60 % (bench_partial_conv.py)
  3  masked/sparse linear and conv paths vs dense, break-even sparsities, the dispatch table
     (bench_sparse.py)
  4  pruned ResNet-18/50 end to end: dense vs compacted vs sparse-weight (bench_pruned_models.py)
  train  a training step with learned masks vs dense (bench_prune_step.py)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = {
    "1": ("bench_mask_product.py", {"quick": ["--rounds", "3"], "full": []}),
    "2": (
        "bench_partial_conv.py",
        {
            "quick": ["--quick", "--shapes", "64x128", "--holes", "0", "0.6"],
            "full": ["--holes", "0", "0.2", "0.4", "0.6"],
        },
    ),
    "3": ("bench_sparse.py", {"quick": ["--quick"], "full": []}),
    "4": ("bench_pruned_models.py", {"quick": ["--quick"], "full": []}),
    "train": ("bench_prune_step.py", {"quick": ["--quick"], "full": ["--rounds", "6"]}),
}
CPU_ONLY = {"4", "train"}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--suite", nargs="+", required=True, choices=[*SUITES, "all"], help="suites to run"
    )
    parser.add_argument("--quick", action="store_true", help="the suites' short settings")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (suites 1-3)")
    args = parser.parse_args()
    chosen = list(SUITES) if "all" in args.suite else list(dict.fromkeys(args.suite))
    failed = []
    for suite in chosen:
        script, flags = SUITES[suite]
        command = [sys.executable, str(HERE / script), *flags["quick" if args.quick else "full"]]
        if args.device != "cpu":
            if suite in CPU_ONLY:
                print(f"suite {suite}: CPU only, skipped for --device {args.device}")
                continue
            command += ["--device", args.device]
        print(f"== suite {suite}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            failed.append(suite)
        print(f"== suite {suite} took {time.perf_counter() - started:.0f} s", flush=True)
    if failed:
        print(f"failed suites: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
