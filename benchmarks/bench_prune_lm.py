"""Language-model pruning judged by held-out perplexity: the one-shot pruners (magnitude, Wanda,
SparseGPT) and the learned n:m mask (MaskLLM) on the embedded Llama at 50 % unstructured, 4:8 and
2:4, with each method's wall time and peak memory; llm-compressor's SparseGPT and Wanda on the same
model, calibration set and sparsity; and the one-shot pruners on a ~1 B-parameter Llama.

    python benchmarks/bench_prune_lm.py                 # the table (about 25 min on 2 cores)
    python benchmarks/bench_prune_lm.py --llmcompressor .venv-llmc/bin/python   # with its rows
    python benchmarks/bench_prune_lm.py --scale         # the ~1 B row instead (suite prune_lm-scale)
    python benchmarks/bench_prune_lm.py --quick         # a tiny model and budget: a smoke test

Every entry runs in a fresh process, so its peak memory is its own: the resident set size sampled
every 10 ms while the method runs (peak, and peak over what the process held when it started:
interpreter, libraries, data, the dense model). Our entries are the job itself,
``python run.py task=prune_lm pruning=<method> pruning.granularity=<g>`` (in process, latency
profiling cut to one call), with the wall time the job reports for the pruning alone (one shot:
calibration and pruning, block by block; MaskLLM: its SparseGPT prior and the fine-tuning of the
mask logits). Perplexity is the job's: every held-out sequence of ``data.seq_len`` tokens.

The dense model is the embedded Llama trained for ``--dense-steps`` (the job's own training and
cache, ``task.cache_dir``); the calibration set is the job's (``task.calibration``: the same
windows of the training text for every method and for llm-compressor).

llm-compressor runs in its own environment (its pins differ from ours): ``--llmcompressor`` names
that environment's Python, which runs ``benchmarks/_llmcompressor_worker.py`` on the dense model
saved as a Hugging Face folder and the calibration windows saved as token ids; the pruned folder it
writes is evaluated here with the same perplexity code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine_line, provenance, write_report

sys.path.insert(0, str(REPO))

# The Wanda paper's LLaMA-2-7B perplexities (WikiText-2), Sun et al. 2024, as the issue quotes them
PAPER = {"model": "LLaMA-2-7B (Wanda paper)", "dense": 5.12}
PAPER_2_4 = {"magnitude": 54.6, "sparsegpt": 10.2, "wanda": 11.0}
GRANULARITIES = {"50%": ("weight", 0.5), "4:8": ("4:8", 0.5), "2:4": ("2:4", 0.5)}
ONESHOT = ("magnitude", "wanda", "sparsegpt")
# a ~1.1 B-parameter Llama (TinyLlama-1.1B's shape) and LLaMA-2-7B's, for the scale row
SCALE_CONFIG = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
}
LLAMA_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
}


# ---------------------------------------------------------------------------- in a worker process


class PeakMemory:
    """The peak resident set size of this process while the block runs: the kernel's own peak
    (``VmHWM``, reset through ``/proc/self/clear_refs`` on entry), or where the reset is refused,
    the resident set sampled every 10 ms."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self.rss()
        self.exact = False
        self._stop = threading.Event()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    @staticmethod
    def high_water() -> int:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = self.rss()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
        if self.exact:
            self.peak = max(self.peak, self.high_water())

    def record(self) -> dict[str, Any]:
        mib = 2**20
        return {
            "peak_rss_mib": self.peak / mib,
            "start_rss_mib": self.start / mib,
            "peak_over_start_mib": (self.peak - self.start) / mib,
            "peak_from": "VmHWM" if self.exact else "sampled every 10 ms",
        }


def _compose(out: Path, overrides: list[str]):
    from tests.hydra_config import compose_config

    return compose_config(out, overrides)


