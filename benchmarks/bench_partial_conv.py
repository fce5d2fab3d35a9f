"""PartialConv2d against nn.Conv2d and the dense ones-kernel formulation, forward and forward+backward.

    python benchmarks/bench_partial_conv.py            # CPU: results/partial_conv--cpu--torch<v>.*
    python benchmarks/bench_partial_conv.py --quick    # fewer rounds
    python benchmarks/bench_partial_conv.py --device cuda

Candidates, all 3×3, stride 1, padding 1, C_in = C_out = C, batch 4, with ~35 % holes (``--holes``
sweeps other hole ratios):
- ``conv``: ``nn.Conv2d`` (with bias), the floor.
- ``ours``: ``PartialConv2d`` with a ``(B, 1, H, W)`` pixel mask, the common inpainting case.
- ``ours_multi``: ``PartialConv2d(multi_channel=True)`` with a ``(B, C, H, W)`` mask.
- ``dense``: the formulation of the original reference implementation for per-channel masks: the
  valid count from a convolution of the ``(B, C, H, W)`` mask with a ``(C, C, 3, 3)`` ones kernel
  (under no_grad), then ``(conv(x ⊙ m) - b) · ratio + b`` and ``⊙ new_mask`` as separate autograd ops.

- ``fused`` (CUDA only): ``ours`` through the fused Triton kernel with hole-tile skipping.

``dense`` computes the same function as ``ours_multi``, so ``dense / ours_multi`` is the like-for-like
ratio; ``dense / ours`` is what a user moving from the reference (which only offers the dense form
for per-channel masks) to a pixel mask sees.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, time_side_by_side, write_report

from masking import PartialConv2d
from masking.kernels import table

SHAPES = [(64, 128), (256, 64), (512, 32)]  # (channels, height = width)
BATCH = 4
TARGETS = {"forward_vs_conv": 1.15, "fwd_bwd_vs_conv": 1.4, "dense_vs_ours_forward": 1.6}


def dense_ones_kernel(x, mask, weight, bias):
    """The dense formulation, written out here as the benchmark's baseline."""
    c_out, c_in, kh, kw = weight.shape
    with torch.no_grad():
        ones = torch.ones(c_out, c_in, kh, kw, dtype=x.dtype, device=x.device)
        count = F.conv2d(mask, ones, None, 1, 1)
        ratio = (c_in * kh * kw) / (count + 1e-8)
        new_mask = count.clamp(0, 1)
        ratio = ratio * new_mask
    raw = F.conv2d(x * mask, weight, bias, 1, 1)
    bias_view = bias.view(1, c_out, 1, 1)
    return ((raw - bias_view) * ratio + bias_view) * new_mask, new_mask


