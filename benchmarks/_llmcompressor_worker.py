"""One-shot SparseGPT or Wanda pruning of a Hugging Face causal LM with llm-compressor.

This is the *reference* side of a side-by-side comparison: it runs vllm-project/llm-compressor's
own ``SparseGPTModifier`` / ``WandaPruningModifier`` through its ``oneshot`` entry point, in
llm-compressor's own virtual environment (``.venv-llmc``, made as its documentation recommends),
on exactly the calibration token windows our pipeline uses. A benchmark in our environment
launches it as a subprocess and then reads the pruned model back with plain transformers. It
imports torch, transformers, safetensors, llmcompressor and the standard library only, never our
package (llm-compressor pins torch and transformers below ours, so the two cannot share a venv).

Invoked as::

    .venv-llmc/bin/python benchmarks/_llmcompressor_worker.py \\
        --model DIR --calibration FILE --method sparsegpt|wanda \\
        [--sparsity 0.5] [--mask-structure 0:0|2:4|4:8] --out DIR [--threads N]

``--model`` is a Hugging Face folder (``config.json`` + ``model.safetensors``), loaded in float32
on the CPU. ``--calibration`` is a safetensors file holding an int64 tensor ``input_ids`` of shape
``[samples, seq_len]``. ``--out`` must not exist yet; it receives the pruned model (dense
safetensors, pruned weights stored as zeros, no compressed-tensors format, so plain transformers
loads it), llm-compressor's ``recipe.yaml`` and ``llmcompressor.json``: ``wall_s`` (the
``oneshot`` call alone, ``time.perf_counter``), ``rss_before_mib`` (resident set just before the
call), ``peak_rss_before_mib`` (``ru_maxrss`` before it: the process's peak so far, loading
included) and ``peak_rss_mib``, the peak resident set of the call itself (``VmHWM``, reset through
``/proc/self/clear_refs`` just before it; where the kernel refuses the reset, the whole process's
``ru_maxrss``, as ``peak_of`` says), the method, sparsity, mask structure, the resolved recipe,
package versions and the thread count.

The recipe follows the sample YAML in the ``SparseGPTModifier`` docstring (llmcompressor 0.14,
``llmcompressor/modifiers/pruning/sparsegpt/base.py``): ``sparsity``, ``mask_structure``,
``targets=["Linear"]``, ``ignore=["re:.*lm_head"]`` (the 2:4 example,
``examples/sparse_2of4_quantization_fp8/llama3_8b_2of4.py``, targets the decoder layers with
``re:model.layers.\\d*$`` instead, which reaches the same Linear layers). Everything else keeps
llm-compressor's defaults, recorded in the JSON:

- SparseGPT: ``block_size=128``, ``dampening_frac=0.01`` (of the mean Hessian diagonal; the
  docstring's sample YAML shows 0.001, the field default is 0.01), ``preserve_sparsity_mask=False``,
  ``offload_hessians=False``.
- both: no OWL profile (one sparsity for every layer); ``oneshot``'s default ``pipeline=
  "independent"``, which runs these modifiers in the sequential pipeline: one
  ``LlamaDecoderLayer`` (the model's ``_no_split_modules``) at a time, each layer calibrated on
  the outputs of the already pruned layers before it (``propagate_error=True``).

How llm-compressor prunes (read from its source, checked on a tiny random Llama):
``mask_structure="0:0"`` is unstructured; Wanda then drops ``int(in_features * sparsity)``
weights in every output row, SparseGPT drops the weights at or under the ``sparsity`` quantile of
each ``block_size``-column block taken over all rows (so not per row, and one weight more per
block than ``sparsity`` asks). ``"N:M"`` zeros the N smallest of every M consecutive input
weights per row and ignores ``sparsity``; a last group narrower than M (``in_features`` not a
multiple of M) is zeroed whole. SparseGPT updates the surviving weights (OBS); Wanda
only zeros. ``ignore=["lm_head"]`` would *not* spare the head (llm-compressor matches the name
``"lm_head."``), hence the regex.

The calibration windows go in as a ``torch.utils.data.DataLoader`` (``--batch-size`` windows a
batch, default 1 as llm-compressor's own; the benchmark gives it the batch ours uses; in file order,
``attention_mask`` all ones), which ``oneshot`` uses as given: no tokenizing, shuffling,
reordering, truncation or sample-count cut (a ``datasets.Dataset`` goes through its sampler:
shuffled by default, else ordered by length with an unstable sort). ``oneshot`` still wants a processor when
data is given and the model folder may hold none, so it gets an empty ``LlamaTokenizer``, which
it never calls on this path. ``oneshot`` prunes the model in place; it finds no accelerator here
and says so ("Compressing model on CPU instead").
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import resource
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, LlamaTokenizer

MODIFIERS = {"sparsegpt": "SparseGPTModifier", "wanda": "WandaPruningModifier"}
MASK_STRUCTURES = ("0:0", "2:4", "4:8")
# the modifier's lifecycle bookkeeping, not part of the recipe
_STATE_FIELDS = {"index", "group", "start", "end", "update", "requires_calibration_data"}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model folder")
    parser.add_argument(
        "--calibration",
        type=Path,
        required=True,
        help="safetensors file with an int64 tensor input_ids [samples, seq_len]",
    )
    parser.add_argument("--method", choices=sorted(MODIFIERS), required=True)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--mask-structure", choices=MASK_STRUCTURES, default="0:0")
    parser.add_argument("--out", type=Path, required=True, help="output folder (must not exist)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="calibration windows per forward (default 1)"
    )
    return parser.parse_args(argv)


def _rss_mib() -> float:
    """The resident set size of this process now, in MiB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_rss_mib() -> float:
    """The peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_windows(path: Path) -> torch.Tensor:
    tensors = load_file(str(path))
    if "input_ids" not in tensors:
        raise SystemExit(f"error: {path} holds no tensor 'input_ids' (has {sorted(tensors)})")
    ids = tensors["input_ids"]
    if ids.dtype != torch.int64 or ids.dim() != 2 or ids.numel() == 0:
        raise SystemExit(
            f"error: input_ids must be a non-empty int64 [samples, seq_len] tensor, "
            f"got {ids.dtype} {tuple(ids.shape)}"
        )
    return ids


def _reset_peak() -> bool:
    """Start a new peak resident set (``VmHWM``) from now; False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm_mib() -> float:
    """The peak resident set size since the last :func:`_reset_peak` (or the start), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _calibration_loader(ids: torch.Tensor, batch_size: int) -> DataLoader:
    """``batch_size`` windows a batch, in file order, every token attended."""

    def collate(rows: list[int]) -> dict[str, torch.Tensor]:
        batch = ids[rows]
        return {"input_ids": batch, "attention_mask": torch.ones_like(batch)}

    return DataLoader(range(ids.shape[0]), batch_size=batch_size, shuffle=False, collate_fn=collate)


def _versions() -> dict[str, str]:
    names = ("llmcompressor", "compressed-tensors", "transformers", "torch")
    return {name.replace("-", "_"): importlib.metadata.version(name) for name in names}


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"error: --out {args.out} already exists; give a new folder")
    if not 0.0 < args.sparsity < 1.0:
        raise SystemExit(f"error: --sparsity must lie in (0, 1), got {args.sparsity}")
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    n, m = (int(part) for part in args.mask_structure.split(":"))
    if m and args.sparsity != n / m:
        print(
            f"note: llm-compressor ignores --sparsity {args.sparsity} for {args.mask_structure}; "
            f"the pattern gives {n / m}",
            file=sys.stderr,
        )

    ids = _load_windows(args.calibration)
    # imported only now: importing llmcompressor logs (no accelerator) and takes seconds, which
    # a refused command line should not wait for
    import llmcompressor.modifiers.pruning as pruning
    from llmcompressor import oneshot
    from llmcompressor.utils.pytorch.module import infer_sequential_targets

    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, local_files_only=True
    ).eval()
    modifier = getattr(pruning, MODIFIERS[args.method])(
        sparsity=args.sparsity,
        mask_structure=args.mask_structure,
        targets=["Linear"],
        ignore=["re:.*lm_head"],
    )
    recipe = {
        "modifier": type(modifier).__name__,
        **{
            key: value
            for key, value in modifier.model_dump().items()
            if key not in _STATE_FIELDS and not key.endswith("_")
        },
        "pipeline": "independent (sequential for this modifier)",
        "sequential_targets": list(infer_sequential_targets(model)),
        "batch_size": args.batch_size,
    }
    loader = _calibration_loader(ids, args.batch_size)
    processor = LlamaTokenizer()  # required by oneshot's setup when data is given; unused here

    rss_before = _rss_mib()
    peak_before = _peak_rss_mib()
    exact = _reset_peak()  # then VmHWM is the peak of the oneshot call alone
    start = time.perf_counter()
    oneshot(model=model, dataset=loader, recipe=modifier, processor=processor)
    wall_s = time.perf_counter() - start
    peak = _vm_hwm_mib() if exact else _peak_rss_mib()

    # transformers 5 always writes safetensors; save_compressed=False keeps dense weights
    model.save_pretrained(args.out, save_compressed=False)
    result = {
        "wall_s": wall_s,
        "peak_rss_mib": peak,
        "peak_of": "the oneshot call (VmHWM reset before it)" if exact else "the process",
        "peak_rss_before_mib": peak_before,
        "rss_before_mib": rss_before,
        "method": args.method,
        "sparsity": args.sparsity,
        "mask_structure": args.mask_structure,
        "calibration": {"samples": ids.shape[0], "seq_len": ids.shape[1]},
        "recipe": recipe,
        "versions": _versions(),
        "threads": torch.get_num_threads(),
    }
    (args.out / "llmcompressor.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("wall_s", "peak_rss_mib", "method")}))


if __name__ == "__main__":
    main()
