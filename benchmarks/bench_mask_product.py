"""mask_product bandwidth as a fraction of a same-device copy measured in the same run.

    python benchmarks/bench_mask_product.py                 # CPU
    python benchmarks/bench_mask_product.py --device cuda   # the Triton kernel

Each case times ``mask_product(x, mask)``, the plain broadcast ``x * mask``, ``out.copy_(x)`` into a
preallocated buffer and ``x.clone()`` side by side. Bandwidth counts the bytes that must move: ``x``
read, the output written and the mask read once (a broadcast mask is never expanded).
``fraction_of_copy`` is our bandwidth over the preallocated copy's, the ceiling for an elementwise op;
``fraction_of_clone`` compares with a copy that, like every out-of-place op, allocates its output,
which on CPU costs page faults that a GPU's caching allocator avoids. Masks are bool, uint8, fp32 and
``packed bits`` (``pack_mask``: one bit per entry, unpacked in registers by the Triton kernel; on CPU
the reference unpacks it first). On CUDA a 2^26-element case is added, the size of the acceptance
target (≥ 85 % of the copy bandwidth).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, time_side_by_side, write_report

from masking import mask_product, pack_mask

# (name, x shape, mask shape)
CASES = [
    ("pixel", (8, 64, 128, 128), (8, 1, 128, 128)),
    ("channel", (8, 64, 128, 128), (1, 64, 1, 1)),
    ("weight_out_channel", (4096, 4096), (4096, 1)),
    ("weight_full", (4096, 4096), (4096, 4096)),
]
# the GPU acceptance size: 2^26 elements
LARGE = [("pixel_2^26", (64, 64, 128, 128), (64, 1, 128, 128))]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def bench_case(name, x_shape, mask_shape, dtype, mask_dtype, device, rounds, scale):
    x_shape = (max(1, x_shape[0] // scale), *x_shape[1:])
    mask_shape = (min(mask_shape[0], x_shape[0]), *mask_shape[1:])
    x = torch.randn(x_shape, device=device).to(dtype)
    packed = mask_dtype == "packed"
    mask = (torch.rand(mask_shape, device=device) > 0.3).to(torch.bool if packed else mask_dtype)
    ours_mask = pack_mask(mask) if packed else mask
    out = torch.empty_like(x)
    timings = time_side_by_side(
        {
            "ours": lambda: mask_product(x, ours_mask),
            "torch_mul": lambda: x * mask,
            "copy": lambda: out.copy_(x),
            "clone": lambda: x.clone(),
        },
        rounds=rounds,
    )
    mask_bytes = ours_mask.bits.numel() if packed else mask.numel() * mask.element_size()
    moved = 2 * x.numel() * x.element_size() + mask_bytes
    copied = 2 * x.numel() * x.element_size()
    gbps = {
        k: (copied if k in ("copy", "clone") else moved) / (t["median_ms"] * 1e-3) / 1e9
        for k, t in timings.items()
    }
    return {
        "case": name,
        "x_shape": list(x_shape),
        "mask_shape": list(mask_shape),
        "dtype": str(dtype).removeprefix("torch."),
        "mask_dtype": "packed bits" if packed else str(mask_dtype).removeprefix("torch."),
        "timings": timings,
        "gbps": gbps,
        "fraction_of_copy": gbps["ours"] / gbps["copy"],
        "fraction_of_clone": gbps["ours"] / gbps["clone"],
        "torch_mul_fraction_of_copy": gbps["torch_mul"] / gbps["copy"],
    }


def markdown(payload: dict) -> str:
    dev = payload["device"]
    lines = [
        f"mask_product bandwidth on {dev['name']}, torch {payload['versions']['torch']}, commit "
        f"{str(payload['commit'])[:10]}; {payload['rounds']} interleaved rounds, medians.",
        "",
        "| case | x | dtype | mask | ours GB/s | x*mask GB/s | copy GB/s | clone GB/s | ours/copy "
        "| ours/clone |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        shape = "×".join(str(s) for s in r["x_shape"])
        lines.append(
            f"| {r['case']} | {shape} | {r['dtype']} | {r['mask_dtype']} | {r['gbps']['ours']:.1f} "
            f"| {r['gbps']['torch_mul']:.1f} | {r['gbps']['copy']:.1f} | {r['gbps']['clone']:.1f} "
            f"| {r['fraction_of_copy']:.2f} | {r['fraction_of_clone']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per case")
    parser.add_argument("--scale", type=int, default=1, help="divide the leading dim (smoke runs)")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.rounds < 1 or args.scale < 1:
        parser.error("--rounds and --scale must be >= 1")
    dtypes = ["float32", "bfloat16"] if device.type == "cpu" else list(DTYPES)
    results = []
    cases = CASES + (LARGE if device.type == "cuda" else [])
    for name, x_shape, mask_shape in cases:
        for dtype in dtypes:
            for mask_dtype in (torch.bool, torch.uint8, "packed", torch.float32):
                print(f"{name} {dtype} {mask_dtype} ...", flush=True)
                results.append(
                    bench_case(
                        name,
                        x_shape,
                        mask_shape,
                        DTYPES[dtype],
                        mask_dtype,
                        device,
                        args.rounds,
                        args.scale,
                    )
                )
    payload = {
        "benchmark": "mask_product",
        **provenance(device),
        "rounds": args.rounds,
        "results": results,
        "min_fraction_of_copy": min(r["fraction_of_copy"] for r in results),
        "min_fraction_of_clone": min(r["fraction_of_clone"] for r in results),
    }
    write_report(args.out, payload, markdown(payload), suite="mask_product")
    return payload


if __name__ == "__main__":
    main()
