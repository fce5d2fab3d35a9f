"""What thinner heads buy in time: a ``SlimMultiheadAttention`` at the widths head-feature pruning
leaves, stage by stage, side by side with the dense widths.

    python benchmarks/bench_attention_widths.py         # the digits ViT's attention: batch 32,
                                                         # 17 tokens, width 192, 8 heads of 24
    python benchmarks/bench_attention_widths.py --variant vit-s-197 --tokens 197 --embed 384 \
        --heads 6 --batch 8 --widths 64:64 48:48 32:32 31:33 16:16

Every width pair ``q:v`` (query/key features and value features per head) is timed as the module
computes it, under ``no_grad``:
- ``in``: the fused in-projection, ``F.linear(x, in_proj_weight, in_proj_bias)``;
- ``core``: the scores, their softmax and the weighted sum of the values, on the in-projection's
  views (``L² · heads · (q + v)`` multiply-accumulates per sample);
- ``out``: the out-projection of the attended values;
- ``module``: ``attention(x, x, x, need_weights=False)``, all of it.

``pruning.granularity=head_dims`` removes query/key and value features, so it cuts the MACs of all
three stages, but the softmax and the per-head calls of the core do not shrink with a head's width:
at a ViT's few tokens the core's time stays where it was while its MACs halve, and the module's
speedup falls short of its MAC reduction. The table shows by how much, per stage. Writes
``results/attention_widths--<device>--torch<version>.{json,md}``.
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

from masking.layers import SlimMultiheadAttention

STAGES = ("in", "core", "out", "module")
# The dense ViT's 24:24; half of the features split evenly and unevenly (what a MAC budget leaves:
# 13:11, 7:17); a quarter of them; and odd widths
WIDTHS = ("24:24", "18:18", "12:12", "13:11", "7:17", "6:6", "5:7")


def width_pair(text: str) -> tuple[int, int]:
    """``"q:v"`` as two positive ints (an argparse type)."""
    try:
        q, v = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected q:v with two ints, got {text!r}") from None
    if q < 1 or v < 1:
        raise argparse.ArgumentTypeError(f"q and v must be >= 1, got {text!r}")
    return q, v


def stage_macs(batch: int, tokens: int, embed: int, heads: int, q: int, v: int) -> dict:
    """Multiply-accumulates of each stage for ``batch`` sequences."""
    per_sample = {
        "in": tokens * embed * heads * (2 * q + v),
        "core": tokens * tokens * heads * (q + v),
        "out": tokens * heads * v * embed,
    }
    per_sample["module"] = sum(per_sample.values())
    return {stage: batch * macs for stage, macs in per_sample.items()}


def candidates(attention: SlimMultiheadAttention, x: torch.Tensor) -> dict:
    """The stages of ``attention`` on ``x`` as calls, plus the staged result (to check them)."""
    batch, tokens, _ = x.shape
    heads, q, v = attention.num_heads, attention.head_dim, attention.value_dim
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    projected = F.linear(x, weight, bias)
    parts = [
        part.view(batch, tokens, heads, d).transpose(1, 2)
        for part, d in zip(projected.split([heads * q, heads * q, heads * v], -1), (q, q, v))
    ]
    scale = q**-0.5

    def core() -> torch.Tensor:
        scores = torch.matmul(parts[0] * scale, parts[1].transpose(-2, -1))
        return torch.matmul(scores.softmax(-1), parts[2])

    attended = core().transpose(1, 2).reshape(batch, tokens, heads * v)
    return {
        "in": lambda: F.linear(x, weight, bias),
        "core": core,
        "out": lambda: attention.out_proj(attended),
        "module": lambda: attention(x, x, x, need_weights=False),
        "staged": attention.out_proj(attended),
    }


def markdown(payload: dict) -> str:
    dev, cfg = payload["device"], payload["config"]
    lines = [
        f"SlimMultiheadAttention by stage on {dev['name']} ({dev.get('threads', '')} threads), "
        f"torch {payload['versions']['torch']}, commit {str(payload['commit'])[:10]}: batch "
        f"{cfg['batch']}, {cfg['tokens']} tokens, width {cfg['embed']}, {cfg['heads']} heads; "
        f"{payload['rounds']} interleaved rounds of 3 calls; medians in ms per call. MAC "
        "reduction and speedup against the first width.",
        "",
        "| q:v | in (ms) | core (ms) | out (ms) | module (ms) | core's share | MACs fewer | "
        "core MACs fewer / faster | module faster | ÷ MAC reduction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["results"]:
        t = row["median_ms"]
        lines.append(
            f"| {row['q']}:{row['v']} | {t['in']:.3f} | {t['core']:.3f} | {t['out']:.3f} | "
            f"{t['module']:.3f} | {t['core'] / t['module']:.0%} | {row['mac_reduction']:.2f}× | "
            f"{row['core_mac_reduction']:.2f}× / {row['core_speedup']:.2f}× | "
            f"{row['speedup']:.2f}× | {row['speedup'] / row['mac_reduction']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--widths",
        nargs="+",
        type=width_pair,
        default=[width_pair(w) for w in WIDTHS],
        help="q:v per head, the first the reference (default: " + " ".join(WIDTHS) + ")",
    )
    parser.add_argument("--batch", type=int, default=32, help="sequences per call (32)")
    parser.add_argument("--tokens", type=int, default=17, help="tokens per sequence (17)")
    parser.add_argument("--embed", type=int, default=192, help="model width (192)")
    parser.add_argument("--heads", type=int, default=8, help="heads (8)")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (40)")
    parser.add_argument("--variant", default=None, help="appended to the result's name")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args(argv)
    for name in ("batch", "tokens", "embed", "heads", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.manual_seed(0)
    dense = nn.MultiheadAttention(args.embed, args.heads, batch_first=True).eval()
    x = torch.randn(args.batch, args.tokens, args.embed)
    runs, shapes = {}, {}
    with torch.no_grad():
        for q, v in args.widths:
            attention = SlimMultiheadAttention.like(dense, args.heads, head_dim=q, value_dim=v)
            stages = candidates(attention.eval(), x)
            staged = stages.pop("staged")
            if not torch.allclose(stages["module"]()[0], staged, rtol=1e-4, atol=1e-5):
                raise SystemExit(f"{q}:{v}: the staged attention does not match the module")
            for stage, call in stages.items():
                runs[f"{q}:{v} {stage}"] = call
            shapes[(q, v)] = stage_macs(args.batch, args.tokens, args.embed, args.heads, q, v)
        timings = time_side_by_side(runs, rounds=args.rounds)
    results = []
    for q, v in args.widths:
        results.append(
            {
                "q": q,
                "v": v,
                "macs": shapes[(q, v)],
                **{
                    key: {s: timings[f"{q}:{v} {s}"][key] for s in STAGES}
                    for key in ("median_ms", "iqr_ms")
                },
            }
        )
    first = results[0]
    for row in results:
        row["mac_reduction"] = first["macs"]["module"] / row["macs"]["module"]
        row["speedup"] = first["median_ms"]["module"] / row["median_ms"]["module"]
        row["core_mac_reduction"] = first["macs"]["core"] / row["macs"]["core"]
        row["core_speedup"] = first["median_ms"]["core"] / row["median_ms"]["core"]
    payload = {
        "benchmark": "attention_widths",
        "variant": args.variant,
        **provenance(torch.device("cpu")),
        "rounds": args.rounds,
        "config": {k: getattr(args, k) for k in ("batch", "tokens", "embed", "heads")},
        "results": results,
    }
    write_report(args.out, payload, markdown(payload), suite="attention_widths")
    return payload


if __name__ == "__main__":
    main()