def hole_mask(batch: int, size: int, hole_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Smooth random blobs covering about ``hole_ratio`` of each image (1 = valid); no hole at 0."""
    if hole_ratio == 0:
        return torch.ones(batch, 1, size, size)
    noise = torch.rand(batch, 1, max(size // 16, 2), max(size // 16, 2), generator=generator)
    field = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    threshold = torch.quantile(field.flatten(1), hole_ratio, dim=1).view(batch, 1, 1, 1)
    return (field > threshold).float()


def bench_shape(
    channels: int, size: int, holes: float, device: torch.device, rounds: int
) -> list[dict]:
    g = torch.Generator().manual_seed(channels * 1000 + size)
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(device)
    ours = PartialConv2d.from_dense(conv)
    ours_multi = PartialConv2d.from_dense(conv, multi_channel=True)
    # the same parameters drive every candidate so autograd.grad sees one set of leaves
    ours.weight, ours.bias = conv.weight, conv.bias
    ours_multi.weight, ours_multi.bias = conv.weight, conv.bias
    x = torch.randn(BATCH, channels, size, size, generator=g).to(device).requires_grad_(True)
    mask = hole_mask(BATCH, size, holes, g).to(device)
    mask_c = mask.expand(-1, channels, -1, -1).contiguous()
    grad = torch.randn(BATCH, channels, size, size, generator=g).to(device)
    params = [x, conv.weight, conv.bias]

    def fwd_bwd(fn):
        def run():
            out = fn()
            return torch.autograd.grad(out, params, grad)

        return run

    forward = {
        "conv": lambda: conv(x),
        "ours": lambda: ours(x, mask)[0],
        "ours_multi": lambda: ours_multi(x, mask_c)[0],
        "dense": lambda: dense_ones_kernel(x, mask_c, conv.weight, conv.bias)[0],
    }
    if device.type == "cuda":
        forward["fused"] = lambda: fused(lambda: ours(x, mask)[0])
    rows = []
    with torch.no_grad():
        fwd = time_side_by_side(forward, rounds=rounds)
    both = time_side_by_side({k: fwd_bwd(f) for k, f in forward.items()}, rounds=rounds)
    for mode, timings in (("forward", fwd), ("forward+backward", both)):
        for impl, t in timings.items():
            rows.append(
                {
                    "channels": channels,
                    "size": size,
                    "holes": holes,
                    "batch": BATCH,
                    "mode": mode,
                    "impl": impl,
                    **t,
                }
            )
    return rows


def fused(run):
    with table.prefer("partial_conv2d", "fused"):
        return run()


def summarise(rows: list[dict]) -> list[dict]:
    def med(c, s, h, mode, impl):
        return next(
            r["median_ms"]
            for r in rows
            if (r["channels"], r["size"], r["holes"], r["mode"], r["impl"]) == (c, s, h, mode, impl)
        )

    out = []
    keys = {(r["channels"], r["size"], r["holes"]) for r in rows}
    for c, s, h in sorted(keys, key=lambda t: (-t[1], t[2])):
        entry = {"channels": c, "size": s, "holes": h}
        for mode, tag in (("forward", "fwd"), ("forward+backward", "fwd_bwd")):
            conv = med(c, s, h, mode, "conv")
            entry[f"{tag}_ours_vs_conv"] = med(c, s, h, mode, "ours") / conv
            entry[f"{tag}_ours_multi_vs_conv"] = med(c, s, h, mode, "ours_multi") / conv
            entry[f"{tag}_dense_vs_ours"] = med(c, s, h, mode, "dense") / med(c, s, h, mode, "ours")
            entry[f"{tag}_dense_vs_ours_multi"] = med(c, s, h, mode, "dense") / med(
                c, s, h, mode, "ours_multi"
            )
            if any(r["impl"] == "fused" for r in rows):
                entry[f"{tag}_fused_vs_conv"] = med(c, s, h, mode, "fused") / conv
        out.append(entry)
    return out


def acceptance(ratios: list[dict]) -> dict:
    return {
        "forward_ours_vs_conv_max": max(r["fwd_ours_vs_conv"] for r in ratios),
        "fwd_bwd_ours_vs_conv_max": max(r["fwd_bwd_ours_vs_conv"] for r in ratios),
        "forward_dense_vs_ours_multi_min": min(r["fwd_dense_vs_ours_multi"] for r in ratios),
        "forward_dense_vs_ours_min": min(r["fwd_dense_vs_ours"] for r in ratios),
        "targets": TARGETS,
    }


def markdown(payload: dict) -> str:
    dev = payload["device"]
    lines = [
        f"PartialConv2d benchmark on {dev['name']} ({dev.get('threads', '')} threads), torch "
        f"{payload['versions']['torch']}, commit {str(payload['commit'])[:10]}, batch {BATCH}, 3×3, "
        f"{payload['rounds']} interleaved rounds of 3 calls; medians in ms per call.",
        "",
        "| C, H×W | holes | mode | conv | ours | ours multi | dense | ours/conv | multi/conv "
        "| dense/multi | fused/conv |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = payload["results"]
    for ratio in payload["ratios"]:
        c, s, h = ratio["channels"], ratio["size"], ratio["holes"]
        for mode, tag in (("forward", "fwd"), ("forward+backward", "fwd_bwd")):
            t = {
                r["impl"]: r["median_ms"]
                for r in rows
                if (r["channels"], r["size"], r["holes"], r["mode"]) == (c, s, h, mode)
            }
            fused_ratio = ratio.get(f"{tag}_fused_vs_conv")
            lines.append(
                f"| {c}, {s}² | {h:.0%} | {mode} | {t['conv']:.1f} | {t['ours']:.1f} | {t['ours_multi']:.1f} "
                f"| {t['dense']:.1f} | {ratio[f'{tag}_ours_vs_conv']:.3f} "
                f"| {ratio[f'{tag}_ours_multi_vs_conv']:.3f} "
                f"| {ratio[f'{tag}_dense_vs_ours_multi']:.2f} "
                f"| {'—' if fused_ratio is None else f'{fused_ratio:.3f}'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="4 rounds instead of 10")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per shape")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=[f"{c}x{s}" for c, s in SHAPES],
        help="CHANNELSxSIZE items (default: %(default)s)",
    )
    parser.add_argument(
        "--holes", nargs="+", type=float, default=[0.35], help="hole ratios (default: 0.35)"
    )
    args = parser.parse_args(argv)
    try:
        shapes = [tuple(int(v) for v in item.split("x")) for item in args.shapes]
        if any(len(shape) != 2 or min(shape) < 1 for shape in shapes):
            raise ValueError
    except ValueError:
        parser.error(f"--shapes items must look like 64x128, got {args.shapes}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    rounds = args.rounds or (4 if args.quick else 10)
    if rounds < 1:
        parser.error(f"--rounds must be >= 1, got {rounds}")
    torch.manual_seed(0)
    rows = []
    if any(not 0 <= h < 1 for h in args.holes):
        parser.error(f"--holes must lie in [0, 1), got {args.holes}")
    for channels, size in shapes:
        for holes in args.holes:
            print(f"C={channels} H=W={size} holes={holes:.0%} ...", flush=True)
            rows += bench_shape(channels, size, holes, device, rounds)
    ratios = summarise(rows)
    payload = {
        "benchmark": "partial_conv",
        **provenance(device),
        "rounds": rounds,
        "results": rows,
        "ratios": ratios,
        "acceptance": acceptance(ratios),
    }
    write_report(args.out, payload, markdown(payload), suite="partial_conv")
    return payload


if __name__ == "__main__":
    main()
