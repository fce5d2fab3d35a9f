"""Writing a network for deployment, ONNX or a ``torch.export`` program, checked before it is kept.

The network is traced with its masking ops rewritten into plain ops (``masking.programs``), the
file is written under a temporary name, run in its own runtime (onnxruntime on CPU, or the reloaded
program) on real inputs of several batch and image sizes, compared with PyTorch at the tolerance of
the dtype, and renamed into place only when every comparison holds. ``onnx_latency_pair`` measures
the dense and pruned ONNX models side by side, for the pruning report. An inpainting network that
refines a classical fill (``PConvUNet(prefill=True)``) exports its refining part, whose image input
holds the fill (:func:`exportable`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masking.functional import fill_holes
from masking.programs import Dim, export_program

__all__ = [
    "FORMATS",
    "Signature",
    "export_checked",
    "exportable",
    "exported_part",
    "onnx_latency_pair",
    "onnx_session",
    "ort_version",
    "session_latency",
    "signature_for",
    "tolerance",
]

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}
# (rtol, atol) of an exported model's outputs against PyTorch's, relative to the outputs' scale:
# the runtimes reorder the sums of a convolution, so fp32 agrees to a few ulps of the largest value
_TOLERANCE = {
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` for an exported model of ``dtype``: ``|a - b| <= atol + rtol · max|b|``."""
    return _TOLERANCE.get(dtype, (1e-4, 1e-5))


@dataclass
class Signature:
    """What a network is called with: input and output names, the example the trace runs on, which
    dimensions are dynamic, and the real inputs the export is checked on (several batch and image
    sizes)."""

    input_names: list[str]
    output_names: list[str]
    example: tuple[Tensor, ...]
    checks: list[tuple[Tensor, ...]]
    dynamic_shapes: tuple[dict[int, Any], ...] | None = None  # one per input, torch.export style
    dtype: torch.dtype = field(default=torch.float32)


class Refiner(nn.Module):
    """The exportable part of a network that refines a classical fill: ``(filled, mask) ->
    output``, where ``filled`` is the image with its holes filled by
    :func:`masking.functional.fill_holes` (its rings depend on the mask's values, which neither
    ONNX nor ``torch.export`` can trace at any image size)."""

    input_names = ("filled", "mask")

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @property
    def size_multiple(self) -> int:
        return int(getattr(self.net, "size_multiple", 1))

    def forward(self, filled: Tensor, mask: Tensor) -> Tensor:
        return self.net.refine(filled, mask)


def exportable(
    model: nn.Module, inputs: Tensor | Sequence[Tensor]
) -> tuple[nn.Module, Tensor | Sequence[Tensor], Callable[..., tuple[Tensor, ...]] | None]:
    """What to export of ``model`` and the inputs to check it on: ``model`` and ``inputs`` as they
    are, or for a network that refines a classical fill (``prefill``) its :class:`Refiner` and
    ``(fill_holes(image, mask), mask)``. The third item turns the model's own inputs into the
    export's (``None`` when they are the same)."""
    part = exported_part(model)
    if part is model:
        return model, inputs, None

    def prepare(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return fill_holes(image, mask), mask

    return part, prepare(*inputs), prepare


def exported_part(model: nn.Module) -> nn.Module:
    """The part of ``model`` that an export holds: its :class:`Refiner` for a network that refines
    a classical fill (``prefill``), else ``model`` itself."""
    return Refiner(model) if getattr(model, "prefill", False) else model


def ort_version() -> str:
    return ort.__version__


def _resized(inputs: tuple[Tensor, ...], height: int, width: int) -> tuple[Tensor, ...]:
    """Image-like inputs at another size: bilinear for images, nearest for masks (kept 0/1)."""
    out = []
    for t in inputs:
        if t.dim() != 4:
            out.append(t)
        elif t.shape[1] == 1:  # a mask
            out.append(F.interpolate(t.float(), size=(height, width), mode="nearest").to(t.dtype))
        else:
            out.append(F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False))
    return tuple(out)


