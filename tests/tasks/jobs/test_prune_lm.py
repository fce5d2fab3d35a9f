"""``task=prune_lm``: the embedded language model trained once and cached, one-shot pruning through
the shared pipeline (perplexity, report, export that reloads bit-exactly), MaskLLM ending in an
exact n:m mask, the sweep's table and plot, and bad input as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from masking.pruning import load_example_inputs, load_pruned
from tasks.runtime.checkpoints import trusted
from tests.helpers.jobs import prune_lm_fast, read_json
from tests.hydra_config import error_line, finished_run, run_cli

pytest.importorskip("transformers")


def test_one_shot_wanda_prunes_the_embedded_model_and_exports_it(tmp_path):
    metrics = finished_run(tmp_path / "run", *prune_lm_fast(tmp_path), "pruning=wanda")
    assert metrics["final/sparsity"] == pytest.approx(0.5)
    assert metrics["dense/ppl"] > 1 and metrics["final/ppl"] > 1
    report = read_json(tmp_path / "run" / "prune_report.json")
    assert report["method"] == "wanda" and report["finetune_steps"] == 0
    assert report["perplexity"]["final"] == pytest.approx(metrics["final/ppl"])
    assert len(report["oneshot"]["block_seconds"]) == 2  # two decoder blocks, in order
    assert len(report["layers"]) == 14  # q, k, v, o, gate, up, down per block; lm_head kept
    assert report["prune_seconds"] > 0
    table = (tmp_path / "run" / "prune_report.md").read_text()
    assert "perplexity" in table
    assert "before fine-tuning" not in table  # one shot: the masked model is the final one
    # the export rebuilds the pruned model and computes what it computed
    export = tmp_path / "run" / "export"
    net = load_pruned(export, builders=trusted(None))
    (ids,) = load_example_inputs(export)
    weights = torch.load(export / "model.pt", weights_only=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    q = net.model.layers[0].self_attn.q_proj.weight
    assert torch.all((q == 0).sum(1) == q.shape[1] // 2)  # Wanda compares within each row
    assert net(ids).logits.shape == (*ids.shape, 384)


def test_the_dense_model_is_trained_once_and_every_method_starts_from_it(tmp_path):
    first = finished_run(tmp_path / "a", *prune_lm_fast(tmp_path), "pruning=magnitude")
    result = run_cli(
        *prune_lm_fast(tmp_path),
        "pruning=sparsegpt",
        "pruning.granularity=2:4",
        f"hydra.run.dir={tmp_path / 'b'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = read_json(tmp_path / "a" / "prune_report.json")["pretrained"]
    assert trained.startswith("trained here") and trained.endswith(".pt")
    cached = trained.rsplit("cached at ", 1)[1]
    assert read_json(tmp_path / "b" / "prune_report.json")["pretrained"] == cached
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert second["dense/ppl"] == first["dense/ppl"]
    assert second["final/sparsity"] == pytest.approx(0.5)


def test_maskllm_learns_an_exact_n_m_mask_from_its_prior(tmp_path):
    metrics = finished_run(
        tmp_path / "run",
        *prune_lm_fast(tmp_path),
        "pruning=maskllm",
        "pruning.granularity=4:8",
        "task.finetune_steps=6",
    )
    assert metrics["final/sparsity"] == pytest.approx(0.5)
    report = read_json(tmp_path / "run" / "prune_report.json")
    assert report["prune_seconds"] > 0 and report["finetune_steps"] == 6
    assert "| masked, before fine-tuning |" in (tmp_path / "run" / "prune_report.md").read_text()
    net = load_pruned(tmp_path / "run" / "export", builders=trusted(None))
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            groups = (module.weight != 0).reshape(module.weight.shape[0], -1, 8)
            assert torch.all(groups.sum(-1) <= 4), name
    frozen = load_pruned(tmp_path / "run" / "export", builders=trusted(None))
    # the weights are frozen: every kept weight is the dense model's own
    dense = torch.load(next((tmp_path / "cache").glob("dense-*.pt")), weights_only=True)
    kept = frozen.model.layers[1].mlp.down_proj.weight
    original = dense["model.layers.1.mlp.down_proj.weight"]
    assert torch.equal(kept[kept != 0], original[kept != 0])


@pytest.mark.slow
def test_a_sweep_over_methods_and_patterns_writes_the_table_and_the_plot(tmp_path):
    result = run_cli(
        "-m",
        *prune_lm_fast(tmp_path),
        "pruning=magnitude,wanda,sparsegpt",
        "pruning.granularity=weight,2:4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=1800,  # six jobs; generous for a slow, shared CI machine
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert "final/ppl" in table and "6 jobs, 6 completed" in table
    assert (tmp_path / "sweep" / "summary_pareto.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pruning.sparsity=1.0"], r"^error: pruning.sparsity must be .*\[0, 1\)"),
        (["pruning.granularity=4:4"], r"^error: pruning.granularity must be .*1 <= n < m"),
        (
            ["pruning.granularity=6:12"],
            r"^error: granularity 6:12: model.layers.0.self_attn.q_proj has 32 input features, "
            r"not a multiple of m=12 ",
        ),
        (["pruning=movement"], r"^error: pruning=movement learns its masks while fine-tuning"),
        (
            ["pruning=wanda", "task.finetune_steps=4"],
            r"^error: pruning=wanda prunes once without fine-tuning",
        ),
        (
            ["task.calibration.seq_len=2048"],
            r"^error: task.calibration.seq_len=2048 is longer than the model's context "
            r"\(max_position_embeddings=1024\)",
        ),
        (["data.seq_len=100000"], r"^error: data: the held-out text is \d+ tokens, shorter"),
    ],
)
def test_bad_settings_are_one_line(tmp_path, overrides, message):
    result = run_cli(*prune_lm_fast(tmp_path), *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert re.search(message, error_line(result)), error_line(result)


def test_a_calibration_text_shorter_than_one_sequence_is_one_line(tmp_path):
    import string

    text = tmp_path / "string.py"  # the first lines of a real source file: a few hundred tokens
    lines = Path(string.__file__).read_text().splitlines(keepends=True)
    text.write_text("".join(lines[:40]))
    result = run_cli(
        *prune_lm_fast(tmp_path),
        f"data.path={text}",
        "data.batch_size=1",
        "task.calibration.seq_len=1024",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert re.match(
        r"error: calibration: the training text \(\d+ tokens\) is shorter than one sequence "
        r"of 1024",
        error_line(result),
    ), error_line(result)


def test_a_model_folder_without_weights_or_with_another_tokenizer_is_one_line(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    result = run_cli(
        *prune_lm_fast(tmp_path),
        "task.pretrained=nobody/no-such-model",
        f"hydra.run.dir={tmp_path / 'c'}",
    )
    assert "is neither a folder nor a model id in the local Hugging Face cache" in error_line(
        result
    )

    empty = tmp_path / "empty"
    empty.mkdir()
    LlamaConfig(vocab_size=64).save_pretrained(empty)  # config.json, no weights
    result = run_cli(
        *prune_lm_fast(tmp_path), f"task.pretrained={empty}", f"hydra.run.dir={tmp_path / 'a'}"
    )
    assert (
        "error: task.pretrained: no causal language model with safetensors weights"
        in error_line(result)
    )

    small = tmp_path / "small"
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    LlamaForCausalLM(config).save_pretrained(small)
    (tmp_path / "text").mkdir(exist_ok=True)
    from datamodules.text import train_tokenizer

    train_tokenizer(["def f(x):\n    return x\n" * 50], 300).save(str(small / "tokenizer.json"))
    result = run_cli(
        *prune_lm_fast(tmp_path), f"task.pretrained={small}", f"hydra.run.dir={tmp_path / 'b'}"
    )
    assert re.match(
        r"error: task.pretrained: the tokenizer has \d+ tokens but the model embeds only 64",
        error_line(result),
    )


def _local_gpt2(tmp_path: Path) -> Path:
    """A small random GPT-2 (fused Conv1D projections) saved as a Hugging Face folder with its own
    tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from datamodules.text import train_tokenizer

    folder = tmp_path / "gpt2-small-local"
    tokenizer = train_tokenizer([Path(json.__file__).read_text()], 320)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64
    )
    GPT2LMHeadModel(config).save_pretrained(folder)  # config.json + model.safetensors
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_a_local_hugging_face_folder_is_pruned_with_its_own_tokenizer(tmp_path):
    folder = _local_gpt2(tmp_path)
    metrics = finished_run(
        tmp_path / "run", *prune_lm_fast(tmp_path), f"task.pretrained={folder}", "pruning=sparsegpt"
    )
    assert metrics["final/sparsity"] == pytest.approx(0.5)
    report = read_json(tmp_path / "run" / "prune_report.json")
    assert report["pretrained"] == str(folder)
    assert len(report["layers"]) == 8  # c_attn, c_proj, c_fc, mlp.c_proj per block (Conv1D)
    net = load_pruned(tmp_path / "run" / "export", builders=trusted(None))
    assert type(net).__name__ == "GPT2LMHeadModel"


