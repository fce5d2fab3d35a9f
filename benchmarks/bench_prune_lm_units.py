"""Structured pruning of the embedded language model: our key/value-group and neuron estimators
against Torch-Pruning's LLM recipe, on the same dense model with the same fine-tuning budget:
held-out perplexity, params, MACs and latency.

    python benchmarks/bench_prune_lm_units.py           # 6 settings x 4 estimators, Torch-Pruning
    python benchmarks/bench_prune_lm_units.py --quick   # 20 fine-tuning steps, 2 estimators, 2 settings

The dense model is ``task=prune_lm``'s embedded Llama (grouped-query attention, trained on the
Python standard library's source and cached on first use, exactly as the job does). Ours:
``python run.py task=prune_lm pruning=<method> pruning.granularity=heads|neurons|hidden`` (or several
joined by ``+``) ``task.finetune_steps=<steps>``, compacted; a head unit is one key/value group with
its query heads, a hidden unit one channel of the residual stream.
Torch-Pruning runs its ``examples/LLMs/prune_llm.py`` recipe: MetaPruner with the query, key and
value projections' head counts, ``prune_num_heads=True``, ``prune_head_dims=False`` (rotary
embeddings untouched), one ratio for the hidden size, the MLP and the heads,
``GroupMagnitudeImportance(p=2, group_reduction="mean")`` (the example's ``GroupNormImportance``,
renamed in 1.6), ``round_to=4``, the output head ignored, one shot, the model's attributes updated
afterwards; its ratio is chosen so that its MACs match ours, and it fine-tunes for the same steps
with the job's optimizer and schedule. Where ours removes key/value groups, MLP neurons or hidden
channels at a fraction, a second Torch-Pruning row removes exactly those units at the same
fraction (``pruning_ratio_dict`` for the attention's or the MLP's layers or the token embedding,
every other width 0): the same units, so the same MACs, ranked by its importance.

Torch-Pruning 1.6.0 does not finish building its dependency graph on grouped-query attention (the
embedded model's 8 query heads in 4 key/value groups: over 10 minutes in
``_fix_dependency_graph_non_recursive`` on a 2-block, 64-wide copy, where the same model without
grouping takes 0.3 s; its issue #527 reports the same loop on Qwen3), so on a grouped model its rows
are left out and say why. ``net.num_key_value_heads=8`` gives the embedded model one key/value head
per query head, which both tools can prune.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, provenance, write_report
from bench_prune_vit import cost_cells, cost_header, ours_entry

sys.path.insert(0, str(REPO))
from tasks.jobs.prune_lm import LanguageModelTarget
from tasks.modules.language import perplexity
from tasks.pruning import pruning_plan
from tasks.runtime.cost import count_macs, profile_with
from tasks.runtime.trainer import job_trainer, step_limits
from tests.hydra_config import compose_config

SETTINGS = {  # name -> (pruning.granularity, pruning.sparsity[, pruning.budget])
    "25 % of key/value groups": ("heads", 0.25),
    "50 % of key/value groups": ("heads", 0.5),
    "50 % of MLP neurons": ("neurons", 0.5),
    "50 % of key/value groups and of MLP neurons": ("heads+neurons", 0.5),
    "25 % of the hidden width": ("hidden", 0.25),
    "25 % of key/value groups, of MLP neurons and of the hidden width": (
        "heads+neurons+hidden",
        0.25,
    ),
    "a MAC budget: 20 % of the attention and MLP MACs, key/value groups and MLP neurons ranked "
    "together": ("heads+neurons", 0.2, "macs"),
    "a MAC budget over every width: 20 % of the MACs the units run through, key/value groups, "
    "MLP neurons and hidden channels ranked together": ("heads+neurons+hidden", 0.2, "macs"),
}
QUICK = (
    "50 % of key/value groups and of MLP neurons",
    "25 % of key/value groups, of MLP neurons and of the hidden width",
)
METHODS = ("magnitude", "taylor", "movement", "hard_concrete")


def _tp_prune(
    net: nn.Module, ids: torch.Tensor, ratio: float, units: str | None = None
) -> nn.Module:
    """Torch-Pruning's LLM recipe on a Hugging Face Llama, then the attributes its example updates.
    ``units``: None, its recipe (one ratio for the hidden size, the MLP and the heads); "heads",
    "neurons", "hidden" or several joined by "+", those units and nothing else (the ratio given
    through ``pruning_ratio_dict`` to the attention's or the MLP's layers, or to the token
    embedding, whose group is the residual stream's; every other width at 0). Building the pruner
    traces the network (eval mode): the mode is restored."""
    import torch_pruning as tp

    config = net.config
    heads, attention, mlps = {}, [], []
    for name, module in net.named_modules():
        if name.endswith("self_attn"):
            heads[module.q_proj] = config.num_attention_heads
            heads[module.k_proj] = config.num_key_value_heads
            heads[module.v_proj] = config.num_key_value_heads
            attention.append(module.q_proj)
        elif name.endswith("mlp") and hasattr(module, "gate_proj"):
            mlps.append(module.gate_proj)
    kinds = set() if units is None else set(units.split("+"))
    if not kinds <= {"heads", "neurons", "hidden"}:
        raise ValueError(f"units must be None or heads, neurons, hidden joined by +, got {units!r}")
    chosen = (attention if "heads" in kinds else []) + (mlps if "neurons" in kinds else [])
    if "hidden" in kinds:
        chosen.append(net.get_input_embeddings())
    training = net.training
    pruner = tp.pruner.MetaPruner(
        net,
        example_inputs={"input_ids": ids, "use_cache": False},
        output_transform=lambda output: output.logits,
        importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
        global_pruning=False,
        pruning_ratio=ratio if units is None else 0.0,
        pruning_ratio_dict={module: ratio for module in chosen} or None,
        ignored_layers=[net.lm_head],
        num_heads=heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio if units is None or "heads" in kinds else 0.0,
        round_to=4,
    )
    net.train(training)
    for group in pruner.step(interactive=True):
        group.prune()
    config.hidden_size = net.lm_head.in_features
    for name, module in net.named_modules():
        if name.endswith("self_attn"):
            query = module.q_proj.out_features // module.head_dim
            kv = module.k_proj.out_features // module.head_dim
            module.num_key_value_groups = query // kv
            config.num_attention_heads, config.num_key_value_heads = query, kv
        elif name.endswith("mlp") and hasattr(module, "gate_proj"):
            config.intermediate_size = module.gate_proj.out_features
    return net


def _tp_ratio(dense: nn.Module, ids: torch.Tensor, target_macs: int) -> tuple[float, int]:
    """The ratio (in steps of 0.02) whose pruned MACs come closest to ``target_macs``."""
    best = None
    for step in range(1, 40):
        ratio = step / 50
        net = _tp_prune(copy.deepcopy(dense), ids, ratio)
        macs = count_macs(net, ids[:1])
        if best is None or abs(macs - target_macs) < abs(best[1] - target_macs):
            best = (ratio, macs)
    return best


def _entry(cfg, name, dense, final, scores, datamodule, started) -> dict:
    profile = profile_with(cfg.task.latency, dense, final, datamodule.example_input)
    return {
        "method": name,
        "perplexity": scores,
        "dense": profile["dense"],
        "final": profile["final"],
        "wall_time_s": time.perf_counter() - started,
    }


def finetune(cfg, net: nn.Module, datamodule, root: Path) -> None:
    """The job's fine-tuning (``task.module``: its optimizer and schedule) without a pruner."""
    module = instantiate(cfg.task.module, net=net)
    trainer = job_trainer(cfg, root, **step_limits(int(cfg.task.finetune_steps)))
    trainer.fit(module, datamodule=datamodule)


def torch_pruning_entry(cfg, dense, datamodule, ratio, root, units=None) -> dict:
    started = time.perf_counter()
    net = _tp_prune(copy.deepcopy(dense), datamodule.example_input(1), ratio, units)
    val = datamodule.val_dataloader()
    before = perplexity(net, val)
    finetune(cfg, net, datamodule, root)
    scores = {"masked_before_finetune": before, "final": perplexity(net, val)}
    who = "Torch-Pruning" if units is None else f"Torch-Pruning, {units} only"
    name = f"{who} (group L2, ratio {ratio:.2f})"
    entry = _entry(cfg, name, dense, net, scores, datamodule, started)
    entry["hidden_size"] = net.config.hidden_size
    return entry


def dense_finetuned_entry(cfg, dense, datamodule, root) -> dict:
    started = time.perf_counter()
    net = copy.deepcopy(dense)
    val = datamodule.val_dataloader()
    before = perplexity(net, val)
    finetune(cfg, net, datamodule, root)
    scores = {"masked_before_finetune": before, "final": perplexity(net, val)}
    return _entry(cfg, "dense, fine-tuned (not pruned)", dense, net, scores, datamodule, started)


def table(rows: list[dict], dense_ppl: float, batches: list[int]) -> list[str]:
    lines = [
        f"| method | ppl before FT | final ppl | × dense | {cost_header(batches)} |",
        "|---|---|---|---|---|---|" + "---|" * (len(batches) + 1),
    ]
    for r in rows:
        ppl = r["perplexity"]
        lines.append(
            f"| {r['method']} | {ppl['masked_before_finetune']:.3f} | {ppl['final']:.3f} | "
            f"{ppl['final'] / dense_ppl:.3f} | {cost_cells(r, batches)} |"
        )
    return lines


def _schedule(pruning) -> str:
    """The pruning schedule in words: when the units go."""
    start, end = pruning.ramp
    if pruning.schedule == "one_shot":
        return "one shot" + (" at the first step" if start == 0 else f" at {start:g} of the steps")
    part = "the first half" if (start, end) == (0, 0.5) else f"{start:g} to {end:g} of the steps"
    return f"{pruning.schedule} schedule over {part}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None)
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps of every entry")
    parser.add_argument("--quick", action="store_true", help="20 steps, 2 estimators, 2 settings")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every entry")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prune_lm_units_"))
    methods, settings, steps = METHODS, args.settings or list(SETTINGS), args.steps
    if args.quick:
        methods, settings, steps = ("magnitude", "taylor"), (args.settings or list(QUICK))[-2:], 20
    overrides = [
        "task=prune_lm",
        "logger=none",
        "pruning=magnitude",
        f"task.finetune_steps={steps}",
        *args.overrides,
    ]
    cfg = compose_config(work / "dense", overrides)
    target = LanguageModelTarget(cfg, work / "dense")
    plan = pruning_plan(cfg)
    target.prepare(plan)
    datamodule = target.datamodule
    dense, _, origin = target.pretrained(plan)
    val = datamodule.val_dataloader()
    dense_ppl = perplexity(dense, val)
    print(f"dense perplexity {dense_ppl:.3f} ({origin})")
    batches = list(cfg.task.latency.batches)
    ids = datamodule.example_input(1)
    net = cfg.net
    reference = dense_finetuned_entry(cfg, dense, datamodule, work / "dense-finetuned")
    results: dict[str, dict] = {"dense, fine-tuned": {"rows": [reference]}}
    lines = [
        "# Structured pruning of the embedded Llama: key/value groups, MLP neurons and the hidden "
        "width, ours and Torch-Pruning",
        "",
        f"The embedded Llama of `task=prune_lm` ({net.num_hidden_layers} blocks, width "
        f"{net.hidden_size}, {net.num_attention_heads} query heads in {net.num_key_value_heads} "
        f"key/value groups, {net.intermediate_size} MLP neurons, "
        f"{sum(p.numel() for p in dense.parameters()):,} parameters); dense held-out perplexity "
        f"{dense_ppl:.3f}, {reference['perplexity']['final']:.3f} after the same {steps} "
        f"fine-tuning steps unpruned. Every entry fine-tunes for {steps} steps (AdamW, lr "
        f"{cfg.task.optimizer.lr}, cosine; sequences of {cfg.data.seq_len} tokens, batches of "
        f"{cfg.data.batch_size}). Latency: PyTorch on CPU at sequence {cfg.data.seq_len}, dense "
        "measured in the same run, interleaved; MACs per sequence.",
        "",
        "Settings. Ours: `python run.py task=prune_lm pruning=<method> "
        "pruning.granularity=<heads|neurons|hidden, or several joined by +> pruning.sparsity=<s> "
        f"task.finetune_steps={' '.join([str(steps), *args.overrides])}` (per-layer allocation, "
        f"{_schedule(cfg.pruning)}, "
        "compacted; the MAC-budget settings add `pruning.budget=macs`, so that `s` is the share "
        f"of the attention and MLP MACs to remove). Torch-Pruning {_tp_version()}: its "
        "`prune_llm.py` recipe (MetaPruner, "
        "`prune_num_heads=True`, `prune_head_dims=False`, one ratio for the hidden size, MLP and "
        "heads, `GroupMagnitudeImportance(p=2, group_reduction='mean')` (the example's "
        "`GroupNormImportance`), `round_to=4`, `lm_head` "
        "ignored, one shot), its ratio chosen so its MACs match ours, then the same fine-tuning. "
        "Where ours removes heads, MLP neurons or hidden channels at a fraction, a second "
        "Torch-Pruning row removes the same units at the same fraction and nothing else: "
        "`pruning_ratio_dict` gives the attention's (heads) and the MLP's (neurons) layers or the "
        "token embedding (the residual stream's group: hidden) the fraction, every other width 0.",
    ]
    grouped = net.num_key_value_heads != net.num_attention_heads
    if grouped:
        lines += [
            "",
            "No Torch-Pruning rows: on grouped-query attention its dependency graph does not "
            "finish building (see the benchmark's docstring; its issue #527).",
        ]
    for setting in settings:
        granularity, sparsity, *budget = SETTINGS[setting]
        rows = [
            ours_entry(overrides, granularity, sparsity, m, work, "perplexity", *budget)
            for m in methods
        ]
        ratio = None
        if not grouped:
            ratio, _ = _tp_ratio(dense, ids, rows[0]["final"]["macs"])
            rows.append(torch_pruning_entry(cfg, dense, datamodule, ratio, work / f"tp-{ratio}"))
            if not budget:  # the same units as ours
                root = work / f"tp-{granularity}-{sparsity}"
                rows.append(
                    torch_pruning_entry(cfg, dense, datamodule, sparsity, root, granularity)
                )
        results[setting] = {"granularity": SETTINGS[setting], "tp_ratio": ratio, "rows": rows}
        lines += ["", f"## {setting}", "", *table(rows, dense_ppl, batches)]
    payload = {
        **provenance(torch.device("cpu")),
        "dense_perplexity": dense_ppl,
        "pretrained": origin,
        "finetune_steps": steps,
        "overrides": overrides,
        "results": results,
    }
    lines += [
        "",
        f"{payload['device']['name']}, torch {payload['versions']['torch']}, commit "
        f"{payload['commit']}",
    ]
    write_report(args.out, payload, "\n".join(lines) + "\n", suite="prune_lm_units")


def _tp_version() -> str:
    import torch_pruning as tp

    return tp.__version__


if __name__ == "__main__":
    main()
