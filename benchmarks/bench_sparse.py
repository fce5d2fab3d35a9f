"""Suite 3: masked and sparse linear/conv paths against dense, and the dispatcher's table.

    python benchmarks/bench_sparse.py            # CPU: results/sparse--cpu--torch<v>.* and the table
    python benchmarks/bench_sparse.py --quick    # fewer shapes, sparsities and rounds; no table
    python benchmarks/bench_sparse.py --device cuda

For each layer shape (LLM, ViT and ResNet GEMMs; a convolution is its ``out × (in·k²) × (batch·H·W)``
GEMM) and sparsity, every path is timed side by side with dense in one interleaved group, each on a
weight whose zeros have the path's pattern at that sparsity: unstructured for ``csr`` (and for the
training op ``masked``), ``b×b`` blocks for the BSR paths, whole rows (output features/channels) for
``rows``, 2:4 for ``semi24``. ``masked`` is ``masked_linear`` forward+backward against dense ``F.linear``
forward+backward: the training-time cost of a learned mask; it is reported, not a serving path.

A full run writes the speedups to ``masking/kernels/tables/<device kind>.json``, which ``sparsify``
reads; it then checks the dispatcher on the 4096×4096 linear at batch 256 with unstructured weights:
the chosen path against dense, timed side by side, at each sparsity.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, provenance, time_side_by_side, write_json, write_report

from masking import masked_linear
from masking.kernels import sparse, table
from masking.pruning.sparsify import SparseConv2d

# name, (out, in, batch) for linear; (out, in, kernel, hw, batch) for conv
LINEARS = {
    "llm_4096x4096_b256": (4096, 4096, 256),
    "llm_4096x4096_b1": (4096, 4096, 1),
    "vit_mlp_3072x768_b256": (3072, 768, 256),
    "vit_proj_768x3072_b256": (768, 3072, 256),
}
CONVS = {
    "resnet_256c_14px_b32": (256, 256, 3, 14, 32),
    "resnet_512c_7px_b32": (512, 512, 3, 7, 32),
    "resnet_256c_14px_b1": (256, 256, 3, 14, 1),
}
SPARSITIES = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
# below this, the unfold + CSR convolution measured 10-50x slower than dense: not timed
CONV_CSR_FROM = 0.8
QUICK_SPARSITIES = [0.5, 0.8, 0.9, 0.95, 0.99]
CHECK_SHAPE = "llm_4096x4096_b256"
CHECK_SPARSITIES = [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98]


def patterned(shape: tuple[int, int], sparsity: float, pattern: str, g: torch.Generator):
    """A random weight with exactly ``sparsity`` of its entries, blocks or rows zero."""
    out, k = shape
    w = torch.randn(out, k, generator=g)
    if pattern in ("unstructured", "rows"):
        units = out * k if pattern == "unstructured" else out
        drop = torch.randperm(units, generator=g)[: round(sparsity * units)]
        keep = torch.ones(units, dtype=torch.bool)
        keep[drop] = False
        return w * (keep.view(out, k) if pattern == "unstructured" else keep.view(out, 1))
    if pattern == "2:4":
        groups = w.view(out, -1, 4)
        order = torch.rand(groups.shape, generator=g).argsort(-1)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, order[..., :2], True)
        return (groups * keep).view(out, k)
    b = int(pattern.removeprefix("block"))
    units = (out // b) * (k // b)
    keep = torch.ones(units, dtype=torch.bool)
    keep[torch.randperm(units, generator=g)[: round(sparsity * units)]] = False
    keep = keep.view(out // b, 1, k // b, 1).expand(out // b, b, k // b, b).reshape(out, k)
    return w * keep


def pattern_of(path: str) -> str:
    if path in ("csr", "masked"):
        return "unstructured"
    if path == "semi24":
        return "2:4"
    b = sparse.block_of(path)
    return f"block{b}" if b else path


def linear_paths(device: torch.device, dtype: torch.dtype) -> list[str]:
    probe = torch.zeros(64, 64, dtype=dtype, device=device)
    probe[:, ::2] = 1  # 2:4 along the input
    usable = [p for p in sparse.PATHS if p != "dense" and sparse.supports(p, probe) is None]
    if device.type != "cuda":  # under TRITON_INTERPRET=1 they run, but as a slow simulation
        usable = [p for p in usable if not p.startswith("triton")]
    return [*usable, "masked"]


def bench_linear(name, dims, sparsities, device, dtype, rounds, g):
    out, k, n = dims
    x = torch.randn(n, k, generator=g).to(device, dtype)
    paths = linear_paths(device, dtype)
    rows = []
    for s in sparsities:
        weights = {"dense": patterned((out, k), s, "unstructured", g).to(device, dtype)}
        candidates = {"dense": lambda w=weights["dense"]: F.linear(x, w)}
        for path in paths:
            if path == "semi24" and s != 0.5:
                continue
            w = (
                weights["dense"]
                if path == "masked"
                else patterned((out, k), s, pattern_of(path), g).to(device, dtype)
            )
            if path == "masked":
                candidates.update(_training_pair(x, w))
            else:
                packed = sparse.Packed(w, path)
                candidates[path] = lambda p=packed: p(x)
        timings = time_side_by_side(candidates, rounds=rounds)
        dense_ms = timings["dense"]["median_ms"]
        speedups = {p: dense_ms / t["median_ms"] for p, t in timings.items() if p != "dense"}
        if "masked_train" in timings:
            speedups.pop("dense_train")
            speedups["masked"] = (
                timings["dense_train"]["median_ms"] / timings["masked_train"]["median_ms"]
            )
            speedups.pop("masked_train")
        rows.append({"sparsity": s, "timings": timings, "speedup": speedups})
        print(f"{name} {s:.2f} " + " ".join(f"{p}={v:.2f}" for p, v in speedups.items()))
    return {"name": name, "op": "linear", "gemm": [out, k, n], "rows": rows}


def _training_pair(x, w):
    """Forward+backward of dense F.linear and of masked_linear with a learned (float) mask."""
    weight = w.clone().normal_().requires_grad_()
    mask = (w != 0).to(w.dtype).requires_grad_()
    dense_w = weight.detach().clone().requires_grad_()

    def dense_train():
        with torch.enable_grad():
            F.linear(x, dense_w).sum().backward()

    def masked_train():
        with torch.enable_grad():
            masked_linear(x, weight, mask).sum().backward()

    return {"dense_train": dense_train, "masked_train": masked_train}


def bench_conv(name, dims, sparsities, device, dtype, rounds, g):
    c_out, c_in, k, hw, n = dims
    x = torch.randn(n, c_in, hw, hw, generator=g).to(device, dtype)
    rows = []
    for s in sparsities:
        candidates = {}
        for path in ("dense", "rows", "csr") if s >= CONV_CSR_FROM else ("dense", "rows"):
            pattern = "rows" if path == "rows" else "unstructured"
            w = patterned((c_out, c_in * k * k), s, pattern, g).view(c_out, c_in, k, k)
            conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
            conv.weight.data.copy_(w)
            layer = SparseConv2d(conv.to(device, dtype), path)
            candidates[path] = lambda m=layer: m(x)
        timings = time_side_by_side(candidates, rounds=rounds)
        dense_ms = timings["dense"]["median_ms"]
        speedups = {p: dense_ms / t["median_ms"] for p, t in timings.items() if p != "dense"}
        rows.append({"sparsity": s, "timings": timings, "speedup": speedups})
        print(f"{name} {s:.2f} " + " ".join(f"{p}={v:.2f}" for p, v in speedups.items()))
    return {"name": name, "op": "conv2d", "gemm": [c_out, c_in * k * k, n * hw * hw], "rows": rows}


def break_even(rows: list[dict], path: str) -> float | None:
    """The smallest measured sparsity from which ``path`` is at least as fast as dense."""
    found = None
    for row in reversed(rows):
        speedup = row["speedup"].get(path)
        if speedup is None:
            continue
        if speedup < 1.0:
            break
        found = row["sparsity"]
    return found


def build_table(results: list[dict], dtype: torch.dtype, prov: dict) -> dict:
    ops: dict[str, dict[str, list]] = {}
    for result in results:
        paths: dict[str, list] = {}
        for row in result["rows"]:
            for path, speedup in row["speedup"].items():
                if path != "masked":
                    paths.setdefault(path, []).append([row["sparsity"], round(speedup, 3)])
        entry = {"name": result["name"], "shape": result["gemm"], "paths": paths}
        ops.setdefault(result["op"], {}).setdefault(str(dtype).removeprefix("torch."), []).append(
            entry
        )
    return {
        "kind": prov["device"]["kind"],
        "min_gain": table.MIN_GAIN,
        "provenance": prov,
        "ops": ops,
    }


def dispatch_check(device, dtype, rounds, g) -> list[dict]:
    out, k, n = LINEARS[CHECK_SHAPE]
    x = torch.randn(n, k, generator=g).to(device, dtype)
    rows = []
    for s in CHECK_SPARSITIES:
        w = patterned((out, k), s, "unstructured", g).to(device, dtype)

        def sparsity_of(path, w=w):
            return None if sparse.supports(path, w) else sparse.path_sparsity(w, path)

        choice = table.choose("linear", device, dtype, (out, k, n), sparsity_of)
        chosen, dense = sparse.Packed(w, choice.path), sparse.Packed(w, "dense")
        timings = time_side_by_side(
            {"dense": lambda d=dense: d(x), "chosen": lambda c=chosen: c(x)}, rounds=rounds
        )
        ratio = timings["dense"]["median_ms"] / timings["chosen"]["median_ms"]
        rows.append(
            {
                "sparsity": s,
                "path": choice.path,
                "reason": choice.reason,
                "speedup_vs_dense": ratio,
                "timings": timings,
            }
        )
        print(f"dispatch {s:.2f}: {choice.path} {ratio:.2f}× dense ({choice.reason})")
    return rows


def markdown(payload: dict) -> str:
    prov = payload["provenance"]
    dev = prov["device"]
    lines = [
        f"Sparse paths vs dense on {dev['name']} ({dev.get('threads', '')} threads), "
        f"{payload['dtype']}, torch {prov['versions']['torch']}, commit {str(prov['commit'])[:10]}; "
        f"{payload['rounds']} interleaved rounds; speedup = dense median / path median "
        "(> 1 is faster). `masked` is masked_linear forward+backward vs dense forward+backward.",
        "",
    ]
    for result in payload["results"]:
        paths = list(result["rows"][-1]["speedup"])
        lines += [
            f"**{result['name']}** ({result['op']}, GEMM out×in×n = "
            f"{'×'.join(map(str, result['gemm']))})",
            "",
            "| sparsity | " + " | ".join(paths) + " |",
            "|---" * (len(paths) + 1) + "|",
        ]
        for row in result["rows"]:
            cells = [f"{row['speedup'][p]:.2f}" if p in row["speedup"] else "—" for p in paths]
            lines.append(f"| {row['sparsity']:.2f} | " + " | ".join(cells) + " |")
        even = [break_even(result["rows"], p) for p in paths]
        lines.append(
            "| break-even | " + " | ".join("—" if e is None else f"{e:.2f}" for e in even) + " |"
        )
        lines.append("")
    if payload.get("dispatch"):
        lines += [
            f"**Dispatcher** on {CHECK_SHAPE} with unstructured zeros (the chosen path vs dense, "
            "timed side by side):",
            "",
            "| sparsity | chosen | × dense | reason |",
            "|---|---|---:|---|",
        ]
        for row in payload["dispatch"]:
            lines.append(
                f"| {row['sparsity']:.2f} | {row['path']} | {row['speedup_vs_dense']:.2f} | "
                f"{row['reason']} |"
            )
    return "\n".join(lines) + "\n"


def _dims(item: str, count: int) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in item.split("x"))
    except ValueError:
        dims = ()
    if len(dims) != count or min(dims) < 1:
        raise ValueError(f"shape items must be {count} positive ints joined by x, got {item!r}")
    return dims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16/float16")
    parser.add_argument(
        "--quick", action="store_true", help="two shapes, five sparsities, 3 rounds"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--no-table", action="store_true", help="do not write the dispatch table")
    parser.add_argument(
        "--table",
        type=Path,
        default=None,
        help="write the dispatch table here (also after --quick) instead of masking/kernels/tables/",
    )
    parser.add_argument(
        "--linears",
        nargs="+",
        default=None,
        help="OUTxINxBATCH linear shapes instead of the suite's",
    )
    parser.add_argument("--convs", nargs="+", default=None, help="OUTxINxKxHWxBATCH conv shapes")
    parser.add_argument("--sparsities", nargs="+", type=float, default=None)
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    dtype = getattr(torch, args.dtype or ("float32" if device.type == "cpu" else "bfloat16"))
    rounds = args.rounds or (3 if args.quick else 5)
    sparsities = QUICK_SPARSITIES if args.quick else SPARSITIES
    linears = {CHECK_SHAPE: LINEARS[CHECK_SHAPE]} if args.quick else LINEARS
    convs = dict(list(CONVS.items())[:1]) if args.quick else CONVS
    try:
        if args.linears is not None:
            linears = {f"linear_{s}": _dims(s, 3) for s in args.linears}
        if args.convs is not None:
            convs = {f"conv_{s}": _dims(s, 5) for s in args.convs}
    except ValueError as err:
        parser.error(str(err))
    if args.sparsities is not None:
        if any(not 0 <= s < 1 for s in args.sparsities):
            parser.error(f"--sparsities must lie in [0, 1), got {args.sparsities}")
        sparsities = sorted(args.sparsities)
    custom = args.linears is not None or args.convs is not None or args.sparsities is not None
    g = torch.Generator().manual_seed(0)
    torch.set_grad_enabled(False)
    results = [bench_linear(n, d, sparsities, device, dtype, rounds, g) for n, d in linears.items()]
    if dtype in (torch.float32, torch.float64) or device.type == "cuda":
        results += [
            bench_conv(n, d, sparsities, device, dtype, rounds, g) for n, d in convs.items()
        ]
    prov = provenance(device)
    prov["device"]["kind"] = table.device_kind(device)
    payload = {
        "provenance": prov,
        "dtype": str(dtype).removeprefix("torch."),
        "rounds": rounds,
        "quick": args.quick,
        "results": results,
    }
    if args.table is not None:
        write_json(args.table, build_table(results, dtype, prov))
        print(f"wrote the dispatch table {args.table}")
    elif not (args.quick or args.no_table or custom):
        path = table.table_file(prov["device"]["kind"])
        write_json(path, build_table(results, dtype, prov))
        table.load_table.cache_clear()
        print(f"wrote the dispatch table {path.relative_to(REPO)}")
        payload["dispatch"] = dispatch_check(device, dtype, rounds, g)
    elif table.load_table(prov["device"]["kind"]) is not None and not custom:
        payload["dispatch"] = dispatch_check(device, dtype, rounds, g)
    write_report(args.out, payload, markdown(payload), suite="sparse")


if __name__ == "__main__":
    main()