def test_maskllm_learns_an_exact_2_4_mask_of_gpt2s_conv1d_projections(tmp_path):
    from transformers import GPT2LMHeadModel

    folder = _local_gpt2(tmp_path)
    metrics = finished_run(
        tmp_path / "run",
        *prune_lm_fast(tmp_path),
        f"task.pretrained={folder}",
        "pruning=maskllm",
        "task.finetune_steps=4",
    )
    assert metrics["final/sparsity"] == pytest.approx(0.5)
    report = read_json(tmp_path / "run" / "prune_report.json")
    assert report["method"] == "maskllm" and report["finetune_steps"] == 4
    layers = [row["layer"] for row in report["layers"]]
    assert len(layers) == 8  # c_attn, c_proj, c_fc, mlp.c_proj per block; lm_head kept
    export = tmp_path / "run" / "export"
    net = load_pruned(export, builders=trusted(None))
    weights = torch.load(export / "model.pt", weights_only=True)
    assert net.state_dict().keys() == weights.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    dense = GPT2LMHeadModel.from_pretrained(folder).state_dict()
    for name in layers:
        stored = net.get_submodule(name).weight  # Conv1D: (in, out), groups along dim 0
        assert type(net.get_submodule(name)).__name__ == "Conv1D"
        groups = (stored.t() != 0).reshape(stored.shape[1], -1, 4)
        assert torch.all(groups.sum(-1) == 2), name
        kept = stored != 0
        assert torch.equal(stored[kept], dense[f"{name}.weight"][kept]), name  # weights frozen


