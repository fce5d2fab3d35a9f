"""Thinner heads (``head_dims``): every head of an ``nn.MultiheadAttention`` keeps fewer query/key
and value features, as many as the other heads. What users rely on: the masked model is the
compacted one (fp32, 1e-5 relative) although the compacted scores scale by a smaller ``head_dim``,
the heads stay equally wide whatever the estimator learned, the parameter count is the report's,
an export reloads bit-exactly, and what cannot be thinned says so in one line."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from masking.layers import SlimMultiheadAttention
from masking.pruning import export_pruned, load_pruned
from masking.pruning.graph import CompactionError
from masking.pruning.transformer import StructuredPruner, find_structures
from tasks.pruning.plan import PruningPlan
from tests.helpers.pruning import IMAGES, randomise, small_vit, train_masks


def run(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IMAGES)


def widths(model: nn.Module) -> list[tuple[int, int, int]]:
    return [
        (a.num_heads, a.head_dim, getattr(a, "value_dim", a.head_dim))
        for a in (layer.self_attention for layer in model.encoder.layers)
    ]


@pytest.mark.parametrize(
    ("build", "settings"),
    [
        (small_vit, {"head_dims": 0.5}),
        (small_vit, {"head_dims": 0.25, "neurons": 0.5, "allocation": "global"}),
        (small_vit, {"head_dims": 0.5, "hidden": 0.25}),
        (lambda: torchvision.models.vit_b_16(weights=None, image_size=32), {"head_dims": 0.5}),
    ],
)
def test_masked_equals_compacted_with_equally_wide_heads(build, settings):
    torch.manual_seed(0)
    model = randomise(build())
    dense = run(model)
    heads = [a.num_heads for a in (layer.self_attention for layer in model.encoder.layers)]
    dim = model.encoder.layers[0].self_attention.head_dim
    pruner = StructuredPruner(model, **settings)
    pruner.step(0)
    masked = run(model)
    assert not torch.allclose(masked, dense, rtol=1e-3, atol=1e-3)
    report = pruner.report(tokens=17)
    features = report["units"]["head_dims"]
    fraction = settings["head_dims"]
    # every head loses whole features: the fraction rounded up to one of every head
    assert features["kept"] <= round(features["total"] * (1 - fraction))
    slim = pruner.compact((IMAGES,))
    torch.testing.assert_close(run(slim), masked, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]
    assert report["structure_macs_after"] < report["structure_macs_before"]
    for (count, kept_qk, kept_values), before in zip(widths(slim), heads):
        assert count == before  # the heads stay
        assert 1 <= kept_qk < dim and 1 <= kept_values < dim
    assert sum(h * (q + v) for h, q, v in widths(slim)) == features["kept"]
    assert not any(hasattr(m, "parametrizations") for m in slim.modules())


def test_the_query_key_and_value_features_are_ranked_each_against_its_own_kind():
    # value features whose weights are ten times the query/key features' still lose their share
    model = randomise(small_vit())
    attention = model.encoder.layers[0].self_attention
    with torch.no_grad():
        attention.in_proj_weight[64:].mul_(10)
        attention.out_proj.weight.mul_(10)
    pruner = StructuredPruner(model, head_dims=0.5)
    pruner.step(0)
    assert widths(pruner.compact((IMAGES,)))[0] == (4, 4, 4)


def test_every_head_keeps_a_query_key_and_a_value_feature():
    model = randomise(small_vit())
    pruner = StructuredPruner(model, head_dims=0.99)
    pruner.step(0)
    masked = run(model)
    slim = pruner.compact((IMAGES,))
    assert widths(slim) == [(4, 1, 1), (4, 1, 1)]
    torch.testing.assert_close(run(slim), masked, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["taylor", "movement", "hard_concrete"])
def test_learned_estimators_keep_the_heads_equally_wide(method):
    torch.manual_seed(0)
    model = randomise(small_vit()).train()
    pruner = StructuredPruner(
        model,
        method=method,
        head_dims=0.5,
        neurons=0.5,
        penalty=0.1 if method == "hard_concrete" else 0.0,
    )
    train_masks(model, pruner, 4, lr=0.05)
    model.eval()
    masked = run(model)
    slim = pruner.compact((IMAGES,))
    torch.testing.assert_close(run(slim), masked, rtol=1e-5, atol=1e-5)
    assert sum(h * (q + v) for h, q, v in widths(slim)) == int(pruner.keeps()[0].sum()) + int(
        pruner.keeps()[2].sum()
    )


@pytest.mark.parametrize("kinds", [["head_dims", "neurons"], ["head_dims", "neurons", "hidden"]])
def test_a_macs_budget_takes_head_features_and_is_met(kinds):
    model = randomise(small_vit())
    pruner = StructuredPruner(model, macs=0.4, kinds=kinds, tokens=17)
    pruner.step(0)
    report = pruner.report(tokens=17)
    share = 1 - report["structure_macs_after"] / report["structure_macs_before"]
    # runs take one feature of each of the 4 heads (and neurons one at a time here)
    largest = 4 * float(torch.cat(pruner._costs).max()) / report["structure_macs_before"]
    assert 0.4 <= share < 0.4 + largest
    assert report["units"]["head_dims"]["kept"] < report["units"]["head_dims"]["total"]
    masked = run(model)
    slim = pruner.compact((IMAGES,))
    torch.testing.assert_close(run(slim), masked, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]


def test_export_reloads_thinner_heads_bit_exactly(tmp_path):
    model = randomise(torchvision.models.vit_b_16(weights=None, image_size=32))
    pruner = StructuredPruner(model, head_dims=0.25, neurons=0.5)
    pruner.step(0)
    slim = pruner.compact((IMAGES,))
    builder = {"_target_": "torchvision.models.vit_b_16", "weights": None, "image_size": 32}
    back = load_pruned(export_pruned(slim, tmp_path / "export", builder=builder)).eval()
    assert torch.equal(run(back), run(slim))
    assert widths(back) == widths(slim)
    assert isinstance(back.encoder.layers[0].self_attention, SlimMultiheadAttention)


def test_compaction_refuses_heads_of_different_widths():
    model = randomise(small_vit())
    pruner = StructuredPruner(model, head_dims=0.5)
    pruner.step(0)
    keep = pruner.sources[0].keep
    keep.fill_(True)
    keep[0] = False  # one query/key feature of head 0 only
    with pytest.raises(CompactionError, match="every head must keep as many"):
        pruner.compact((IMAGES,))


def test_what_cannot_be_thinned_is_one_line():
    transformers = pytest.importorskip("transformers")
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(ValueError, match=r"^head_dims: thinning heads supports") as error:
        find_structures(llama, ["head_dims"])
    assert "\n" not in str(error.value) and "LlamaAttention" in str(error.value)
    with pytest.raises(ValueError, match="heads and head_dims both cut"):
        StructuredPruner(small_vit(), heads=0.5, head_dims=0.5)
    with pytest.raises(ValueError, match="heads and head_dims both cut"):
        StructuredPruner(small_vit(), macs=0.5, kinds=["heads", "head_dims"])


def test_a_plan_spells_head_dims():
    plan = PruningPlan(method="taylor", granularity="neurons+head_dims", sparsity=0.25)
    assert str(plan.granularity) == "head_dims+neurons"
    assert plan.structured_options()["head_dims"] == 0.25


def test_slim_attention_with_narrower_values_is_multi_head_attention():
    torch.manual_seed(0)
    slim = SlimMultiheadAttention(12, num_heads=3, head_dim=2, value_dim=5, batch_first=True)
    x = torch.randn(2, 7, 12)
    out, weights = slim(x, x, x)
    q, k, v = slim.in_proj_weight.split([6, 6, 15])
    bq, bk, bv = slim.in_proj_bias.split([6, 6, 15])
    heads = []
    for h in range(3):
        qh = x @ q[2 * h : 2 * h + 2].T + bq[2 * h : 2 * h + 2]
        kh = x @ k[2 * h : 2 * h + 2].T + bk[2 * h : 2 * h + 2]
        vh = x @ v[5 * h : 5 * h + 5].T + bv[5 * h : 5 * h + 5]
        heads.append(((qh @ kh.transpose(1, 2)) / 2**0.5).softmax(-1) @ vh)
    expected = slim.out_proj(torch.cat(heads, -1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    separate, _ = slim(x, x.clone(), x.clone(), need_weights=False)  # the unfused path
    torch.testing.assert_close(separate, expected, rtol=1e-5, atol=1e-6)
    assert weights.shape == (2, 7, 7)