def worker_job(spec: dict) -> dict:
    """One of our entries: the job, in this process. A one-shot method's memory is taken over its
    pruning call (``PruningPlan.prune_oneshot``), as llm-compressor's is over ``oneshot``;
    MaskLLM's over the whole job, whose pruning is its prior and its training."""
    from tasks import run
    from tasks.pruning.plan import PruningPlan

    out = Path(spec["out"])
    cfg = _compose(out, spec["overrides"])
    calls: list[PeakMemory] = []
    original = PruningPlan.prune_oneshot

    def measured(self, *args: Any, **kwargs: Any):
        with PeakMemory() as memory:
            result = original(self, *args, **kwargs)
        calls.append(memory)
        return result

    PruningPlan.prune_oneshot = measured
    try:
        with PeakMemory() as job:
            run(cfg)
    finally:
        PruningPlan.prune_oneshot = original
    report = json.loads((out / "prune_report.json").read_text())
    learned = report["finetune_steps"] > 0
    return {
        "dense_ppl": report["perplexity"]["dense"],
        "ppl": report["perplexity"]["final"],
        "prune_seconds": report["prune_seconds"],
        "achieved_sparsity": report["achieved_sparsity"],
        "memory": {
            **(job if learned else calls[-1]).record(),
            "over": "job" if learned else "call",
        },
        "job_memory": job.record(),
    }


def worker_export(spec: dict) -> dict:
    """The dense model (trained and cached by the job's own code if missing) as a Hugging Face
    folder, the calibration windows as token ids, and the dense perplexity."""
    from safetensors.torch import save_file

    from tasks.jobs.prune_lm import LanguageModelTarget
    from tasks.pruning import pruning_plan

    out = Path(spec["out"])
    cfg = _compose(out, spec["overrides"])
    target = LanguageModelTarget(cfg, out)
    plan = pruning_plan(cfg)
    target.prepare(plan)
    net, _, origin = target.pretrained(plan)
    net.save_pretrained(out / "hf", safe_serialization=True)
    windows = torch.cat(target.calibration())
    save_file({"input_ids": windows.contiguous()}, str(out / "calibration.safetensors"))
    return {
        "dense_ppl": target.quality(net)["ppl"],
        "origin": origin,
        "parameters": sum(p.numel() for p in net.parameters()),
        "calibration": list(windows.shape),
        "calibration_batch": int(cfg.task.calibration.batch_size),
        "data": target.datamodule.describe(),
    }


def worker_evaluate(spec: dict) -> dict:
    """Perplexity and sparsity of a pruned Hugging Face folder (llm-compressor's output)."""
    from masking.pruning.oneshot import decoder_blocks, is_linear, linear_weight
    from tasks.jobs.prune_lm import LanguageModelTarget
    from tasks.modules.language import local_causal_lm
    from tasks.pruning import pruning_plan

    out = Path(spec["out"])
    cfg = _compose(out, spec["overrides"])
    target = LanguageModelTarget(cfg, out)
    target.prepare(pruning_plan(cfg))
    net = local_causal_lm(spec["folder"]).float().eval()
    zeros = total = 0
    for block in decoder_blocks(net)[1]:
        for module in block.modules():
            if is_linear(module):
                weight = linear_weight(module)
                zeros += int((weight == 0).sum())
                total += weight.numel()
    return {"ppl": target.quality(net)["ppl"], "achieved_sparsity": zeros / max(total, 1)}


def worker_scale(spec: dict) -> dict:
    """The one-shot pruner on a randomly initialised ~1 B Llama, calibration windows of the
    embedded text; time per decoder block and peak memory."""
    from datamodules.text import TextDataModule
    from masking.pruning.oneshot import prune_oneshot
    from tasks.modules.language import causal_lm

    torch.manual_seed(0)
    data = TextDataModule(path=spec["data_path"], seq_len=spec["seq_len"], cache_dir=spec["cache"])
    data.setup("fit")
    windows = data.calibration(spec["samples"], 0, spec["seq_len"])
    started = time.perf_counter()
    net = causal_lm("llama", **spec["config"]).eval()
    build_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in net.parameters())
    with PeakMemory() as memory:
        started = time.perf_counter()
        result = prune_oneshot(
            net,
            list(windows.split(spec["batch_size"])),
            method=spec["method"],
            granularity=spec["granularity"],
            sparsity=0.5,
            exclude=["lm_head"],
            forward=lambda model, ids: model(ids, use_cache=False),
            progress=lambda i, n, sec: print(f"block {i + 1}/{n}: {sec:.2f} s", flush=True),
        )
        seconds = time.perf_counter() - started
    return {
        "parameters": parameters,
        "build_seconds": build_seconds,
        "prune_seconds": seconds,
        "block_seconds": result.block_seconds,
        "tokens": result.tokens,
        "achieved_sparsity": result.achieved_sparsity(),
        "memory": memory.record(),
    }


