"""Cost of a training step under learned unstructured masks, beside a dense step and beside
torch.nn.utils.prune's forward-pre-hook masks, measured side by side in one run.

    python benchmarks/bench_prune_step.py            # CIFAR-style ResNet-18, batch 64, 32x32, CPU
    python benchmarks/bench_prune_step.py --quick

Every candidate runs a full optimizer step (forward, cross-entropy, backward, SGD on the weights) on
its own copy of the same network:

- ``dense``: no masks.
- ``ours_<method>``: our parametrized masks at 90 % unstructured sparsity, the estimator's state
  trained by Adam beside SGD, and ``pruner.step`` every step (masks recomputed every
  ``--update-every`` steps, as in the job's default).
- ``torch_prune``: ``torch.nn.utils.prune.global_unstructured`` (L1, 90 %): fixed masks applied by a
  forward pre-hook, nothing learned.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, time_side_by_side, write_report

from masking.models import resnet18_cifar
from masking.pruning import Pruner


def make_step(net: nn.Module, x, y, pruner: Pruner | None = None, mask_lr: float = 1e-2):
    mask_params = pruner.mask_parameters() if pruner else []
    weights = pruner.weight_parameters() if pruner else list(net.parameters())
    opt = torch.optim.SGD(weights, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    mask_opt = torch.optim.Adam(mask_params, lr=mask_lr) if mask_params else None
    counter = [0]

    def step() -> None:
        if pruner is not None:
            pruner.step(counter[0])
            counter[0] += 1
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        if mask_opt:
            mask_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if mask_opt:
            mask_opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--methods", nargs="+", default=["movement", "magnitude"])
    parser.add_argument("--update-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    torch.manual_seed(0)
    base = resnet18_cifar(width=args.width)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    candidates = {"dense": make_step(copy.deepcopy(base), x, y)}
    for method in args.methods:
        net = copy.deepcopy(base)
        pruner = Pruner(
            net,
            method=method,
            granularity="weight",
            sparsity=args.sparsity,
            update_every=args.update_every,
        )
        candidates[f"ours_{method}"] = make_step(net, x, y, pruner)
    net = copy.deepcopy(base)
    layers = [(m, "weight") for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured(layers, pruning_method=tprune.L1Unstructured, amount=args.sparsity)
    candidates["torch_prune"] = make_step(net, x, y)

    timings = time_side_by_side(candidates, rounds=rounds, warmup=2, block=2)
    dense = timings["dense"]["median_ms"]
    for entry in timings.values():
        entry["ratio_to_dense"] = entry["median_ms"] / dense
    payload = {
        **provenance(torch.device("cpu")),
        "model": f"resnet18_cifar(width={args.width})",
        "batch": args.batch,
        "input": [3, args.size, args.size],
        "sparsity": args.sparsity,
        "update_every": args.update_every,
        "results": timings,
    }
    lines = [
        f"# Training-step cost under masks: ResNet-18 (CIFAR-style, width {args.width}), batch "
        f"{args.batch}, {args.size}x{args.size}, {args.sparsity:.0%} unstructured",
        "",
        f"{payload['device']['name']} ({payload['device']['threads']} threads); "
        f"torch {payload['versions']['torch']}; commit {payload['commit']}; "
        f"{rounds} interleaved rounds",
        "",
        "| step | median (ms) | IQR (ms) | × dense |",
        "|---|---|---|---|",
    ]
    for name, entry in timings.items():
        lines.append(
            f"| {name} | {entry['median_ms']:.1f} | {entry['iqr_ms']:.1f} | "
            f"{entry['ratio_to_dense']:.3f} |"
        )
    write_report(args.out, payload, "\n".join(lines) + "\n", suite="prune_step")


if __name__ == "__main__":
    main()
