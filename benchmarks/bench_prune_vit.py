"""Structured pruning of a ViT: our head, neuron and hidden-width estimators against Torch-Pruning's
ViT recipe, on the same dense model with the same fine-tuning budget: accuracy, params, MACs and
latency.

    python benchmarks/bench_prune_vit.py            # every setting x 4 estimators, Torch-Pruning
    python benchmarks/bench_prune_vit.py --quick    # 1 fine-tuning epoch, 2 estimators, 2 settings
    python benchmarks/bench_prune_vit.py --seeds 0 1 2 --settings ...   # whole runs per seed

The dense model is ``experiment=prune_vit``'s ViT on the digits (trained and cached on first use,
exactly as ``python run.py experiment=prune_vit`` does). Ours: ``pruning=<method>`` with
``pruning.granularity=heads|head_dims|neurons|hidden`` (or several joined by ``+``) at the
experiment's defaults, compacted.
Torch-Pruning cannot remove whole heads of ``nn.MultiheadAttention`` (its handler narrows the
embedding and keeps the head count), so it runs its own recipe for a torchvision ViT: MetaPruner
over every width (the residual stream, the attention and the MLPs) with one ratio, rounded to a
multiple of the head count, the classifier in ``ignored_layers``, ``model.hidden_dim`` updated
afterwards; its ratio is chosen per setting so that its MACs match ours as closely as its rounding
allows; where ours removes MLP neurons alone, it also removes the same fraction of MLP neurons and
nothing else (``pruning_ratio_dict`` on the MLPs' first layers). Importance:
``GroupTaylorImportance`` on gradients of ``TAYLOR_BATCHES`` training batches (its
``prune_timm_vit.py --pruning_type taylor``), and ``GroupMagnitudeImportance(p=2)`` (its
``l2`` recipe). Every entry fine-tunes for ``task.finetune_epochs`` with the experiment's optimizer
and schedule, the network in train mode.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, provenance, write_report
from bench_prune_compare import baseline_entry, finetune, taylor_gradients

sys.path.insert(0, str(REPO))
from tasks import run
from tasks.jobs.prune import ClassificationTarget
from tasks.modules import evaluate
from tasks.pruning import pruning_plan
from tasks.runtime.cost import count_macs
from tests.hydra_config import compose_config

SETTINGS = {  # name -> (pruning.granularity, pruning.sparsity[, pruning.budget])
    "25 % of heads": ("heads", 0.25),
    "50 % of heads": ("heads", 0.5),
    "50 % of MLP neurons": ("neurons", 0.5),
    "50 % of head features (every head thinner)": ("head_dims", 0.5),
    "50 % of heads and of MLP neurons": ("heads+neurons", 0.5),
    "25 % of the hidden width": ("hidden", 0.25),
    "25 % of heads, of MLP neurons and of the hidden width": ("heads+neurons+hidden", 0.25),
    "a MAC budget: 50 % of the attention and MLP MACs, heads and MLP neurons ranked together": (
        "heads+neurons",
        0.5,
        "macs",
    ),
    "a MAC budget: 50 % of the attention and MLP MACs, head features and MLP neurons ranked "
    "together": ("head_dims+neurons", 0.5, "macs"),
    "a MAC budget over every width: 30 % of the MACs the units run through, heads, MLP neurons "
    "and hidden channels ranked together": ("heads+neurons+hidden", 0.3, "macs"),
    "a MAC budget over every width: 50 % of the MACs the units run through, heads, MLP neurons "
    "and hidden channels ranked together": ("heads+neurons+hidden", 0.5, "macs"),
    "a MAC budget over every width: 50 % of the MACs the units run through, head features, MLP "
    "neurons and hidden channels ranked together": ("head_dims+neurons+hidden", 0.5, "macs"),
}
QUICK = (
    "50 % of heads and of MLP neurons",
    "25 % of heads, of MLP neurons and of the hidden width",
)
METHODS = ("magnitude", "taylor", "movement", "hard_concrete")
TAYLOR_BATCHES = 10  # prune_timm_vit.py's default --taylor_batchs


def _tp_prune(
    net: nn.Module, example, importance, ratio: float, train_loader=None, neurons_only=False
) -> nn.Module:
    """Torch-Pruning's MetaPruner on a torchvision ViT, one shot, as its torchvision example sets
    it up; Taylor importance takes its gradients first. ``neurons_only``: the ratio goes to the
    MLPs' first layers through ``pruning_ratio_dict`` and every other width stays (the same units
    as ours at ``pruning.granularity=neurons``). Building the pruner traces the network, which
    leaves it in eval mode: the mode is restored."""
    import torch_pruning as tp

    training = net.training
    heads = net.encoder.layers[0].num_heads
    mlps = {layer.mlp[0]: ratio for layer in net.encoder.layers} if neurons_only else None
    pruner = tp.pruner.MetaPruner(
        net,
        example,
        importance=importance,
        pruning_ratio=0.0 if neurons_only else ratio,
        pruning_ratio_dict=mlps,
        global_pruning=False,
        round_to=heads,
        ignored_layers=[net.heads],
    )
    net.train(training)
    if train_loader is not None:
        taylor_gradients(net, train_loader, TAYLOR_BATCHES)
    pruner.step()
    net.zero_grad()
    net.hidden_dim = net.conv_proj.out_channels  # torchvision's forward reads it
    return net


def _tp_ratio(dense: nn.Module, example, target_macs: int) -> tuple[float, int]:
    """The ratio (in steps of 0.01) whose pruned MACs come closest to ``target_macs``."""
    import torch_pruning as tp

    best = None
    for step in range(1, 80):
        ratio = step / 100
        net = _tp_prune(
            copy.deepcopy(dense), example, tp.importance.GroupMagnitudeImportance(p=2), ratio
        )
        macs = count_macs(net, example[:1])
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (ratio, macs)
    return best


def torch_pruning_entry(
    cfg, dense, datamodule, ratio, importance_name, root, neurons_only=False
) -> dict:
    import torch_pruning as tp

    started = time.perf_counter()
    net = copy.deepcopy(dense)
    example = datamodule.example_input(2)
    who = "Torch-Pruning, MLP neurons only" if neurons_only else "Torch-Pruning"
    if importance_name == "taylor":
        importance, loader = tp.importance.GroupTaylorImportance(), datamodule.train_dataloader()
        name = f"{who} (group Taylor, {TAYLOR_BATCHES} batches, width ratio {ratio:.2f})"
    else:
        importance, loader = tp.importance.GroupMagnitudeImportance(p=2), None
        name = f"{who} (group L2, width ratio {ratio:.2f})"
    _tp_prune(net, example, importance, ratio, loader, neurons_only)
    val = datamodule.val_dataloader()
    before = evaluate(net, val)
    finetune(cfg, net, datamodule, root)
    acc = {"masked_before_finetune": before, "final": evaluate(net, val)}
    entry = baseline_entry(cfg, name, dense, net, acc, datamodule, started)
    entry["hidden_dim"] = net.hidden_dim
    return entry


def dense_finetuned_entry(cfg, dense, datamodule, root) -> dict:
    """The dense model fine-tuned for the same budget, unpruned: what the budget alone adds."""
    started = time.perf_counter()
    net = copy.deepcopy(dense)
    val = datamodule.val_dataloader()
    before = evaluate(net, val)
    finetune(cfg, net, datamodule, root)
    acc = {"masked_before_finetune": before, "final": evaluate(net, val)}
    return baseline_entry(
        cfg, "dense, fine-tuned (not pruned)", dense, net, acc, datamodule, started
    )


def ours_entry(
    overrides,
    granularity: str,
    sparsity: float,
    method: str,
    root: Path,
    score: str = "accuracy",
    budget: str = "units",
) -> dict:
    """``pruning=<method>`` at ``granularity`` and ``sparsity`` through the job itself; ``score``
    names the report's quality column (``accuracy``, ``perplexity``); ``budget``: what
    ``sparsity`` counts (``pruning.budget``: units, params or macs)."""
    started = time.perf_counter()
    suffix = "" if budget == "units" else f"-{budget}"
    out = root / f"ours-{granularity}-{sparsity}{suffix}-{method}"
    extra = [
        f"pruning={method}",
        f"pruning.granularity={granularity}",
        f"pruning.sparsity={sparsity}",
        f"pruning.budget={budget}",
    ]
    run(compose_config(out, [*overrides, *extra]))
    report = json.loads((out / "prune_report.json").read_text())
    return {
        "method": f"ours: {method}",
        score: {stage: report[score][stage] for stage in ("masked_before_finetune", "final")},
        "dense": report["dense"],
        "final": report["final"],
        "achieved_sparsity": report["achieved_sparsity"],
        "onnx_speedup": report.get("onnxruntime", {}).get("speedup"),
        "wall_time_s": time.perf_counter() - started,
    }


def cost_header(batches: list[int]) -> str:
    """The cost columns of :func:`cost_cells`, for a table's header."""
    return (
        "params | MACs | "
        + " | ".join(f"b{b} ms (speedup)" for b in batches)
        + f" | b{batches[-1]} speedup / MAC reduction"
    )