WORKERS = {
    "job": worker_job,
    "export": worker_export,
    "evaluate": worker_evaluate,
    "scale": worker_scale,
}


def worker_main(path: str) -> None:
    spec = json.loads(Path(path).read_text())
    torch.set_num_threads(spec["threads"])
    result = WORKERS[spec["kind"]](spec)
    Path(spec["result"]).write_text(json.dumps(result))


# ---------------------------------------------------------------------------- in the parent


# Workers leave glibc's allocator alone: pinned (see _common.pin_allocator), its heap keeps the
# freed temporaries of every layer and the resident set grows by ~100 MB per 1 B-scale block that
# a user's process would not hold; memory here is what a user's run holds.
WORKER_ENV = {**os.environ, "MASKING_BENCH_MALLOC": "default"}


def in_worker(kind: str, work: Path, name: str, **spec: Any) -> dict:
    """Run ``WORKERS[kind]`` in a fresh process of this script; its result."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / "request.json"
    result = folder / "result.json"
    spec = {"kind": kind, "out": str(folder), "result": str(result), **spec}
    spec.setdefault("threads", torch.get_num_threads())
    request.write_text(json.dumps(spec))
    log = folder / "worker.log"
    print(f"  (progress in {log})", flush=True)
    with log.open("w") as stream:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", str(request)],
            cwd=REPO,
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=WORKER_ENV,
        )
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"error: {name} failed (log {log}):\n{tail}")
    return json.loads(result.read_text())


def job_overrides(args: argparse.Namespace, cache: Path) -> list[str]:
    overrides = [
        "task=prune_lm",
        f"task.dense_steps={args.dense_steps}",
        f"task.cache_dir={cache}",
        "task.latency.batches=[1]",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "trainer.enable_progress_bar=false",
    ]
    if args.quick:
        overrides += [
            "net.hidden_size=32",
            "net.intermediate_size=64",
            "net.num_hidden_layers=2",
            "net.num_attention_heads=4",
            "net.num_key_value_heads=2",
            "data.vocab_size=512",
            "data.seq_len=64",
            "data.max_val_sequences=8",
            "data.path=" + str(Path(os.__file__).parent / "email"),
            "task.calibration.samples=8",
        ]
    return [*overrides, *args.overrides]


def run_table(args: argparse.Namespace, work: Path) -> dict:
    cache = args.cache_dir.resolve()
    base = job_overrides(args, cache)
    print(f"dense model ({args.dense_steps} steps, cached in {cache}) ...", flush=True)
    dense = in_worker("export", work, "dense", overrides=[*base, "pruning=magnitude"])
    rows = []
    for label, (granularity, sparsity) in GRANULARITIES.items():
        methods = [*ONESHOT] + ([] if granularity == "weight" else ["maskllm"])
        for method in methods:
            overrides = [
                *base,
                f"pruning={method}",
                f"pruning.granularity={granularity}",
                f"pruning.sparsity={sparsity}",
            ]
            if method == "maskllm":
                overrides.append(f"task.finetune_steps={args.maskllm_steps}")
            print(f"ours: {method} {label} ...", flush=True)
            name = f"ours-{method}-{label.replace(':', '_').replace('%', 'pct')}"
            entry = in_worker("job", work, name, overrides=overrides)
            rows.append({"tool": "ours", "method": method, "granularity": label, **entry})
        if args.llmcompressor is None:
            continue
        for method in ("sparsegpt", "wanda"):
            print(f"llm-compressor: {method} {label} ...", flush=True)
            name = f"llmc-{method}-{label.replace(':', '_').replace('%', 'pct')}"
            rows.append(
                {
                    "tool": "llm-compressor",
                    "method": method,
                    "granularity": label,
                    **llmcompressor_entry(args, work, name, dense, method, label, base),
                }
            )
    return {"dense": dense, "rows": rows}


def llmcompressor_entry(args, work: Path, name: str, dense: dict, method, label, base) -> dict:
    granularity, sparsity = GRANULARITIES[label]
    folder = work / name
    structure = "0:0" if granularity == "weight" else granularity
    command = [
        str(args.llmcompressor),
        str(REPO / "benchmarks" / "_llmcompressor_worker.py"),
        "--model",
        str(work / "dense" / "hf"),
        "--calibration",
        str(work / "dense" / "calibration.safetensors"),
        "--method",
        method,
        "--sparsity",
        str(sparsity),
        "--mask-structure",
        structure,
        "--threads",
        str(torch.get_num_threads()),
        "--batch-size",
        str(dense["calibration_batch"]),  # the batch ours runs the calibration in
        "--out",
        str(folder / "model"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "llmcompressor.log").open("w") as stream:
        done = subprocess.run(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (folder / "llmcompressor.log").read_text()[-3000:]
        raise SystemExit(f"error: llm-compressor {method} {label} failed:\n{tail}")
    own = json.loads((folder / "model" / "llmcompressor.json").read_text())
    scored = in_worker(
        "evaluate",
        work,
        name + "-eval",
        overrides=[*base, "pruning=magnitude"],
        folder=str(folder / "model"),
    )
    return {
        "dense_ppl": dense["dense_ppl"],
        "ppl": scored["ppl"],
        "achieved_sparsity": scored["achieved_sparsity"],
        "prune_seconds": own["wall_s"],
        "memory": {
            "peak_rss_mib": own["peak_rss_mib"],
            "start_rss_mib": own["rss_before_mib"],
            "peak_over_start_mib": own["peak_rss_mib"] - own["rss_before_mib"],
            "over": "call",
            "peak_from": own.get("peak_of"),
        },
        "llmcompressor": own,
    }


def table_markdown(payload: dict) -> str:
    dense = payload["results"]["dense"]["dense_ppl"]
    rows = payload["results"]["rows"]
    labels = list(GRANULARITIES)
    lines = [
        "# Language-model pruning: held-out perplexity",
        "",
        f"{machine_line(payload)}. Model: {payload['model']}; calibration "
        f"{payload['calibration']}; MaskLLM: {payload['maskllm_steps']} steps of mask training "
        "(weights frozen, SparseGPT prior). Ratio = perplexity / dense; the last column is the "
        f"same ratio in the Wanda paper (LLaMA-2-7B, dense {PAPER['dense']}).",
        "",
        f"Dense perplexity: **{dense:.3f}**.",
        "",
        "| tool | method | "
        + " | ".join(f"{g} ppl (×dense)" for g in labels)
        + " | 2:4 ratio, LLaMA-2-7B paper |",
        "|---|---|" + "---:|" * len(labels) + "---:|",
    ]
    seen = []
    for row in rows:
        key = (row["tool"], row["method"])
        if key not in seen:
            seen.append(key)
    for tool, method in seen:
        cells = []
        for label in labels:
            match = [
                r
                for r in rows
                if (r["tool"], r["method"], r["granularity"]) == (tool, method, label)
            ]
            cells.append(
                f"{match[0]['ppl']:.3f} ({match[0]['ppl'] / dense:.3f}×)" if match else "—"
            )
        paper = PAPER_2_4.get(method)
        ratio = f"{paper / PAPER['dense']:.2f}× ({paper})" if paper and tool == "ours" else ""
        lines.append(f"| {tool} | {method} | " + " | ".join(cells) + f" | {ratio} |")
    lines += [
        "",
        "Wall time of the pruning alone, one run each (one shot: the pruning call, calibration "
        f"passes included, {payload['calibration_batch']} windows a batch for both tools; "
        "MaskLLM: its prior and the mask training, without the job's evaluations), and peak "
        "memory over what the process held before it (one shot: the pruning call's own peak "
        "resident set, `VmHWM` reset before it, minus the resident set then; MaskLLM: the "
        "whole job's, training included), with the peak resident set in brackets:",
        "",
        "| tool | method | "
        + " | ".join(f"{g} s" for g in labels)
        + " | "
        + " | ".join(f"{g} MiB" for g in labels)
        + " |",
        "|---|---|" + "---:|" * (2 * len(labels)),
    ]
    for tool, method in seen:
        times, memory = [], []
        for label in labels:
            match = [
                r
                for r in rows
                if (r["tool"], r["method"], r["granularity"]) == (tool, method, label)
            ]
            if not match:
                times.append("—")
                memory.append("—")
                continue
            m = match[0]["memory"]
            seconds = match[0]["prune_seconds"]
            times.append(f"{seconds:.1f}" if seconds >= 10 else f"{seconds:.2f}")
            memory.append(f"{m['peak_over_start_mib']:.0f} ({m['peak_rss_mib']:.0f})")
        lines.append(f"| {tool} | {method} | " + " | ".join(times + memory) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the scale row


def _block_layers(config: dict) -> list[tuple[int, int]]:
    """``(out, in)`` of a Llama block's q, k, v, o, gate, up and down projections."""
    d, f = config["hidden_size"], config["intermediate_size"]
    kv = d * config["num_key_value_heads"] // config["num_attention_heads"]
    return [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]