def signature_for(model: nn.Module, inputs: Tensor | Sequence[Tensor]) -> Signature:
    """The signature of a classifier (one ``(B, C, H, W)`` input) or an inpainting network
    (``image``, ``mask``), from real inputs of at least two examples: batch, height and width are
    dynamic (height and width in steps of the network's ``size_multiple``); the checks run one
    example at the inputs' size and two at a size larger by a quarter, rounded to that multiple.
    A network that refuses that larger size (a ViT, whose position embedding fixes its image
    size) keeps its height and width static; the checks then vary the batch only."""
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    # ordinary copies: inputs made under torch.inference_mode cannot be traced
    inputs = tuple(t.detach().clone() for t in inputs)
    if not inputs or inputs[0].dim() != 4 or inputs[0].shape[0] < 2:
        raise ValueError(
            "the export needs real example inputs of at least 2 images, (B, C, H, W), got "
            f"{[tuple(t.shape) for t in inputs]}"
        )
    inpainting = len(inputs) == 2 and inputs[1].dim() == 4 and inputs[1].shape[1] == 1
    names = ["image", "mask"] if inpainting else [f"input_{i}" for i in range(len(inputs))]
    names = names if len(inputs) > 1 else ["input"]
    own = list(getattr(model, "input_names", ()))
    names = own if len(own) == len(inputs) else names
    multiple = int(getattr(model, "size_multiple", 1))
    h, w = inputs[0].shape[2:]
    batch = Dim("batch", min=1, max=1024)
    if multiple > 1:
        rows, cols = Dim("rows", min=1, max=8192), Dim("cols", min=1, max=8192)
        height, width = multiple * rows, multiple * cols
    else:
        height = width = Dim.AUTO  # the range the network allows, found by the trace
    larger = [-(-round(size * 1.25) // multiple) * multiple for size in (h, w)]
    example = tuple(t[:2] for t in inputs)
    with torch.no_grad():
        produced = model.eval()(*example)
        resizable = _takes(model, _resized(example, *larger))
    if resizable:
        dynamic = tuple(
            {0: batch, 2: height, 3: width} if t.dim() == 4 else {0: batch} for t in inputs
        )
        checks = [tuple(t[:1] for t in inputs), _resized(example, *larger)]
    else:
        dynamic = tuple({0: batch} for _ in inputs)
        checks = [tuple(t[:1] for t in inputs), inputs]
    count = len(produced) if isinstance(produced, tuple | list) else 1
    outputs = list(getattr(model, "output_names", ()))
    if len(outputs) != count:
        outputs = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return Signature(names, outputs, example, checks, dynamic, dtype)


def _takes(model: nn.Module, inputs: tuple[Tensor, ...]) -> bool:
    """Whether ``model`` runs on ``inputs`` (a size other than its examples')."""
    try:
        model(*inputs)
    except (AssertionError, RuntimeError, ValueError):
        return False
    return True


def _outputs(value: Any) -> list[Tensor]:
    return list(value) if isinstance(value, tuple | list) else [value]


def onnx_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``path`` with ``threads`` intra-op threads (``None``: as many
    as torch uses), sequential execution."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(path: Path, names: list[str]) -> Callable[..., list[np.ndarray]]:
    session = onnx_session(path)

    def run(*inputs: Tensor) -> list[np.ndarray]:
        feed = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs)}
        return session.run(None, feed)

    return run


def _program_runner(path: Path) -> Callable[..., list[Tensor]]:
    program = torch.export.load(str(path)).module()

    def run(*inputs: Tensor) -> list[Tensor]:
        with torch.no_grad():
            return _outputs(program(*inputs))

    return run


def _compare(model: nn.Module, run: Callable, signature: Signature) -> list[dict[str, Any]]:
    """Each check input through PyTorch and the export; raises on the first disagreement."""
    rtol, atol = tolerance(signature.dtype)
    results = []
    for inputs in signature.checks:
        with torch.no_grad():
            expected = _outputs(model(*inputs))
        got = run(*inputs)
        if len(got) != len(expected):
            raise ValueError(f"the export returns {len(got)} outputs, PyTorch {len(expected)}")
        worst = largest = 0.0
        for name, want, have in zip(signature.output_names, expected, got):
            want = want.detach().float().cpu()
            have = torch.as_tensor(np.asarray(have)).float()
            if have.shape != want.shape:
                raise ValueError(
                    f"output {name}: the export gives shape {tuple(have.shape)}, PyTorch "
                    f"{tuple(want.shape)} (inputs {[tuple(t.shape) for t in inputs]})"
                )
            error = float((have - want).abs().max()) if want.numel() else 0.0
            bound = atol + rtol * float(want.abs().max() if want.numel() else 0.0)
            if not error <= bound:  # NaN fails too
                raise ValueError(
                    f"output {name} differs from PyTorch by {error:.3g} (allowed {bound:.3g}) on "
                    f"inputs of shapes {[tuple(t.shape) for t in inputs]}; nothing was written"
                )
            worst = max(worst, error / max(bound, 1e-30))
            largest = max(largest, error)
        shapes = [list(t.shape) for t in inputs]
        results.append({"shapes": shapes, "max_abs_error": largest, "of_allowed": worst})
    return results


