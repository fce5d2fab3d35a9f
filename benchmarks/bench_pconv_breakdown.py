"""Where the partial convolution's forward time goes: its stages added one at a time, side by side.

    python benchmarks/bench_pconv_breakdown.py             # (64, 128²), batch 4, 40 % holes, CPU
    python benchmarks/bench_pconv_breakdown.py --channels 256 --size 64 --holes 0.2

Each candidate does the work of the one before it plus one stage, under ``no_grad``:
- ``conv``: ``F.conv2d(x, W, b)``, what ``nn.Conv2d`` does;
- ``+product``: the convolution of ``x ⊙ m`` instead;
- ``+ratio``: and the ratio ``window / valid_count`` with the new mask;
- ``+rescale``: and the output multiplied by the ratio (one pass over it);
- ``+bias``: and the bias where the window holds valid input (another pass): the whole formula;
- ``op``: the ``masking::partial_conv2d`` custom op (its checks and dispatch around the same work);
- ``module``: ``PartialConv2d(x, mask)``, the argument checks included, as suite 2 times it.

The marginal cost of a stage is the difference between neighbouring medians; writes
``results/pconv_breakdown--<device>--torch<version>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, time_side_by_side, write_report
from bench_partial_conv import BATCH, hole_mask

from masking import PartialConv2d
from masking.kernels import ops

STAGES = ["conv", "+product", "+ratio", "+rescale", "+bias", "op", "module"]


def candidates(channels: int, size: int, holes: float, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(channels * 1000 + size)
    layer = PartialConv2d(channels, channels, 3, padding=1).to(device)
    w, b = layer.weight.detach(), layer.bias.detach()
    x = torch.randn(BATCH, channels, size, size, generator=g).to(device)
    mask = hole_mask(BATCH, size, holes, g).to(device)
    geometry = ([1, 1], [1, 1], [1, 1])

    def ratio():
        return ops.valid_scale(mask, w.shape, *geometry, 1)

    def stage(n: int):
        def run():
            scale, valid = ratio() if n >= 2 else (None, None)
            out = F.conv2d(x * mask, w, None, 1, 1)
            if n >= 3:
                out.mul_(scale)
            if n >= 4:
                out.addcmul_(b.view(1, -1, 1, 1), valid)
            return out

        return run

    return {
        "conv": lambda: F.conv2d(x, w, b, 1, 1),
        "+product": stage(1),
        "+ratio": stage(2),
        "+rescale": stage(3),
        "+bias": stage(4),
        "op": lambda: ops.partial_conv2d(x, mask, w, b, *geometry, 1),
        "module": lambda: layer(x, mask),
    }


def check_pipeline(run, op) -> None:
    """The staged pipeline computes the op's result (else the breakdown measures nothing)."""
    if not torch.allclose(run(), op()[0], rtol=1e-5, atol=1e-5):
        raise SystemExit("the staged pipeline does not match the partial convolution")


def markdown(payload: dict) -> str:
    dev, cfg = payload["device"], payload["config"]
    lines = [
        f"PartialConv2d forward by stage on {dev['name']} ({dev.get('threads', '')} threads), torch "
        f"{payload['versions']['torch']}, commit {str(payload['commit'])[:10]}: C = {cfg['channels']}, "
        f"{cfg['size']}², batch {BATCH}, 3×3, {cfg['holes']:.0%} holes, {payload['rounds']} "
        "interleaved rounds of 3 calls; medians in ms per call.",
        "",
        "| candidate | median | IQR | stage adds | × conv |",
        "|---|---:|---:|---:|---:|",
    ]
    previous = None
    for row in payload["results"]:
        added = "—" if previous is None else f"{row['median_ms'] - previous:+.2f}"
        lines.append(
            f"| {row['stage']} | {row['median_ms']:.2f} | {row['iqr_ms']:.2f} | {added} "
            f"| {row['vs_conv']:.3f} |"
        )
        previous = row["median_ms"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64, help="C_in = C_out (default 64)")
    parser.add_argument("--size", type=int, default=128, help="height = width (default 128)")
    parser.add_argument("--holes", type=float, default=0.4, help="hole ratio in [0, 1) (0.4)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args(argv)
    if args.channels < 1 or args.size < 3:
        parser.error(f"--channels must be >= 1 and --size >= 3, got {args.channels}, {args.size}")
    if not 0 <= args.holes < 1:
        parser.error(f"--holes must lie in [0, 1), got {args.holes}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.manual_seed(0)
    runs = candidates(args.channels, args.size, args.holes, device)
    with torch.no_grad():
        check_pipeline(runs["+bias"], runs["op"])
        timings = time_side_by_side(runs, rounds=args.rounds)
    conv = timings["conv"]["median_ms"]
    payload = {
        "benchmark": "pconv_breakdown",
        **provenance(device),
        "rounds": args.rounds,
        "config": {"channels": args.channels, "size": args.size, "holes": args.holes},
        "results": [
            {"stage": s, **timings[s], "vs_conv": timings[s]["median_ms"] / conv} for s in STAGES
        ],
    }
    write_report(args.out, payload, markdown(payload), suite="pconv_breakdown")
    return payload


if __name__ == "__main__":
    main()