def layer_flops(config: dict, tokens: int, seq_len: int, method: str) -> float:
    """Approximate floating-point operations one decoder block costs a one-shot pruner (0 for
    magnitude, which only sorts weights): two passes of the calibration tokens through the block
    (statistics, then the outputs for the next block), each its projections (``2·T·Σ out·in``) and
    its attention scores and mixing (``4·T·S·d``); the statistics (SparseGPT: ``2·T·in²`` per
    distinct input); SparseGPT's solve per layer (the lazy OBS updates, about ``out·in²``, and the
    inverse Cholesky factor, about ``4/3·in³``). Norms, activations and the rotary embedding are
    left out (a few per cent)."""
    d, f = config["hidden_size"], config["intermediate_size"]
    layers = _block_layers(config)
    if method == "magnitude":
        return 0.0
    forward = 2 * tokens * sum(o * i for o, i in layers) + 4 * tokens * seq_len * d
    passes = 2 * forward
    if method == "wanda":
        return passes
    hessians = 2 * tokens * (3 * d * d + f * f)  # attention input, o's input, MLP input, down's
    solve = sum(o * i * i + 4 * i**3 / 3 for o, i in _block_layers(config))
    return passes + hessians + solve


def block_weights(config: dict) -> int:
    """The pruned weights of one block (what magnitude's sort scales with)."""
    return sum(o * i for o, i in _block_layers(config))


