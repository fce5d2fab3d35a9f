"""Our pruning methods against torch.nn.utils.prune and Torch-Pruning: same pretrained model, same
fine-tuning budget, accuracy / params / MACs / latency side by side.

    python benchmarks/bench_prune_compare.py            # the default job's ResNet-18 on digits
    python benchmarks/bench_prune_compare.py --quick    # 1 fine-tuning epoch, fewer methods

The pretrained model is the default job's dense ResNet-18 (trained and cached on first use, exactly
as ``python run.py task=prune`` does). Every entry then fine-tunes for the job's
``task.finetune_epochs`` with the job's optimizer and learning-rate schedule:

- unstructured, 90 %: ``torch.nn.utils.prune.global_unstructured`` (global L1, one-shot, its hooks
  keep the mask while fine-tuning) against our ``magnitude`` (AGP schedule), ``movement``,
  ``hard_concrete`` and ``str``;
- structured, 50 % of channels: Torch-Pruning's ``MagnitudePruner`` (group L2 magnitude, one-shot,
  then fine-tuned at the pruned size) against our channel-granularity ``magnitude``, ``slimming``,
  ``hard_concrete`` and ``movement``, compacted.

Latency (batch 1 and 32, channels-last, the run's CPU threads) is measured against the same dense
model in the same process, interleaved.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.utils.prune as tprune
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, provenance, write_report

sys.path.insert(0, str(REPO))
from hydra.utils import instantiate

from tasks import run
from tasks.jobs.prune import ClassificationTarget
from tasks.modules import evaluate
from tasks.pruning import pruning_plan
from tasks.runtime.cost import profile_pair
from tasks.runtime.trainer import job_trainer
from tests.hydra_config import compose_config


def finetune(cfg, net: nn.Module, datamodule, root: Path) -> None:
    """The job's fine-tuning (``task.module``: its optimizer and schedule) without a pruner."""
    module = instantiate(cfg.task.module, net=net)
    trainer = job_trainer(cfg, root, max_epochs=cfg.task.finetune_epochs, check_val_every_n_epoch=1)
    trainer.fit(module, datamodule=datamodule)


def baseline_entry(cfg, name, dense, final, accuracy, datamodule, started) -> dict:
    lat = cfg.task.latency
    profile = profile_pair(
        dense,
        final,
        datamodule.example_input,
        batches=list(lat.batches),
        repeats=lat.repeats,
        warmup=lat.warmup,
        memory_format=lat.memory_format,
    )
    return {
        "method": name,
        "accuracy": accuracy,
        "dense": profile["dense"],
        "final": profile["final"],
        "wall_time_s": time.perf_counter() - started,
    }


