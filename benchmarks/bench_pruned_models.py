"""Suite 4: pruned ResNets end to end: dense vs channel-compacted vs sparse-weight, latency per MAC.

    python benchmarks/bench_pruned_models.py            # ResNet-18 and -50, 224², batch 1 and 32
    python benchmarks/bench_pruned_models.py --quick    # ResNet-18 at 112², 3 rounds

For each torchvision ResNet (random weights: latency does not depend on their values):

- ``dense``: the network as built;
- ``compacted``: 50 % of the channels of every prunable group removed by global-magnitude channel
  masks, then ``Pruner.compact`` (dependency-aware, checked against the masked model);
- ``sparse_weight``: 90 % of every layer's weights zeroed by magnitude (unstructured), baked, then
  ``sparsify`` for the batch: every layer served by the path the committed table measured fastest
  (dense where no sparse path beats it).

The three are timed side by side in one run (interleaved rounds, channels-last not used). Effective
MACs count each convolution and linear layer's MACs times the fraction of non-zero weights it holds,
so ``speedup / MAC reduction`` is 1 for a path that turns every skipped multiply into saved time.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, pruned_pair, time_side_by_side, write_report

from masking.pruning.sparsify import sparsify

MODELS = ("resnet18", "resnet50")


def effective_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward pass, each Conv2d/Linear scaled by its share of non-zero weights."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        w = module.weight if hasattr(module, "weight") else None
        density = 1.0 if w is None or w.numel() == 0 else float((w != 0).float().mean())
        if isinstance(module, nn.Conv2d):
            per_out = (
                module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            )
        else:
            per_out = module.in_features
        total += int(output.numel() * per_out * density)

    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total


def build(name: str, size: int, g: torch.Generator):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    dense = getattr(torchvision.models, name)(weights=None).eval()
    example = torch.randn(2, 3, size, size, generator=g)
    compacted, baked = pruned_pair(dense, example, "fc")
    return dense, compacted, baked


def bench_model(name: str, size: int, batches: list[int], rounds: int, g: torch.Generator):
    dense, compacted, baked = build(name, size, g)
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=g)
        sparse_model, report = sparsify(copy.deepcopy(baked), x)
        paths = {}
        for entry in report:
            paths[entry["path"]] = paths.get(entry["path"], 0) + 1
        with torch.inference_mode():
            timings = time_side_by_side(
                {
                    "dense": lambda x=x: dense(x),
                    "compacted": lambda x=x: compacted(x),
                    "sparse_weight": lambda m=sparse_model, x=x: m(x),
                },
                rounds=rounds,
            )
        macs = {
            "dense": effective_macs(dense, x),
            "compacted": effective_macs(compacted, x),
            "sparse_weight": effective_macs(baked, x),
        }
        for variant, t in timings.items():
            speedup = timings["dense"]["median_ms"] / t["median_ms"]
            mac_reduction = macs["dense"] / macs[variant]
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "batch": batch,
                    "variant": variant,
                    **t,
                    "effective_macs": macs[variant],
                    "speedup": speedup,
                    "mac_reduction": mac_reduction,
                    "speedup_per_mac_reduction": speedup / mac_reduction,
                    "paths": paths if variant == "sparse_weight" else None,
                }
            )
            print(
                f"{name} b{batch} {variant}: {t['median_ms']:.1f} ms, {speedup:.2f}× dense, "
                f"MACs ÷{mac_reduction:.2f}",
                flush=True,
            )
    return rows


def markdown(payload: dict) -> str:
    prov = payload["provenance"]
    dev = prov["device"]
    lines = [
        f"Pruned ResNets on {dev['name']} ({dev.get('threads', '')} threads), torch "
        f"{prov['versions']['torch']}, commit {str(prov['commit'])[:10]}, "
        f"{payload['size']}² inputs, {payload['rounds']} interleaved rounds; compacted = 50 % of "
        "channels removed, sparse_weight = 90 % unstructured, served by `sparsify`.",
        "",
        "| model | batch | variant | median ms | × dense | MACs ÷ | speedup / MAC reduction "
        "| sparse-weight paths |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in payload["results"]:
        paths = ", ".join(f"{k}: {v}" for k, v in (r["paths"] or {}).items())
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['variant']} | {r['median_ms']:.1f} "
            f"| {r['speedup']:.2f} | {r['mac_reduction']:.2f} "
            f"| {r['speedup_per_mac_reduction']:.2f} | {paths} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at 112², 3 rounds")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None)
    parser.add_argument("--size", type=int, default=None, help="input height = width (224)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5)")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args()
    models = args.models or (["resnet18"] if args.quick else list(MODELS))
    size = args.size or (112 if args.quick else 224)
    rounds = args.rounds or (3 if args.quick else 5)
    if size < 32 or min(args.batches) < 1 or rounds < 1:
        parser.error("--size must be >= 32, --batches and --rounds >= 1")
    g = torch.Generator().manual_seed(0)
    results = []
    for name in models:
        results += bench_model(name, size, args.batches, rounds, g)
    payload = {
        "provenance": provenance(torch.device("cpu")),
        "size": size,
        "rounds": rounds,
        "results": results,
    }
    write_report(args.out, payload, markdown(payload), suite="pruned_models")


if __name__ == "__main__":
    main()