def seven_b_memory(tokens: int, method: str) -> float:
    """A lower bound on the bytes a one-shot pruner holds on one GPU for LLaMA-2-7B in bfloat16:
    the weights; one block's calibration inputs and outputs; for SparseGPT each layer's float32
    Hessian (one per layer) and the working set of its largest solve (a float32 copy of the weight,
    the damped Hessian, its Cholesky factor, the inverse and its factor). The keep masks (a byte
    per pruned weight) go to host memory; per-batch activations inside a block are left out."""
    d, f, layers = LLAMA_7B["hidden_size"], LLAMA_7B["intermediate_size"], 32
    per_block = sum(o * i for o, i in _block_layers(LLAMA_7B))
    weights = (layers * (per_block + 2 * d) + 2 * 32000 * d) * 2
    hidden = 2 * tokens * d * 2 if method != "magnitude" else 0
    hessians = (6 * d * d + f * f) * 4 if method == "sparsegpt" else 0
    solve = (d * f + 4 * f * f) * 4 if method == "sparsegpt" else 0
    return float(weights + hidden + hessians + solve)


def run_scale(args: argparse.Namespace, work: Path) -> dict:
    config = dict(SCALE_CONFIG)
    if args.quick:
        config.update(
            hidden_size=64,
            intermediate_size=176,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=4096,
        )
    rows = []
    for method in args.scale_methods:
        print(f"scale: {method} {args.scale_granularity} ...", flush=True)
        entry = in_worker(
            "scale",
            work,
            f"scale-{method}",
            config=config,
            method=method,
            granularity=args.scale_granularity,
            samples=args.scale_samples,
            # quick: a small corpus and its own token cache, not the standard library's
            data_path=str(Path(os.__file__).parent / "email") if args.quick else None,
            cache=str(work / "text") if args.quick else str(REPO / ".cache" / "text"),
            seq_len=args.scale_seq_len,
            batch_size=args.scale_batch,
        )
        tokens = entry["tokens"] or args.scale_samples * args.scale_seq_len
        per_block = sorted(entry["block_seconds"])[len(entry["block_seconds"]) // 2]
        measured = layer_flops(config, tokens, args.scale_seq_len, method)
        extrapolation = {}
        for name, target, seq in (
            ("llama_7b_same_tokens", tokens, args.scale_seq_len),
            ("llama_7b_128x2048", 128 * 2048, 2048),
        ):
            flops = layer_flops(LLAMA_7B, target, seq, method)
            if measured:
                cpu = per_block * flops / measured
            else:  # magnitude: a sort of the weights, scaled by their count
                cpu = per_block * block_weights(LLAMA_7B) / block_weights(config)
            extrapolation[name] = {
                "tokens": target,
                "tflop_per_block": flops / 1e12,
                "cpu_seconds_per_block": cpu,
                "gpu_seconds_per_block_assumed": flops / (args.gpu_tflops * 1e12)
                if flops
                else None,
                "gpu_memory_gib_lower_bound": seven_b_memory(target, method) / 2**30,
            }
        rows.append(
            {
                "method": method,
                "median_block_seconds": per_block,
                "tflop_per_block": measured / 1e12,
                "extrapolation": extrapolation,
                **entry,
            }
        )
    return {"config": config, "rows": rows}


def scale_markdown(payload: dict) -> str:
    results = payload["results"]
    config = results["config"]
    rows = results["rows"]
    params = rows[0]["parameters"] / 1e9 if rows else 0
    lines = [
        "# One-shot pruning at scale: a ~1 B-parameter Llama (random weights)",
        "",
        f"{machine_line(payload)}. Llama with hidden {config['hidden_size']}, MLP "
        f"{config['intermediate_size']}, {config['num_hidden_layers']} layers, "
        f"{config['num_attention_heads']} query / {config['num_key_value_heads']} key-value heads, "
        f"vocabulary {config['vocab_size']}: {params:.2f} B parameters, float32; "
        f"{payload['granularity']}; calibration {payload['calibration']}.",
        "",
        "| method | time per block (median) | all blocks | peak RSS | peak over the loaded model "
        "| TFLOP per block | 7 B, same tokens, per block (CPU, extrapolated) | 7 B, 128×2048 "
        "tokens, per block (CPU, extrapolated) | 7 B, 128×2048, one GPU: 32 blocks at the "
        "assumed rate, memory |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ex = row["extrapolation"]
        same, paper = ex["llama_7b_same_tokens"], ex["llama_7b_128x2048"]
        seconds = paper["gpu_seconds_per_block_assumed"]
        gpu = "—" if seconds is None else f"{32 * seconds:.0f} s"
        lines.append(
            f"| {row['method']} | {row['median_block_seconds']:.2f} s | "
            f"{row['prune_seconds']:.0f} s | {row['memory']['peak_rss_mib'] / 1024:.2f} GiB | "
            f"{row['memory']['peak_over_start_mib'] / 1024:.2f} GiB | "
            f"{row['tflop_per_block']:.2f} | {same['cpu_seconds_per_block']:.1f} s "
            f"({same['tflop_per_block']:.2f} TFLOP) | {paper['cpu_seconds_per_block']:.0f} s "
            f"({paper['tflop_per_block']:.1f} TFLOP) | "
            f"{gpu}, ≥ {paper['gpu_memory_gib_lower_bound']:.1f} GiB |"
        )
    lines += [
        "",
        "Extrapolated, not measured: the time scales each block's measured time on this CPU by the "
        "ratio of the operations of a LLaMA-2-7B block (hidden 4096, MLP 11008, 32 heads; "
        "`layer_flops` in the script) at the same calibration tokens or at the papers' 128 windows "
        "of 2048 tokens (magnitude: by the ratio of weights it sorts); the GPU column assumes a "
        f"sustained {payload['gpu_tflops']:g} TFLOP/s and bfloat16 weights, and its memory is a "
        "lower bound: the weights, one block's calibration inputs and outputs and (SparseGPT) "
        "every layer's float32 Hessian and the largest solve's working set; the keep masks (a "
        "byte per pruned weight) go to host memory.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    parser.add_argument("--quick", action="store_true", help="a tiny model and budget")
    parser.add_argument("--dense-steps", type=int, default=1200, help="training of the dense model")
    parser.add_argument("--maskllm-steps", type=int, default=300, help="MaskLLM's mask training")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "dense")
    parser.add_argument("--llmcompressor", type=Path, default=None, help="its environment's python")
    parser.add_argument("--scale", action="store_true", help="the ~1 B-parameter row instead")
    parser.add_argument("--scale-methods", nargs="+", choices=ONESHOT, default=list(ONESHOT))
    parser.add_argument("--scale-granularity", default="2:4")
    parser.add_argument("--scale-samples", type=int, default=16)
    parser.add_argument("--scale-seq-len", type=int, default=512)
    parser.add_argument("--scale-batch", type=int, default=4)
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=100.0,
        help="the sustained rate the 7 B GPU estimate assumes (not measured here)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("overrides", nargs="*", help="extra job overrides (after --)")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return {}
    if args.llmcompressor is not None and not args.llmcompressor.is_file():
        parser.error(f"--llmcompressor: {str(args.llmcompressor)!r} is not a Python executable")
    for name in ("dense_steps", "maskllm_steps", "scale_samples", "scale_seq_len", "scale_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.quick:
        args.dense_steps, args.maskllm_steps = min(args.dense_steps, 20), min(args.maskllm_steps, 4)
        args.scale_samples, args.scale_seq_len = (
            min(args.scale_samples, 4),
            min(args.scale_seq_len, 32),
        )
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_prune_lm_"))
    if args.quick and args.cache_dir == REPO / ".cache" / "dense":
        args.cache_dir = work / "cache"  # the tiny model does not go into the job's cache
    started = time.perf_counter()
    try:
        results = run_scale(args, work) if args.scale else run_table(args, work)
    except BaseException:
        print(f"the run folders, with every entry's log, are kept in {work}", file=sys.stderr)
        raise
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "benchmark": "prune_lm",
        **provenance(torch.device("cpu")),
        "quick": args.quick,
        "wall_time_s": time.perf_counter() - started,
        "worker_allocator": "default (MASKING_BENCH_MALLOC=default in every worker)",
        "results": results,
    }
    if args.scale:
        payload.update(
            variant="scale",
            gpu_tflops=args.gpu_tflops,
            granularity=args.scale_granularity,
            calibration=f"{args.scale_samples} windows of {args.scale_seq_len} tokens",
        )
        table = scale_markdown(payload)
    else:
        dense = results["dense"]
        payload.update(
            model=f"embedded Llama, {dense['parameters'] / 1e6:.2f} M parameters, "
            f"{args.dense_steps} training steps on {dense['data']}",
            calibration=f"{dense['calibration'][0]} windows of {dense['calibration'][1]} tokens",
            maskllm_steps=args.maskllm_steps,
            calibration_batch=dense["calibration_batch"],
            dense_steps=args.dense_steps,
            overrides=args.overrides,
            llmcompressor=str(args.llmcompressor) if args.llmcompressor else None,
        )
        table = table_markdown(payload)
    write_report(args.out, payload, table, suite="prune_lm")
    return payload


if __name__ == "__main__":
    main()