def speedup_over_macs(row: dict, batch: int) -> float:
    """An entry's measured speedup at ``batch`` over its MAC reduction (1.0: latency falls as
    fast as the MACs)."""
    f, d = row["final"], row["dense"]
    speedup = d["latency_ms"][f"batch_{batch}"] / f["latency_ms"][f"batch_{batch}"]
    return speedup / (d["macs"] / f["macs"])


def cost_cells(row: dict, batches: list[int]) -> str:
    """Params, MACs, latency per batch with its speedup, and the last batch's speedup over the
    MAC reduction, of one entry (final against its dense model measured in the same run)."""
    f, d = row["final"], row["dense"]
    speedups = {b: d["latency_ms"][f"batch_{b}"] / f["latency_ms"][f"batch_{b}"] for b in batches}
    reduction = d["macs"] / f["macs"]
    lat = " | ".join(f"{f['latency_ms'][f'batch_{b}']:.2f} ({speedups[b]:.2f}×)" for b in batches)
    return (
        f"{f['params']:,} | {f['macs'] / 1e6:,.2f}M ({reduction:.2f}× fewer) | {lat} | "
        f"{speedup_over_macs(row, batches[-1]):.2f}"
    )


def table(rows: list[dict], dense_acc: float, batches: list[int]) -> list[str]:
    lines = [
        f"| method | acc before FT | final acc | Δ vs dense | {cost_header(batches)} |",
        "|---|---|---|---|---|---|" + "---|" * (len(batches) + 1),
    ]
    for r in rows:
        acc = r["accuracy"]
        lines.append(
            f"| {r['method']} | {acc['masked_before_finetune']:.2f} | {acc['final']:.2f} | "
            f"{acc['final'] - dense_acc:+.2f} | {cost_cells(r, batches)} |"
        )
    return lines