def export_checked(
    model: nn.Module, signature: Signature, path: str | Path, fmt: str = "onnx"
) -> dict[str, Any]:
    """Write ``model`` to ``path`` as ``fmt`` (``onnx`` or ``torch_export``) once it matches PyTorch.

    Returns ``{"format", "path", "bytes", "export_s", "checks": [{"shapes", "max_abs_error",
    "of_allowed"}, ...]}``. Raises ``ValueError`` (and writes nothing) when the model cannot be
    traced or a check input disagrees; an existing ``path`` is replaced only by a checked file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    model = model.eval()
    started = time.perf_counter()
    try:
        program = export_program(model, signature.example, dynamic_shapes=signature.dynamic_shapes)
    except ValueError:
        raise  # the project's own one-line errors (an op with no plain form, a bad input)
    except Exception as error:  # torch.export explains over dozens of lines
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"{type(model).__name__} cannot be traced for export ({type(error).__name__}: {reason})"
        ) from None
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / f"model{FORMATS[fmt]}"
        if fmt == "onnx":
            _write_onnx(program, signature, staged)
            run = _onnx_runner(staged, signature.input_names)
        else:
            torch.export.save(program, str(staged))
            run = _program_runner(staged)
        seconds = time.perf_counter() - started
        checks = _compare(model, run, signature)
        staged.replace(path)
    return {
        "format": fmt,
        "path": str(path),
        "bytes": path.stat().st_size,
        "export_s": seconds,
        "checks": checks,
    }


def _write_onnx(program, signature: Signature, path: Path) -> None:
    # the exporter narrates every pass (prints, INFO logs, warnings about renamed dimensions);
    # what matters to the user is the check that follows
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        onnx_program = torch.onnx.export(
            program,
            signature.example,
            input_names=signature.input_names,
            output_names=signature.output_names,
            dynamo=True,
            verbose=False,
            external_data=False,
        )
    onnx_program.save(str(path))


def session_latency(
    session: ort.InferenceSession,
    names: Sequence[str],
    inputs: Sequence[Tensor],
    repeats: int,
    warmup: int,
) -> float:
    """Median wall time (ms) of ``repeats`` runs of ``session`` on ``inputs``, after ``warmup``."""
    feed = {name: t.detach().cpu().numpy() for name, t in zip(names, inputs)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def onnx_latency_pair(
    dense: nn.Module,
    final: nn.Module,
    signature: Signature,
    make_input: Callable[[int], Any],
    *,
    batches: Sequence[int],
    repeats: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    """Median onnxruntime latency (ms) of the dense and final models at each batch size, exported
    and checked as :func:`export_checked` does, measured in three interleaved blocks like
    ``cost.profile_pair``: ``{"dense": {"batch_1": ms, ...}, "final": {...}}``."""
    with tempfile.TemporaryDirectory(prefix="onnx_latency_") as tmp:
        sessions = {}
        for key, model in (("dense", dense), ("final", final)):
            path = Path(tmp) / f"{key}.onnx"
            export_checked(model, signature, path)
            sessions[key] = onnx_session(path)
        out: dict[str, dict[str, float]] = {key: {} for key in sessions}
        for batch in batches:
            args = make_input(batch)
            args = (args,) if isinstance(args, Tensor) else tuple(args)
            runs: dict[str, list[float]] = {key: [] for key in sessions}
            for _ in range(3):
                for key, session in sessions.items():
                    runs[key].append(
                        session_latency(session, signature.input_names, args, repeats, warmup)
                    )
            for key in sessions:
                out[key][f"batch_{batch}"] = sorted(runs[key])[1]
    return out
