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
- structured, 50 % of channels: Torch-Pruning in two of its documented recipes, its quick start
  (group L2 magnitude, one shot, then fine-tuned at the pruned size) and its recipe for accuracy
  (group Taylor importance in as many iterative steps as fine-tuning epochs, BatchNorm statistics
  re-estimated after each step, an epoch of fine-tuning after each), against our
  channel-granularity ``magnitude``, ``slimming``, ``hard_concrete`` and ``movement``, compacted.

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
from tasks.runtime.cost import profile_with
from tasks.runtime.trainer import job_trainer
from tests.hydra_config import compose_config


def finetune(cfg, net: nn.Module, datamodule, root: Path, epochs: int | None = None) -> None:
    """The job's fine-tuning (``task.module``: its optimizer and schedule) without a pruner, for
    ``task.finetune_epochs`` or ``epochs``."""
    module = instantiate(cfg.task.module, net=net)
    epochs = cfg.task.finetune_epochs if epochs is None else epochs
    trainer = job_trainer(cfg, root, max_epochs=epochs, check_val_every_n_epoch=1)
    trainer.fit(module, datamodule=datamodule)


def baseline_entry(cfg, name, dense, final, accuracy, datamodule, started) -> dict:
    profile = profile_with(cfg.task.latency, dense, final, datamodule.example_input)
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


def _tp_pruner(net: nn.Module, example, importance, sparsity: float, steps: int):
    """Torch-Pruning's ``MetaPruner`` as its README sets it up for a CNN classifier: the
    classifier head left out, one ratio for every layer, ``iterative_steps`` equal steps. Building
    it traces the network, which leaves it in eval mode: the mode is restored."""
    import torch_pruning as tp

    training = net.training
    pruner = tp.pruner.MetaPruner(
        net,
        example,
        importance=importance,
        pruning_ratio=sparsity,
        iterative_steps=steps,
        ignored_layers=[m for m in net.modules() if isinstance(m, nn.Linear)],
    )
    net.train(training)
    return pruner


def taylor_gradients(net: nn.Module, loader, batches: int) -> None:
    """Gradients of the training loss summed over ``batches`` batches, for GroupTaylorImportance
    (as Torch-Pruning's CIFAR benchmark script does before each step)."""
    net.zero_grad()
    for i, (images, labels) in enumerate(loader):
        if i >= batches:
            break
        nn.functional.cross_entropy(net(images), labels).backward()


@torch.no_grad()
def reestimate_batchnorm(net: nn.Module, loader, batches: int) -> None:
    """BatchNorm statistics recomputed on training batches after a pruning step (a cumulative
    average over ``batches`` batches in train mode, no weight updated)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    training = net.training
    net.train()
    for i, (images, _) in enumerate(loader):
        if i >= batches:
            break
        net(images)
    net.train(training)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def torch_pruning_magnitude(cfg, dense, datamodule, sparsity, root) -> dict:
    """Torch-Pruning's quick-start recipe: group L2 magnitude, one shot, then the fine-tuning."""
    import torch_pruning as tp

    started = time.perf_counter()
    net = copy.deepcopy(dense)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    _tp_pruner(net, datamodule.example_input(2), importance, sparsity, 1).step()
    val = datamodule.val_dataloader()
    before = evaluate(net, val)
    finetune(cfg, net, datamodule, root)
    acc = {"masked_before_finetune": before, "final": evaluate(net, val)}
    return baseline_entry(
        cfg, "Torch-Pruning (group L2, one-shot)", dense, net, acc, datamodule, started
    )


TAYLOR_BATCHES, BN_BATCHES = 10, 20


def torch_pruning_iterative_taylor(cfg, dense, datamodule, sparsity, root) -> dict:
    """Torch-Pruning's recipe for the best accuracy at a ratio: group Taylor importance, as many
    iterative steps as fine-tuning epochs, each step's gradients from ``TAYLOR_BATCHES`` training
    batches, BatchNorm statistics re-estimated after each step, and one epoch of fine-tuning after
    each, so the budget is the same ``task.finetune_epochs``."""
    import torch_pruning as tp

    started = time.perf_counter()
    net = copy.deepcopy(dense)
    steps = int(cfg.task.finetune_epochs)
    pruner = _tp_pruner(
        net, datamodule.example_input(2), tp.importance.GroupTaylorImportance(), sparsity, steps
    )
    train, val = datamodule.train_dataloader(), datamodule.val_dataloader()
    before = None
    for _ in range(steps):
        taylor_gradients(net, train, TAYLOR_BATCHES)
        pruner.step()
        net.zero_grad()
        reestimate_batchnorm(net, train, BN_BATCHES)
        if before is None:
            before = evaluate(net, val)
        finetune(cfg, net, datamodule, root, epochs=1)
    acc = {"masked_before_finetune": before, "final": evaluate(net, val)}
    name = f"Torch-Pruning (group Taylor, {steps} steps, BN re-estimated)"
    return baseline_entry(cfg, name, dense, net, acc, datamodule, started)


@dataclass(frozen=True)
class Suite:
    """One side of the comparison: the sparsity and what it counts, our granularity and methods,
    and the baseline they are measured against."""

    sparsity: float
    counts: str
    granularity: str
    methods: tuple[str, ...]
    baselines: tuple[Callable[..., dict], ...]


SUITES = {
    "unstructured": Suite(
        sparsity=0.9,
        counts="of weights",
        granularity="weight",
        methods=("magnitude", "movement", "hard_concrete", "str"),
        baselines=(torch_prune_global,),
    ),
    "structured": Suite(
        sparsity=0.5,
        counts="of channels",
        granularity="channel",
        methods=("magnitude", "slimming", "hard_concrete", "movement"),
        baselines=(torch_pruning_magnitude, torch_pruning_iterative_taylor),
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
        "",
        "Settings. torch.nn.utils.prune: `global_unstructured` with `L1Unstructured` over every "
        "conv and linear weight, one shot, its masks kept while fine-tuning. Torch-Pruning "
        "(MetaPruner, the linear head in `ignored_layers`, the same ratio in every layer): "
        "one-shot `GroupMagnitudeImportance(p=2)`; and `GroupTaylorImportance` in "
        f"{cfg.task.finetune_epochs} iterative steps, gradients from {TAYLOR_BATCHES} training "
        f"batches before each, BatchNorm statistics re-estimated on {BN_BATCHES} batches after "
        "each, one epoch of fine-tuning after each. Ours: `pruning=<method>` at the job's "
        "defaults (its schedule, penalty and mask optimizer), `pruning.granularity=channel` "
        "compacted for the structured side. Every fine-tuning uses the job's optimizer and "
        "learning-rate schedule with the network in train mode.",
    ]
    for kind in args.kinds:
        suite = SUITES[kind]
        methods = suite.methods[:2] if args.quick else suite.methods
        rows = [
            baseline(cfg, dense, datamodule, suite.sparsity, work / f"base-{kind}-{i}")
            for i, baseline in enumerate(suite.baselines)
        ]
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