def replicate(overrides: list[str], methods, settings, work: Path) -> dict:
    """One run of the whole comparison: the dense model (trained and cached, or the cache), the
    dense model fine-tuned unpruned, and every setting's entries, ours and Torch-Pruning's."""
    cfg = compose_config(work / "dense", overrides)
    target = ClassificationTarget(cfg, work / "dense")
    plan = pruning_plan(cfg)
    target.prepare(plan)
    datamodule = target.datamodule
    dense, _, origin = target.pretrained(plan)
    dense_acc = evaluate(dense, datamodule.val_dataloader())
    print(f"dense accuracy {dense_acc:.2f} % ({origin})")
    example = datamodule.example_input(2)
    results: dict[str, dict] = {
        "dense, fine-tuned": {
            "rows": [dense_finetuned_entry(cfg, dense, datamodule, work / "dense-finetuned")]
        }
    }
    for setting in settings:
        granularity, sparsity, *budget = SETTINGS[setting]
        rows = [
            ours_entry(overrides, granularity, sparsity, m, work, "accuracy", *budget)
            for m in methods
        ]
        target_macs = rows[0]["final"]["macs"]
        ratio, _ = _tp_ratio(dense, example, target_macs)
        rows += [
            torch_pruning_entry(cfg, dense, datamodule, ratio, kind, work / f"tp-{setting}-{kind}")
            for kind in ("taylor", "magnitude")
        ]
        if granularity == "neurons" and not budget:  # the same units as ours
            rows += [
                torch_pruning_entry(
                    cfg, dense, datamodule, sparsity, kind, work / f"tp-neurons-{kind}", True
                )
                for kind in ("taylor", "magnitude")
            ]
        results[setting] = {"granularity": SETTINGS[setting], "tp_ratio": ratio, "rows": rows}
    return {"cfg": cfg, "dense_accuracy": dense_acc, "pretrained": origin, "results": results}


