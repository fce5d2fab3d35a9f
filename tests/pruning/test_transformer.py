"""Structured transformer pruning: head and neuron masks, and the compacted model they promise.

Every supported family (torchvision ViT and ``nn.MultiheadAttention``, Llama with grouped-query
attention, GPT-2's fused ``Conv1D``, BERT) is built with random weights: structure, not accuracy, is
under test. The properties users depend on: the masked model is the compacted one (fp32, 1e-5
relative), the compacted model counts the parameters the report predicted, it is an ordinary model
(its own attributes and config describe it), and an export reloads bit-exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from masking.pruning import export_pruned, load_pruned
from masking.pruning.graph import CompactionError
from masking.pruning.transformer import SUPPORTED_ATTENTION, StructuredPruner, find_structures
from tests.helpers.pruning import IMAGES, randomise, small_vit, train_masks

transformers = pytest.importorskip("transformers")

TOKENS = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))


def vit_b_16() -> nn.Module:
    return torchvision.models.vit_b_16(weights=None, image_size=32)


def llama(**extra) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        **extra,
    )
    return transformers.LlamaForCausalLM(config)


def gpt2() -> nn.Module:
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_positions=32)
    )


def bert() -> nn.Module:
    return transformers.BertModel(
        transformers.BertConfig(
            vocab_size=100,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
        )
    )


MODELS = {
    "small_vit": (small_vit, (IMAGES,)),
    "vit_b_16": (vit_b_16, (IMAGES,)),
    "llama_gqa": (llama, {"input_ids": TOKENS, "use_cache": False}),
    "gpt2": (gpt2, {"input_ids": TOKENS, "use_cache": False}),
    "bert": (bert, {"input_ids": TOKENS}),
}


def forward(model: nn.Module, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(
    ("heads", "neurons", "allocation"), [(0.25, 0.5, "layer"), (0.5, 0.5, "global")]
)
def test_masked_equals_compacted_and_counts_what_the_report_predicts(
    name, heads, neurons, allocation
):
    torch.manual_seed(0)
    build, inputs = MODELS[name]
    model = randomise(build())
    dense = forward(model, inputs)
    pruner = StructuredPruner(model, heads=heads, neurons=neurons, allocation=allocation)
    pruner.step(0)
    masked = forward(model, inputs)
    assert not torch.allclose(masked, dense, rtol=1e-3, atol=1e-3)  # the masks do remove something
    report = pruner.report()
    assert report["units"]["heads"]["kept"] < report["units"]["heads"]["total"]
    assert report["units"]["neurons"]["kept"] < report["units"]["neurons"]["total"]
    slim = pruner.compact(inputs)
    torch.testing.assert_close(forward(slim, inputs), masked, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]
    assert report["parameters_after"] < report["parameters_before"]
    assert report["structure_macs_after"] < report["structure_macs_before"]
    assert not any(hasattr(m, "parametrizations") for m in slim.modules())  # an ordinary model


def test_layer_allocation_removes_the_same_fraction_of_every_layer():
    model = randomise(small_vit())
    pruner = StructuredPruner(model, heads=0.5, neurons=0.25)
    pruner.step(0)
    rows = pruner.report()["structures"]
    assert [(r["kind"], r["units"], r["kept"]) for r in rows] == [
        ("heads", 4, 2),
        ("neurons", 64, 48),
        ("heads", 4, 2),
        ("neurons", 64, 48),
    ]
    slim = pruner.compact((IMAGES,))
    attention = slim.encoder.layers[0].self_attention
    assert attention.num_heads == 2 and attention.head_dim == 8
    assert attention.in_proj_weight.shape == (48, 32) and attention.out_proj.weight.shape == (
        32,
        16,
    )
    assert slim.encoder.layers[1].mlp[0].out_features == 48


def test_grouped_query_heads_go_with_their_key_value_group():
    model = randomise(llama())
    pruner = StructuredPruner(model, heads=0.5, neurons=0.5)
    # one unit per key/value group: 4 per layer, each covering 2 query heads
    heads = [s for s in pruner.structures if s.kind == "heads"]
    assert [(s.size, s.heads_per_unit, s.head_dim) for s in heads] == [(4, 2, 8), (4, 2, 8)]
    pruner.step(0)
    slim = pruner.compact({"input_ids": TOKENS, "use_cache": False})
    attention = slim.model.layers[0].self_attn
    assert attention.q_proj.out_features == 2 * 2 * 8 and attention.k_proj.out_features == 2 * 8
    assert attention.o_proj.in_features == 32 and attention.num_key_value_groups == 2
    config = slim.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 8)
    assert config.intermediate_size == 48
    # the config alone rebuilds the compacted model: save_pretrained / from_pretrained work
    rebuilt = transformers.LlamaForCausalLM(config).eval()
    rebuilt.load_state_dict(slim.state_dict())
    longer = {"input_ids": torch.randint(0, 100, (1, 20)), "use_cache": False}  # rotary beyond 12
    torch.testing.assert_close(forward(rebuilt, longer), forward(slim, longer))


def test_gpt2_and_bert_attributes_describe_the_compacted_modules():
    model = randomise(gpt2())
    pruner = StructuredPruner(model, heads=0.5)
    pruner.step(0)
    slim = pruner.compact({"input_ids": TOKENS, "use_cache": False})
    attention = slim.transformer.h[0].attn
    assert attention.num_heads == 2 and attention.split_size == 32
    assert attention.c_attn.weight.shape == (64, 96) and attention.c_attn.nf == 96
    assert attention.c_proj.weight.shape == (32, 64) and attention.c_proj.nx == 32

    model = randomise(bert())
    pruner = StructuredPruner(model, heads=0.25, neurons=0.5)
    pruner.step(0)
    slim = pruner.compact({"input_ids": TOKENS})
    attention = slim.encoder.layer[1].attention.self
    assert attention.num_attention_heads == 3 and attention.all_head_size == 48
    assert slim.encoder.layer[1].intermediate.dense.out_features == 48


def test_global_allocation_keeps_a_head_in_every_attention():
    # global allocation ranks heads by their norm relative to their layer's mean: the first
    # block's heads are all alike (relative score 1), the second block has one strong head and
    # three empty ones (4, 0, 0, 0); removing 7 of 8 would empty the first block
    model = randomise(small_vit())
    first = model.encoder.layers[0].self_attention
    second = model.encoder.layers[1].self_attention
    with torch.no_grad():
        first.in_proj_weight.fill_(0.01)
        first.out_proj.weight.fill_(0.01)
        for rows in (slice(8, 32), slice(40, 64), slice(72, 96)):
            second.in_proj_weight[rows] = 0
        second.out_proj.weight[:, 8:] = 0
    pruner = StructuredPruner(model, heads=0.875, allocation="global")
    pruner.step(0)
    assert [k.tolist() for k in pruner.keeps()][1] == [True, False, False, False]
    assert [int(k.sum()) for k in pruner.keeps()] == [1, 1]
    slim = pruner.compact((IMAGES,))
    assert [layer.self_attention.num_heads for layer in slim.encoder.layers] == [1, 1]


@pytest.mark.parametrize("method", ["taylor", "movement", "hard_concrete"])
def test_learned_estimators_train_and_compact(method):
    torch.manual_seed(0)
    model = randomise(small_vit()).train()
    pruner = StructuredPruner(
        model,
        method=method,
        heads=0.5,
        neurons=0.5,
        penalty=0.1 if method == "hard_concrete" else 0.0,
    )
    start = [s.importance().clone() for s in pruner.sources]
    train_masks(model, pruner, 4)
    assert any(not torch.equal(a, s.importance()) for a, s in zip(start, pruner.sources))
    if method == "hard_concrete":
        assert float(pruner.penalty()) > 0
    model.eval()
    masked = forward(model, (IMAGES,))
    slim = pruner.compact((IMAGES,))
    torch.testing.assert_close(forward(slim, (IMAGES,)), masked, rtol=1e-5, atol=1e-5)


def test_taylor_ranks_heads_by_their_effect_on_the_loss():
    # a head whose output projection is zero cannot change the loss: Taylor removes it first even
    # though its q/k/v weights are the largest (magnitude would keep it)
    torch.manual_seed(0)
    model = randomise(small_vit()).train()
    attention = model.encoder.layers[0].self_attention
    with torch.no_grad():
        attention.in_proj_weight[8:16].mul_(50)  # head 1's query rows
        attention.out_proj.weight[:, 8:16].zero_()
    pruner = StructuredPruner(
        model, method="taylor", heads=0.25, exclude=["encoder.layers.encoder_layer_1*"]
    )
    nn.functional.cross_entropy(model(IMAGES), torch.tensor([1, 7])).backward()
    pruner.set_progress(1.0)
    assert pruner.keeps()[0].tolist() == [True, False, True, True]
    magnitude = StructuredPruner(
        randomise(copy.deepcopy(model)), heads=0.25, exclude=["encoder.layers.encoder_layer_1*"]
    )
    magnitude.set_progress(1.0)
    assert magnitude.keeps()[0][1]


def test_exclude_leaves_modules_dense():
    model = randomise(small_vit())
    pruner = StructuredPruner(
        model, heads=0.5, neurons=0.5, exclude=["encoder.layers.encoder_layer_0*"]
    )
    assert [s.name for s in pruner.structures] == [
        "encoder.layers.encoder_layer_1.self_attention",
        "encoder.layers.encoder_layer_1.mlp",
    ]


def _bert_builder(**config) -> nn.Module:
    return transformers.BertModel(transformers.BertConfig(**config))


_bert_builder.module_packages = ("transformers",)


@pytest.mark.parametrize("name", ["vit_b_16", "llama_gqa", "gpt2", "bert"])
def test_export_reloads_bit_exactly(name, tmp_path):
    from tasks.modules.language import causal_lm

    build, inputs = MODELS[name]
    model = randomise(build())
    pruner = StructuredPruner(model, heads=0.25, neurons=0.5, allocation="global")
    pruner.step(0)
    slim = pruner.compact(inputs)
    builders = None
    if name == "vit_b_16":
        builder = {"_target_": "torchvision.models.vit_b_16", "weights": None, "image_size": 32}
    elif name == "bert":
        builder = {
            "_target_": "tests.bert",
            "vocab_size": 100,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 96,
        }
        builders = {"tests.bert": _bert_builder}
    else:
        family = "llama" if name == "llama_gqa" else "gpt2"
        config = (
            {
                "hidden_size": 64,
                "intermediate_size": 96,
                "num_hidden_layers": 2,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
            }
            if family == "llama"
            else {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32}
        )
        builder = {
            "_target_": "tasks.modules.language.causal_lm",
            "family": family,
            "vocab_size": 100,
            **config,
        }
        builders = {"tasks.modules.language.causal_lm": causal_lm}
    folder = export_pruned(slim, tmp_path / "export", builder=builder)
    back = load_pruned(folder, builders=builders).eval()
    assert torch.equal(forward(back, inputs), forward(slim, inputs))
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in slim.parameters())
    if name == "gpt2":  # the tied output embedding stays tied
        assert back.lm_head.weight is back.transformer.wte.weight


class FooAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.proj(nn.functional.scaled_dot_product_attention(q, k, v))


def test_unsupported_attention_is_named_with_the_supported_list():
    model = nn.Sequential(FooAttention())
    with pytest.raises(ValueError, match="FooAttention") as error:
        find_structures(model, ["heads"])
    message = str(error.value)
    assert (
        "\n" not in message
        and "0 is a FooAttention, which head pruning does not support" in message
    )
    assert all(entry in message for entry in SUPPORTED_ATTENTION)
    # asked for neurons only, the attention is simply not looked at
    with pytest.raises(ValueError, match="no neurons found"):
        find_structures(model, ["neurons"])


def test_removing_every_head_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"heads must be in \[0, 1\) \(the fraction of zeros\), got 1.0"
    ):
        StructuredPruner(randomise(small_vit()), heads=1.0)
    model = randomise(small_vit())
    pruner = StructuredPruner(model, heads=0.5)
    pruner.set_progress(1.0)
    pruner.sources[0].keep.zero_()  # set by hand: the selection itself always keeps one
    with pytest.raises(
        CompactionError, match=r"encoder_layer_0\.self_attention: every head would be removed"
    ):
        pruner.compact((IMAGES,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"method": "wanda"},
            "method: expected one of magnitude, taylor, movement, hard_concrete, got 'wanda'",
        ),
        ({"allocation": "uniform"}, "allocation: expected 'layer' or 'global', got 'uniform'"),
        ({"heads": 0.0, "neurons": 0.0}, "heads, head_dims, neurons and hidden are all 0"),
        ({"heads": -0.1}, r"heads must be in \[0, 1\)"),
        ({"neurons": "half"}, "neurons must be a number in"),
        ({"update_every": 0}, "update_every must be an int >= 1, got 0"),
        ({"estimator_args": {"warmth": 1}}, "estimator_args for magnitude:"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, message):
    args = {"heads": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        StructuredPruner(randomise(small_vit()), **args)
    assert "\n" not in str(error.value)


def test_a_model_without_heads_says_so():
    with pytest.raises(ValueError, match="no heads found"):
        StructuredPruner(nn.Sequential(nn.Linear(4, 4)), heads=0.5)


@pytest.mark.parametrize("budget", ["macs", "params"])
def test_a_params_or_macs_budget_is_reached_within_one_unit_and_every_block_keeps_a_head(budget):
    torch.manual_seed(0)
    net = llama()
    ids = TOKENS
    reference = copy.deepcopy(net).eval()
    pruner = StructuredPruner(net, **{budget: 0.4}, tokens=ids.shape[1])
    pruner.step(0)
    report = pruner.report(tokens=ids.shape[1])
    costs = torch.cat(pruner._costs)
    keeps = torch.cat(pruner.keeps())
    removed = float(costs[~keeps].sum()) / float(costs.sum())
    # at least the fraction, overshooting by less than the costliest unit
    assert 0.4 <= removed < 0.4 + float(costs.max()) / float(costs.sum())
    assert all(row["kept"] >= 1 for row in report["structures"])
    assert {row["kind"] for row in report["structures"] if row["kept"] < row["units"]} == {
        "heads",
        "neurons",
    }
    slim = pruner.compact({"input_ids": ids, "use_cache": False})
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]
    assert report["parameters_after"] < sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"heads": 0.5, "macs": 0.5},
            "give fractions of heads, head_dims, neurons or hidden, or one budget",
        ),
        ({"params": 0.5, "macs": 0.2}, "or one budget \\(params or macs\\), got params, macs"),
        (
            {"macs": 0.5, "kinds": ["layers"]},
            "kinds: a macs budget takes some of heads, head_dims, neurons, hidden, got",
        ),
        ({"params": 0.5, "kinds": "hidden"}, "kinds: a params budget takes some of"),
        ({"macs": 0.5, "tokens": 0}, "tokens must be an int >= 1, got 0"),
        ({"macs": 1.0}, r"macs must be in \[0, 1\)"),
    ],
)
def test_bad_budgets_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StructuredPruner(llama(), **kwargs)


def _multiples(pruner: StructuredPruner, step: int) -> dict[str, list[int]]:
    kept: dict[str, list[int]] = {}
    for row in pruner.layer_sparsity():
        kept.setdefault(row["kind"], []).append(row["kept_units"])
        if row["kind"] != "heads":  # heads are whole already
            assert row["kept_units"] % step == 0 or row["kept_units"] == row["units"], row
    return kept


@pytest.mark.parametrize("kinds", [("heads", "neurons"), ("heads", "neurons", "hidden")])
def test_round_to_keeps_neurons_and_hidden_channels_in_multiples_under_a_budget(kinds):
    torch.manual_seed(0)
    model = randomise(small_vit())
    pruner = StructuredPruner(model, method="taylor", macs=0.4, kinds=kinds, tokens=17, round_to=8)
    pruner.step(0)
    kept = _multiples(pruner, 8)
    assert any(k < 64 for k in kept["neurons"])  # the budget does take neurons, in runs of 8
    report = pruner.report(tokens=17)
    before, after = report["structure_macs_before"], report["structure_macs_after"]
    if "hidden" not in kinds:  # disjoint costs: reached, overshooting by less than one run
        costs = torch.cat(pruner._costs)
        assert 0.4 <= 1 - after / before < 0.4 + 8 * float(costs.max()) / float(costs.sum())
    else:
        assert 1 - after / before >= 0.4
        assert kept["hidden"][0] % 8 == 0 and kept["hidden"][0] < 32
    slim = pruner.compact((IMAGES,))
    torch.testing.assert_close(forward(slim, (IMAGES,)), forward(model, (IMAGES,)))
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]


def test_round_to_rounds_fractions_up_and_leaves_heads_alone():
    model = randomise(llama())  # 4 key/value groups, 96 neurons a block
    pruner = StructuredPruner(model, heads=0.5, neurons=0.3, round_to=16)
    pruner.step(0)
    kept = _multiples(pruner, 16)
    assert kept == {"heads": [2, 2], "neurons": [80, 80]}  # 96 - 29 = 67 kept, rounded up to 80


@pytest.mark.parametrize("value", [0, 2.0, True])
def test_bad_round_to_is_one_line(value):
    with pytest.raises(ValueError, match=f"round_to must be an int >= 1, got {value!r}"):
        StructuredPruner(small_vit(), neurons=0.5, round_to=value)


@pytest.mark.parametrize("kind", ["cubic", "one_shot"])
def test_masks_stay_as_a_ramp_left_them_and_keep_learning_under_one_shot(kind):
    from masking.pruning import SparsitySchedule

    schedule = SparsitySchedule(0.5, kind=kind, end_step=4 if kind == "cubic" else None)
    pruner = StructuredPruner(
        randomise(small_vit()), method="movement", neurons=0.5, schedule=schedule
    )
    for step in range(5):
        pruner.step(step)
    settled = pruner.keeps()
    with torch.no_grad():
        for source in pruner.sources:  # the learned scores turn the ranking upside down
            source.scores.neg_()
    pruner.step(20)
    changed = not all(torch.equal(a, b) for a, b in zip(settled, pruner.keeps()))
    assert changed == (kind == "one_shot")
    assert pruner.achieved_sparsity() == 0.5
