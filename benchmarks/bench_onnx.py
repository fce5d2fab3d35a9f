"""onnxruntime against PyTorch on CPU, dense and pruned models side by side.

    python benchmarks/bench_onnx.py            # batch 1 and 32, 2 threads, 7 rounds
    python benchmarks/bench_onnx.py --quick    # narrow models, batch 1 and 4, 2 rounds (a smoke test)

Models (random weights: latency does not depend on their values, only on their shapes and zeros):

- the default pruning job's ResNet-18 (``resnet18_cifar``, 32×32 inputs): ``dense``; ``compacted``,
  50 % of the channels of every group removed by magnitude and ``Pruner.compact``; ``sparse``, 90 %
  of each layer's weights zeroed by magnitude and baked (dense with zeros, as ``task=prune``
  exports unstructured pruning);
- the default inpainting U-Net (``conf/net/pconv_unet.yaml``) at 256², partial convolutions
  exported as plain ops.

Each model is exported with ``task=export``'s code (traced, masking ops decomposed, checked against
PyTorch on real inputs before use) and both runtimes run the same inputs with the same thread count,
in interleaved rounds. PyTorch runs the ResNets channels-last, as the pruning report times them.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine_line, provenance, pruned_pair, write_report

sys.path.insert(0, str(REPO))
from hydra.utils import instantiate

from datamodules.digits import load_digits_tensors
from masking.models import resnet18_cifar
from tasks.jobs.export import inpainting_inputs
from tasks.runtime.cost import measure_latency
from tasks.runtime.exporting import (
    export_checked,
    exportable,
    onnx_session,
    ort_version,
    session_latency,
    signature_for,
)
from tests.hydra_config import compose_config


def digits(batch: int) -> torch.Tensor:
    images, _ = load_digits_tensors()
    x = images[torch.arange(batch) % len(images)].float().reshape(-1, 1, 8, 8) / 16
    return F.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)


def models(quick: bool) -> dict[str, tuple[torch.nn.Module, object, bool]]:
    """``{name: (model, make_input(batch), channels_last)}``; ``quick``: a quarter of the widths."""
    torch.manual_seed(0)
    dense = resnet18_cifar(num_classes=10, width=16 if quick else 64).eval()
    compacted, sparse = pruned_pair(dense, digits(2), "fc")
    unet_overrides = ["net.base_width=8", "net.max_width=32", "net.depth=3"] if quick else []
    unet = instantiate(compose_config(None, unet_overrides).net).eval()

    # the default U-Net refines fill_holes' fill, which ONNX cannot express: both runtimes time
    # its refining part on filled photos (the fill itself is the same work in either)
    unet, _, fill = exportable(unet, inpainting_inputs(batch=2))

    def photos(batch: int):
        images, masks = inpainting_inputs(batch=2)
        index = torch.arange(batch) % 2
        images, masks = images[index], masks[index]
        return (images, masks) if fill is None else fill(images, masks)

    return {
        "resnet18_cifar dense": (dense, digits, True),
        "resnet18_cifar compacted 50 % channels": (compacted, digits, True),
        "resnet18_cifar 90 % sparse (baked)": (sparse, digits, True),
        f"pconv_unet ({'narrow' if quick else 'default'}) 256²"
        + ("" if fill is None else ", refining part"): (unet, photos, False),
    }


def prepare(name, model, make_input, channels_last, work: Path) -> dict:
    """The checked ONNX export and its session, and the PyTorch model as the pruning report runs it."""
    signature = signature_for(model, make_input(8))
    path = work / f"{len(list(work.iterdir()))}.onnx"
    export = export_checked(model, signature, path)
    torch_model = copy.deepcopy(model)
    if channels_last:
        torch_model = torch_model.to(memory_format=torch.channels_last)
    return {
        "name": name,
        "make_input": make_input,
        "channels_last": channels_last,
        "signature": signature,
        "session": onnx_session(path),
        "torch_model": torch_model,
        "parity_of_allowed": max(c["of_allowed"] for c in export["checks"]),
        "parity_max_abs_error": max(c["max_abs_error"] for c in export["checks"]),
        "bytes": export["bytes"],
    }


def time_all(prepared: list[dict], batches, rounds: int, repeats: int) -> list[dict]:
    """Every model in both runtimes, interleaved within each round, so the ratios between models
    and between runtimes are measured side by side."""
    rows: list[dict] = [{} for _ in prepared]
    for batch in batches:
        samples = [{"pytorch": [], "onnxruntime": []} for _ in prepared]
        inputs = []
        for p in prepared:
            args = p["make_input"](batch)
            args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
            torch_args = tuple(
                a.contiguous(memory_format=torch.channels_last)
                if p["channels_last"] and a.dim() == 4
                else a
                for a in args
            )
            inputs.append((args, torch_args))
        for _ in range(rounds):
            for p, sample, (args, torch_args) in zip(prepared, samples, inputs):
                timed = measure_latency(p["torch_model"], torch_args, repeats=repeats, warmup=1)
                sample["pytorch"].append(timed["median_ms"])
                sample["onnxruntime"].append(
                    session_latency(p["session"], p["signature"].input_names, args, repeats, 1)
                )
        for p, sample, row in zip(prepared, samples, rows):
            pytorch, runtime = (statistics.median(sample[k]) for k in ("pytorch", "onnxruntime"))
            row[f"batch_{batch}"] = {
                "pytorch_ms": pytorch,
                "onnxruntime_ms": runtime,
                "onnxruntime_speedup": pytorch / runtime,
            }
            print(
                f"{p['name']}, batch {batch}: PyTorch {pytorch:.2f} ms, onnxruntime {runtime:.2f} ms"
            )
    return [
        {
            "model": p["name"],
            "parity_of_allowed": p["parity_of_allowed"],
            "parity_max_abs_error": p["parity_max_abs_error"],
            "bytes": p["bytes"],
            "batches": row,
        }
        for p, row in zip(prepared, rows)
    ]


def table(results: list[dict], batches: list[int]) -> list[str]:
    head = " | ".join(f"b{b} PyTorch ms | b{b} onnxruntime ms (×)" for b in batches)
    lines = [
        f"| model | parity: max error (÷ allowed) | {head} |",
        "|---|---|" + "---|---|" * len(batches),
    ]
    for r in results:
        cells = [f"{r['parity_max_abs_error']:.2g} ({r['parity_of_allowed']:.3f})"]
        for b in batches:
            row = r["batches"][f"batch_{b}"]
            cells.append(
                f"{row['pytorch_ms']:.2f} | {row['onnxruntime_ms']:.2f} "
                f"({row['onnxruntime_speedup']:.2f}×)"
            )
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return lines


def speedups(results: list[dict], batches: list[int]) -> list[str]:
    """Each pruned ResNet's speedup over the dense one, in each runtime: does pruning pay there?"""
    dense = results[0]["batches"]
    head = " | ".join(f"b{b} PyTorch | b{b} onnxruntime" for b in batches)
    lines = [f"| pruned ÷ dense | {head} |", "|---|" + "---|---|" * len(batches)]
    for r in results[1:3]:
        cells = []
        for b in batches:
            mine, base = r["batches"][f"batch_{b}"], dense[f"batch_{b}"]
            cells.append(
                f"{base['pytorch_ms'] / mine['pytorch_ms']:.2f}× | "
                f"{base['onnxruntime_ms'] / mine['onnxruntime_ms']:.2f}×"
            )
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="narrow models, batch 1 and 4, 2 rounds"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [1, 4] if args.quick else [1, 32]
    rounds, repeats = (2, 2) if args.quick else (7, 5)
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        prepared = [prepare(name, *spec, Path(tmp)) for name, spec in models(args.quick).items()]
        results = time_all(prepared, batches, rounds, repeats)
    payload = {
        **provenance(torch.device("cpu")),
        "onnxruntime": ort_version(),
        "threads": args.threads,
        "batches": batches,
        "rounds": rounds,
        "repeats": repeats,
        "results": results,
    }
    lines = [
        "# onnxruntime against PyTorch on CPU",
        "",
        f"onnxruntime {ort_version()}, {args.threads} threads for both; median of {rounds} rounds of "
        f"{repeats} calls, every model in both runtimes interleaved within each round; (×) = "
        "PyTorch time ÷ onnxruntime time. Every export matched PyTorch on real inputs at fp32 "
        "tolerance before it was timed.",
        "",
        *table(results, batches),
        "",
        *speedups(results, batches),
        "",
        machine_line(payload),
    ]
    write_report(args.out, payload, "\n".join(lines) + "\n", suite="onnx")


if __name__ == "__main__":
    main()