def header(cfg, dense_accuracy: str) -> list[str]:
    net = cfg.net
    return [
        "# Structured pruning of a ViT: heads, MLP neurons and the hidden width, ours and "
        "Torch-Pruning",
        "",
        f"`masking.models.vit_small` ({net.num_layers} blocks of {net.num_heads} heads, width "
        f"{net.hidden_dim}, {net.mlp_dim} MLP neurons, {net.patch_size}-px patches) on the "
        f"digits at {net.image_size} px; dense accuracy {dense_accuracy} on the 359 validation "
        f"digits. Fine-tuning budget {cfg.task.finetune_epochs} epochs for every entry (AdamW, "
        f"lr {cfg.task.optimizer.lr}, cosine). Latency: PyTorch on CPU, dense measured in the "
        "same run, interleaved.",
        "",
        "Settings. Ours: `python run.py experiment=prune_vit pruning=<method> "
        "pruning.granularity=<heads|head_dims|neurons|hidden, or several joined by +> "
        "pruning.sparsity=<s>` (the same fraction of each; per-layer "
        f"allocation, kept neurons and hidden channels multiples of {cfg.pruning.round_to} "
        "(`pruning.round_to`), cubic schedule over the first half of the fine-tuning, "
        "compacted; the "
        "MAC-budget settings add `pruning.budget=macs`, so that `s` is the share of the MACs to "
        "remove). "
        "Torch-Pruning "
        f"{_tp_version()}: MetaPruner, one ratio for every width including the residual "
        "stream (it cannot remove whole heads of `nn.MultiheadAttention`), `round_to` the head "
        "count, the classifier ignored, one shot; the ratio is chosen so its MACs match ours; "
        f"`GroupTaylorImportance` from {TAYLOR_BATCHES} training batches, or "
        "`GroupMagnitudeImportance(p=2)`. Where ours removes MLP neurons alone, two more "
        "Torch-Pruning rows remove the same fraction of MLP neurons and nothing else "
        "(`pruning_ratio_dict` on the MLPs' first layers, every other width 0).",
    ]