def torch_prune_global(cfg, dense, datamodule, sparsity, root) -> dict:
    started = time.perf_counter()
    net = copy.deepcopy(dense)
    layers = [(m, "weight") for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured(layers, pruning_method=tprune.L1Unstructured, amount=sparsity)
    val = datamodule.val_dataloader()
    before = evaluate(net, val)
    finetune(cfg, net, datamodule, root)
    for module, name in layers:
        tprune.remove(module, name)
    acc = {"masked_before_finetune": before, "final": evaluate(net, val)}
    return baseline_entry(
        cfg, "torch.nn.utils.prune (global L1)", dense, net, acc, datamodule, started
    )


def torch_pruning_magnitude(cfg, dense, datamodule, sparsity, root) -> dict:
    import torch_pruning as tp

    started = time.perf_counter()
    net = copy.deepcopy(dense)
    example = datamodule.example_input(2)
    ignored = [m for m in net.modules() if isinstance(m, nn.Linear)]
    pruner = tp.pruner.MagnitudePruner(
        net,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=sparsity,
        ignored_layers=ignored,
    )
    pruner.step()
    val = datamodule.val_dataloader()
    before = evaluate(net, val)
    finetune(cfg, net, datamodule, root)
    acc = {"masked_before_finetune": before, "final": evaluate(net, val)}
    return baseline_entry(
        cfg, "Torch-Pruning (group L2 magnitude)", dense, net, acc, datamodule, started
    )


@dataclass(frozen=True)
class Suite:
    """One side of the comparison: the sparsity and what it counts, our granularity and methods,
    and the baseline they are measured against."""

    sparsity: float
    counts: str
    granularity: str
    methods: tuple[str, ...]
    baseline: Callable[..., dict]


SUITES = {
    "unstructured": Suite(
        sparsity=0.9,
        counts="of weights",
        granularity="weight",
        methods=("magnitude", "movement", "hard_concrete", "str"),
        baseline=torch_prune_global,
    ),
    "structured": Suite(
        sparsity=0.5,
        counts="of channels",
        granularity="channel",
        methods=("magnitude", "slimming", "hard_concrete", "movement"),
        baseline=torch_pruning_magnitude,
    ),
}


def ours_entry(overrides, kind, suite: Suite, method, root) -> dict:
    started = time.perf_counter()
    extra = [
        f"pruning={method}",
        f"pruning.sparsity={suite.sparsity}",
        f"pruning.granularity={suite.granularity}",
    ]
    out = root / f"ours-{kind}-{method}"
    run(compose_config(out, [*overrides, *extra]))
    report = json.loads((out / "prune_report.json").read_text())
    return {
        "method": f"ours: {method}",
        "accuracy": {
            "masked_before_finetune": report["accuracy"]["masked_before_finetune"],
            "final": report["accuracy"]["final"],
        },
        "dense": report["dense"],
        "final": report["final"],
        "achieved_sparsity": report["achieved_sparsity"],
        "wall_time_s": time.perf_counter() - started,
    }


def table(rows: list[dict], dense_acc: float, batches: list[int]) -> list[str]:
    lines = [
        "| method | acc before FT | final acc | Δ vs dense | params | nonzero | MACs | "
        + " | ".join(f"b{b} ms (speedup)" for b in batches)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(batches),
    ]
    for r in rows:
        f, d = r["final"], r["dense"]
        lat = " | ".join(
            f"{f['latency_ms'][f'batch_{b}']:.1f} "
            f"({d['latency_ms'][f'batch_{b}'] / f['latency_ms'][f'batch_{b}']:.2f}×)"
            for b in batches
        )
        lines.append(
            f"| {r['method']} | {r['accuracy']['masked_before_finetune']:.2f} | "
            f"{r['accuracy']['final']:.2f} | {r['accuracy']['final'] - dense_acc:+.2f} | "
            f"{f['params']:,} | {f['nonzero_params']:,} | {f['macs'] / 1e6:.1f}M "
            f"({d['macs'] / f['macs']:.2f}× fewer) | {lat} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", choices=list(SUITES), default=list(SUITES))
    parser.add_argument("--quick", action="store_true", help="1 fine-tuning epoch, 2 methods each")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every entry")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prune_compare_"))
    overrides = ["task=prune", "logger=none", *args.overrides]
    if args.quick:
        overrides.append("task.finetune_epochs=1")
    cfg = compose_config(work / "dense", overrides)
    target = ClassificationTarget(cfg, work / "dense")
    plan = pruning_plan(cfg)
    target.prepare(plan)
    datamodule = target.datamodule
    dense, _, origin = target.pretrained(plan)
    dense_acc = evaluate(dense, datamodule.val_dataloader())
    print(f"dense accuracy {dense_acc:.2f} % ({origin})")
    batches = list(cfg.task.latency.batches)
    results: dict[str, dict] = {}
    lines = [
        "# Pruning methods side by side: CIFAR-style ResNet-18 on digits (32x32)",
        "",
        f"Dense accuracy {dense_acc:.2f} %; fine-tuning budget {cfg.task.finetune_epochs} epochs "
        f"for every entry; latency channels-last on CPU, dense measured in the same run.",
    ]
    for kind in args.kinds:
        suite = SUITES[kind]
        methods = suite.methods[:2] if args.quick else suite.methods
        rows = [suite.baseline(cfg, dense, datamodule, suite.sparsity, work / f"base-{kind}")]
        rows += [ours_entry(overrides, kind, suite, m, work) for m in methods]
        results[kind] = {"sparsity": suite.sparsity, "rows": rows}
        lines += [
            "",
            f"## {kind.capitalize()}, {suite.sparsity:.0%} {suite.counts}",
            "",
            *table(rows, dense_acc, batches),
        ]
    payload = {
        **provenance(torch.device("cpu")),
        "dense_accuracy": dense_acc,
        "pretrained": origin,
        "finetune_epochs": cfg.task.finetune_epochs,
        "overrides": overrides,
        "results": results,
    }
    lines += [
        "",
        f"{payload['device']['name']}, torch {payload['versions']['torch']}, commit {payload['commit']}",
    ]
    write_report(args.out, payload, "\n".join(lines) + "\n", suite="prune_compare")


if __name__ == "__main__":
    main()
