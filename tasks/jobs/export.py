"""``task=export``: a trained inpainting network or a pruned model as ONNX or a ``torch.export``
program, checked against PyTorch on real inputs before it is written."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from datamodules.photos import COLOR_PHOTOS, load_bundled_photo
from masking.generators import FreeFormStrokes
from masking.pruning import load_example_inputs, load_pruned
from masking.pruning.export import ARCHITECTURE_FILE

from ..runtime.checkpoints import load_inpainting_network, trusted
from ..runtime.cost import measure_latency
from ..runtime.exporting import (
    FORMATS,
    export_checked,
    exportable,
    onnx_session,
    ort_version,
    session_latency,
    signature_for,
)
from ..runtime.files import write_json

log = logging.getLogger(__name__)

PHOTO_SIZE = 256  # the side of the photos an inpainting network is checked on


def inpainting_inputs(batch: int = 2, size: int = PHOTO_SIZE) -> tuple[Tensor, Tensor]:
    """Real check inputs for an inpainting network: bundled colour photos with brush-stroke holes
    (seeded, so every export is checked on the same ones)."""
    images = torch.stack([load_bundled_photo(n, size=size) for n in COLOR_PHOTOS[:batch]])
    masks = FreeFormStrokes()(batch, size, size, generator=torch.Generator().manual_seed(0))
    return images, masks


def load_for_export(ckpt_path: Any, builders: dict) -> tuple[nn.Module, tuple[Tensor, ...], str]:
    """The network ``ckpt_path`` names, the real inputs to check its export on, and what it is."""
    if ckpt_path is None:
        raise ValueError(
            "ckpt_path is required for task=export: a task=inpaint checkpoint (.ckpt) or the "
            "export/ folder of a pruning run"
        )
    path = Path(ckpt_path)
    if path.is_dir():
        if not (path / ARCHITECTURE_FILE).is_file():
            raise FileNotFoundError(
                f"ckpt_path {str(path)!r} is a folder without {ARCHITECTURE_FILE}: give the "
                "export/ folder of a pruning run, or a task=inpaint checkpoint file"
            )
        net = load_pruned(path, builders=builders)
        inputs = load_example_inputs(path)
        if inputs is None:
            if not hasattr(net, "size_multiple"):
                raise ValueError(
                    f"ckpt_path {str(path)!r} holds no example inputs (inputs.pt, written by "
                    "pruning runs since task=export exists); run the pruning job again"
                )
            inputs = inpainting_inputs()
        return net, inputs, "pruned model"
    net = load_inpainting_network(path, builders=builders)
    return net, inpainting_inputs(), "inpainting network"


def run(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    fmt = cfg.format
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(cfg.output) if cfg.output is not None else output_dir / f"model{FORMATS[fmt]}"
    if out.is_dir():
        raise IsADirectoryError(f"output {str(out)!r} is a folder; name the file to write")
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(
            f"output {str(out)!r} exists: choose another name (overwrite=true replaces it)"
        )
    net, inputs, kind = load_for_export(cfg.ckpt_path, trusted(cfg.trusted_builders))
    net, inputs, prepare = exportable(net, inputs)
    if prepare is not None:
        kind += " (its refining part: the input 'filled' is the image filled by fill_holes)"
        log.info(
            "the network refines masking.functional.fill_holes' fill, which ONNX cannot express; "
            "the export takes the filled image: filled = fill_holes(image, mask)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    signature = signature_for(net, inputs)
    log.info("exporting the %s of %s as %s", kind, cfg.ckpt_path, fmt)
    result = export_checked(net, signature, out, fmt)
    for check in result["checks"]:
        log.info(
            "matches PyTorch on inputs %s: max |error| %.3g (%.1f %% of the allowed)",
            check["shapes"],
            check["max_abs_error"],
            100 * check["of_allowed"],
        )
    latency = _latency(cfg.task.latency, net, signature, out) if fmt == "onnx" else {}
    record = {"source": str(cfg.ckpt_path), "kind": kind, **result, "latency_ms": latency}
    write_json(output_dir / "export.json", record)
    metrics = {
        "export/max_abs_error": max(c["max_abs_error"] for c in result["checks"]),
        "export/bytes": float(result["bytes"]),
        **{f"export/{k}_{b}_ms": v for k, times in latency.items() for b, v in times.items()},
    }
    write_json(output_dir / "metrics.json", metrics)
    log.info("wrote %s (%.1f MB)", out, result["bytes"] / 1e6)
    return metrics


def _latency(settings: Any, net: nn.Module, signature, path: Path) -> dict[str, dict[str, float]]:
    """PyTorch and onnxruntime on the same inputs at each batch size, the same thread count."""
    session = onnx_session(path)
    runtime = f"onnxruntime_{ort_version()}"
    times: dict[str, dict[str, float]] = {"pytorch": {}, runtime: {}}
    for batch in settings.batches:
        args = tuple(t[torch.arange(batch) % t.shape[0]] for t in signature.example)
        torch_ms = measure_latency(net, args, repeats=settings.repeats, warmup=settings.warmup)
        runtime_ms = session_latency(
            session, signature.input_names, args, settings.repeats, settings.warmup
        )
        times["pytorch"][f"batch_{batch}"] = torch_ms["median_ms"]
        times[runtime][f"batch_{batch}"] = runtime_ms
        log.info(
            "batch %d: PyTorch %.2f ms, onnxruntime %.2f ms",
            batch,
            torch_ms["median_ms"],
            runtime_ms,
        )
    return times