def seeds_table(runs: dict[int, dict], setting: str, batches: list[int]) -> list[str]:
    """Final accuracy per seed, its mean and spread, and the mean batch speedup over the MAC
    reduction, per method of one setting."""
    seeds = list(runs)
    lines = [
        "| method | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean ± sd | MACs (seed "
        + f"{seeds[0]}) | b{batches[-1]} speedup / MAC reduction, mean |",
        "|---|" + "---:|" * (len(seeds) + 3),
    ]
    first = runs[seeds[0]]["results"][setting]["rows"]
    for i, row in enumerate(first):
        entries = [runs[s]["results"][setting]["rows"][i] for s in seeds]
        finals = torch.tensor([e["accuracy"]["final"] for e in entries], dtype=torch.float64)
        spread = float(finals.std()) if len(finals) > 1 else 0.0
        ratios = [speedup_over_macs(e, batches[-1]) for e in entries]
        method = re.sub(r",? width ratio [0-9.]+", "", row["method"])  # Torch-Pruning's, per seed
        lines.append(
            f"| {method} | "
            + " | ".join(f"{float(v):.2f}" for v in finals)
            + f" | {float(finals.mean()):.2f} ± {spread:.2f} | "
            f"{row['final']['macs'] / 1e6:,.2f}M ({row['dense']['macs'] / row['final']['macs']:.2f}× "
            f"fewer) | {sum(ratios) / len(ratios):.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None)
    parser.add_argument("--quick", action="store_true", help="1 fine-tuning epoch, 2 estimators")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="repeat the whole comparison per seed (seed= and data.seed=: the split, the dense "
        "model, the fine-tuning), one table of final accuracies per setting",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every entry")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prune_vit_"))
    overrides = ["experiment=prune_vit", "logger=none", *args.overrides]
    methods, settings = METHODS, args.settings or list(SETTINGS)
    if args.quick:
        overrides.append("task.finetune_epochs=1")
        methods, settings = ("magnitude", "taylor"), (args.settings or list(QUICK))[-2:]
    if args.seeds:
        if len(set(args.seeds)) != len(args.seeds):
            parser.error(f"--seeds must be distinct, got {args.seeds}")
        runs = {
            s: replicate(
                [*overrides, f"seed={s}", f"data.seed={s}"], methods, settings, work / f"seed{s}"
            )
            for s in args.seeds
        }
        cfg = next(iter(runs.values()))["cfg"]
        batches = list(cfg.task.latency.batches)
        dense = ", ".join(f"{r['dense_accuracy']:.2f} %" for r in runs.values())
        lines = header(cfg, f"{dense} (seeds {', '.join(map(str, runs))})")
        lines += [
            "",
            f"Each seed is a whole run: its own split of the digits (`data.seed`), dense model "
            f"and fine-tuning (`seed`). Final accuracy (%) per seed; sd is the sample standard "
            f"deviation over the {len(runs)} seeds.",
        ]
        for setting in ["dense, fine-tuned", *settings]:
            lines += ["", f"## {setting}", "", *seeds_table(runs, setting, batches)]
        payload = {
            **provenance(torch.device("cpu")),
            "seeds": list(runs),
            "finetune_epochs": cfg.task.finetune_epochs,
            "overrides": overrides,
            "runs": {str(s): {k: v for k, v in r.items() if k != "cfg"} for s, r in runs.items()},
        }
    else:
        one = replicate(overrides, methods, settings, work)
        cfg, dense_acc = one["cfg"], one["dense_accuracy"]
        batches = list(cfg.task.latency.batches)
        reference = one["results"]["dense, fine-tuned"]["rows"][0]
        lines = header(cfg, f"{dense_acc:.2f} %")
        lines += [
            "",
            f"The dense ViT fine-tuned for the same budget, unpruned, reaches "
            f"{reference['accuracy']['final']:.2f} %: the budget alone adds "
            f"{reference['accuracy']['final'] - dense_acc:+.2f} points, so an entry above the "
            "dense accuracy is not a pruned model better than its dense one.",
        ]
        for setting in settings:
            rows = one["results"][setting]["rows"]
            lines += ["", f"## {setting}", "", *table(rows, dense_acc, batches)]
        payload = {
            **provenance(torch.device("cpu")),
            "dense_accuracy": dense_acc,
            "pretrained": one["pretrained"],
            "finetune_epochs": cfg.task.finetune_epochs,
            "overrides": overrides,
            "results": one["results"],
        }
    lines += [
        "",
        f"{payload['device']['name']}, torch {payload['versions']['torch']}, commit {payload['commit']}",
    ]
    write_report(args.out, payload, "\n".join(lines) + "\n", suite="prune_vit")


def _tp_version() -> str:
    import torch_pruning as tp

    return tp.__version__


if __name__ == "__main__":
    main()