def test_heads_and_neurons_of_the_embedded_llama_are_removed_and_the_export_reloads(tmp_path):
    overrides = ["pruning=taylor", "pruning.granularity=heads+neurons", "task.finetune_steps=4"]
    metrics = finished_run(tmp_path / "run", *prune_lm_fast(tmp_path), *overrides)
    report = read_json(tmp_path / "run" / "prune_report.json")
    assert (report["granularity"], report["finalize"]) == ("heads+neurons", "compact")
    # two key/value groups of two query heads per block: one group goes; 64 neurons: 32 go
    assert [(r["kind"], r["units"], r["kept_units"]) for r in report["layers"]] == [
        ("heads", 2, 1),
        ("neurons", 64, 32),
    ] * 2
    assert metrics["final/sparsity"] == 0.5 and report["mac_reduction"] > 1
    export = tmp_path / "run" / "export"
    net = load_pruned(export, builders=trusted(None))
    attention = net.model.layers[0].self_attn
    assert attention.q_proj.out_features == 2 * 8 and attention.k_proj.out_features == 8
    assert net.model.layers[1].mlp.down_proj.in_features == 32
    assert sum(p.numel() for p in net.parameters()) == report["final"]["params"]
    (ids,) = load_example_inputs(export)
    with torch.no_grad():
        logits = net(ids).logits
    assert logits.shape == (*ids.shape, 384) and torch.isfinite(logits).all()


def test_the_embedded_llamas_hidden_width_narrows_and_the_export_reloads(tmp_path):
    overrides = ["pruning=magnitude", "pruning.granularity=hidden", "pruning.sparsity=0.25"]
    finished_run(tmp_path / "run", *prune_lm_fast(tmp_path), *overrides, "task.finetune_steps=4")
    report = read_json(tmp_path / "run" / "prune_report.json")
    assert report["finalize"] == "compact"
    assert [(r["kind"], r["kept_units"]) for r in report["layers"]] == [
        ("hidden", report["layers"][0]["units"] * 3 // 4)
    ]
    kept = report["layers"][0]["kept_units"]
    net = load_pruned(tmp_path / "run" / "export", builders=trusted(None))
    assert net.config.hidden_size == kept == net.model.norm.weight.shape[0]
    assert net.lm_head.in_features == kept
    assert sum(p.numel() for p in net.parameters()) == report["final"]["params"]
    (ids,) = load_example_inputs(tmp_path / "run" / "export")
    with torch.no_grad():
        assert torch.isfinite(net(ids).logits).all()


def test_the_job_keeps_mlp_neurons_in_multiples_of_eight_by_default(tmp_path):
    # 64 neurons at 30 %: 45 kept unrounded, 48 at the job's pruning.round_to=8
    overrides = ["pruning=magnitude", "pruning.granularity=neurons", "pruning.sparsity=0.3"]
    finished_run(tmp_path / "run", *prune_lm_fast(tmp_path), *overrides, "task.finetune_steps=2")
    report = read_json(tmp_path / "run" / "prune_report.json")
    assert [(r["units"], r["kept_units"]) for r in report["layers"]] == [(64, 48)] * 2
    net = load_pruned(tmp_path / "run" / "export", builders=trusted(None))
    assert {layer.mlp.gate_proj.out_features for layer in net.model.layers} == {48}
