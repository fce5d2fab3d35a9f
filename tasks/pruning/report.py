"""The pruning report: settings, sparsity per layer, parameters, MACs, measured latency and the
quality of each stage (dense, masked before and after fine-tuning, final), as JSON and Markdown,
and the files a pruning run leaves."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from masking.pruning import Pruner, export_pruned

from ..runtime.exporting import ort_version
from ..runtime.files import write_atomic, write_json
from .plan import PruningPlan

log = logging.getLogger(__name__)

SCORES = {  # report key -> (column label, format)
    "accuracy": ("accuracy (%)", "{:.2f}"),
    "psnr": ("PSNR (dB)", "{:.2f}"),
    "hole_l1": ("hole L1", "{:.4f}"),
    "perplexity": ("perplexity", "{:.3f}"),
}


def report_markdown(report: dict[str, Any]) -> str:
    """The readable table of a pruning report (``report["scores"]`` names its quality columns)."""
    d, f = report["dense"], report["final"]
    scores = report["scores"]
    batches = report["batches"]
    lines = [
        f"# Pruning report: {report['method']}, {report['granularity']}, "
        f"target sparsity {report['target_sparsity']}",
        "",
        f"Device: {report['device']}; torch {report['torch']}; finalize: {report['finalize']}; "
        f"pretrained: {report['pretrained']}",
        "",
        "| | "
        + " | ".join(SCORES[k][0] for k in scores)
        + " | params | nonzero params | MACs | "
        + " | ".join(f"latency b{b} (ms)" for b in batches)
        + " |",
        "|---|" + "---|" * (len(scores) + 3 + len(batches)),
    ]

    def quality(stage: str) -> str:
        return " | ".join(SCORES[k][1].format(report[k][stage]) for k in scores)

    def row(name: str, entry: dict) -> str:
        lat = " | ".join(f"{entry['latency_ms'][f'batch_{b}']:.2f}" for b in batches)
        return (
            f"| {name} | {quality(name)} | {entry['params']:,} | {entry['nonzero_params']:,} | "
            f"{entry['macs']:,} | {lat} |"
        )

    lines.append(row("dense", d))
    if report.get("finetune_steps"):  # one shot: the masked model is the final one
        lines.append(
            f"| masked, before fine-tuning | {quality('masked_before_finetune')} | | | |"
            + " |" * len(batches)
        )
    lines.append(row("final", f))
    kind = report["sparsity_kind"]
    header = {"channel": "channels | kept", "units": "units | kept"}.get(kind, "params | zeros")
    lines += [
        "",
        f"Achieved sparsity: {report['achieved_sparsity']:.4f} ({kind}). "
        f"MAC reduction {report['mac_reduction']:.2f}×; speedup "
        + ", ".join(f"b{b} {report['speedup'][f'batch_{b}']:.2f}×" for b in batches)
        + ".",
        *_onnx_lines(report.get("onnxruntime"), batches),
        "",
        f"| layer | {header} | sparsity |",
        "|---|---|---|---|",
    ]
    for layer in report["layers"]:
        if "units" in layer:  # heads (key/value groups) or neurons of a transformer block
            lines.append(
                f"| {layer['layer']} ({layer['kind']}) | {layer['units']} | "
                f"{layer['kept_units']} | {layer['unit_sparsity']:.3f} |"
            )
        elif "channels" in layer:
            lines.append(
                f"| {layer['layer']} | {layer['channels']} | {layer['kept_channels']} | "
                f"{layer['channel_sparsity']:.3f} |"
            )
        else:
            lines.append(
                f"| {layer['layer']} | {layer['params']:,} | {layer['zeros']:,} | "
                f"{layer['sparsity']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _onnx_lines(onnx: dict[str, Any] | None, batches: list[int]) -> list[str]:
    if onnx is None:
        return []
    if "error" in onnx:
        return ["", f"onnxruntime latency not measured: {onnx['error']}"]

    def ms(stage: str) -> str:
        return ", ".join(f"b{b} {onnx[stage][f'batch_{b}']:.2f} ms" for b in batches)

    speedup = ", ".join(f"b{b} {onnx['speedup'][f'batch_{b}']:.2f}×" for b in batches)
    return [
        "",
        f"onnxruntime {ort_version()} (CPU, same threads): dense {ms('dense')}; final "
        f"{ms('final')}; speedup {speedup}.",
    ]


def pruning_report(
    plan: PruningPlan,
    pruner: Pruner | Any,
    *,
    batches: list[int],
    memory_format: str,
    finalize: str,
    origin: str,
    profile: dict[str, dict],
    scores: dict[str, dict[str, float]],
    steps: int,
    started: float,
) -> dict[str, Any]:
    """``prune_report.json``: the settings, sparsity per layer, cost and quality of each stage.

    ``pruner`` is the :class:`Pruner`, or what one-shot pruning returned (``OneShotResult``): both
    tell their granularity, allocation, achieved sparsity and sparsity per layer."""
    return {
        "method": plan.method,
        "granularity": str(pruner.granularity),
        "allocation": pruner.allocation,
        "target_sparsity": plan.sparsity,
        "achieved_sparsity": pruner.achieved_sparsity(),
        "sparsity_kind": pruner.granularity.sparsity_kind,
        "finalize": finalize,
        "pretrained": origin,
        "device": f"cpu ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "batches": batches,
        "memory_format": memory_format,
        "scores": list(scores),
        **scores,
        "dense": profile["dense"],
        "final": profile["final"],
        "mac_reduction": profile["dense"]["macs"] / max(1, profile["final"]["macs"]),
        "speedup": {
            f"batch_{b}": profile["dense"]["latency_ms"][f"batch_{b}"]
            / profile["final"]["latency_ms"][f"batch_{b}"]
            for b in batches
        },
        "layers": pruner.layer_sparsity(),
        "finetune_steps": steps,
        "wall_time_s": time.perf_counter() - started,
    }


def write_pruning_outputs(
    output_dir: Path,
    final: nn.Module,
    builder: dict,
    report: dict[str, Any],
    metrics: dict[str, float],
    extra: dict[str, Any],
    example_inputs: Any = None,
) -> dict[str, float]:
    """``export/`` (with ``example_inputs`` as its real inputs), ``prune_report.{json,md}`` and
    ``metrics.json`` (cost metrics added here)."""
    export_pruned(
        final, output_dir / "export", builder=builder, extra=extra, example_inputs=example_inputs
    )
    write_json(output_dir / "prune_report.json", report)
    markdown = report_markdown(report)
    write_atomic(output_dir / "prune_report.md", markdown)
    final_cost = report["final"]
    metrics = {
        **metrics,
        "final/sparsity": report["achieved_sparsity"],
        "final/params": float(final_cost["params"]),
        "final/nonzero_params": float(final_cost["nonzero_params"]),
        "final/macs": float(final_cost["macs"]),
        "final/mac_reduction": report["mac_reduction"],
        **{f"final/latency_{k}_ms": v for k, v in final_cost["latency_ms"].items()},
        **{f"final/speedup_{k}": v for k, v in report["speedup"].items()},
    }
    onnx = report.get("onnxruntime", {})
    if "speedup" in onnx:
        metrics |= {f"final/onnx_latency_{k}_ms": v for k, v in onnx["final"].items()}
        metrics |= {f"final/onnx_speedup_{k}": v for k, v in onnx["speedup"].items()}
    write_json(output_dir / "metrics.json", metrics)
    log.info("\n%s", markdown)
    return metrics
