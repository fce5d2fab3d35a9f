"""Pruning the hidden width of a ViT and a Llama: the residual stream's channels, shared by every
block.

The properties users depend on: a removed channel is zero all along the stream while masked, the
masked layer norms compute what the compacted, narrower ones do (fp32, 1e-5 relative), the compacted
model is an ordinary torchvision ViT of the width the report predicts, learned estimators train
through the shared mask, an export reloads bit-exactly, and what cannot be done is one clear line.
"""

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


@pytest.mark.parametrize(
    ("build", "units", "allocation"),
    [
        (small_vit, {"hidden": 0.25}, "layer"),
        (small_vit, {"hidden": 0.5, "heads": 0.5, "neurons": 0.5}, "layer"),
        (small_vit, {"hidden": 0.25, "heads": 0.25}, "global"),
        (
            lambda: torchvision.models.vit_b_16(image_size=32),
            {"hidden": 0.25, "neurons": 0.5},
            "layer",
        ),
        (lambda: small_vit(representation_size=16), {"hidden": 0.5}, "layer"),
    ],
)
def test_masked_equals_compacted_at_the_predicted_size(build, units, allocation):
    torch.manual_seed(0)
    model = randomise(build())
    dense = run(model)
    width = model.hidden_dim
    pruner = StructuredPruner(model, allocation=allocation, **units)
    pruner.step(0)
    masked = run(model)
    assert not torch.allclose(masked, dense, rtol=1e-3, atol=1e-3)
    report = pruner.report(tokens=17)
    kept = report["units"]["hidden"]["kept"]
    assert kept == width - round(units["hidden"] * width)
    slim = pruner.compact((IMAGES,))
    torch.testing.assert_close(run(slim), masked, rtol=1e-5, atol=1e-5)
    # an ordinary ViT of the narrower width, counted as the report said
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]
    assert slim.hidden_dim == kept and slim.class_token.shape == (1, 1, kept)
    assert slim.encoder.pos_embedding.shape[-1] == kept
    assert slim.conv_proj.out_channels == kept == slim.conv_proj.weight.shape[0]
    for block in slim.encoder.layers:
        assert type(block.ln_1) is nn.LayerNorm and block.ln_1.normalized_shape == (kept,)
        assert isinstance(block.self_attention, SlimMultiheadAttention)
        assert block.self_attention.embed_dim == kept
        assert block.mlp[0].in_features == kept == block.mlp[3].out_features
    assert slim.heads[0].in_features == kept
    assert not any(hasattr(m, "parametrizations") for m in slim.modules())
    assert report["structure_macs_after"] < report["structure_macs_before"]
    after = pruner.report(tokens=17)  # the report describes the same model once compacted
    assert (after["parameters_after"], after["structure_macs_after"]) == (
        report["parameters_after"],
        report["structure_macs_after"],
    )


def test_a_removed_channel_is_zero_all_along_the_residual_stream():
    model = randomise(small_vit())
    pruner = StructuredPruner(model, hidden=0.5)
    pruner.step(0)
    removed = ~pruner.keeps()[0]
    streams = []
    for block in model.encoder.layers:
        block.register_forward_hook(lambda module, args, out: streams.append(out))
    run(model)
    assert len(streams) == 2
    for stream in streams:
        assert stream[..., removed].abs().max() == 0
        assert stream[..., ~removed].abs().min() > 0


def test_the_masked_norm_takes_its_statistics_over_the_kept_channels():
    # a plain layer norm over the full width would see the zeros and shift every kept channel
    model = randomise(small_vit())
    pruner = StructuredPruner(model, hidden=0.5)
    pruner.step(0)
    keep = pruner.keeps()[0]
    norm = model.encoder.ln
    x = torch.randn(3, 5, 32) * keep
    kept = nn.functional.layer_norm(
        x[..., keep], (int(keep.sum()),), norm.weight[keep], norm.bias[keep], norm.eps
    )
    torch.testing.assert_close(norm(x)[..., keep], kept, rtol=1e-5, atol=1e-6)
    assert norm(x)[..., ~keep].abs().max() == 0
    assert "_hidden_source" not in str(list(model.state_dict()))  # a layer norm's state


@pytest.mark.parametrize("method", ["taylor", "movement", "hard_concrete"])
def test_learned_estimators_train_the_shared_channel_mask(method):
    torch.manual_seed(0)
    model = randomise(small_vit()).train()
    pruner = StructuredPruner(
        model,
        method=method,
        hidden=0.25,
        neurons=0.25,
        penalty=0.1 if method == "hard_concrete" else 0.0,
    )
    hidden = next(i for i, s in enumerate(pruner.structures) if s.kind == "hidden")
    start = pruner.sources[hidden].importance().clone()
    train_masks(model, pruner, 3)
    assert not torch.equal(start, pruner.sources[hidden].importance())
    model.eval()
    masked = run(model)
    slim = pruner.compact((IMAGES,))
    torch.testing.assert_close(run(slim), masked, rtol=1e-5, atol=1e-5)


def test_taylor_sees_every_writer_of_a_channel():
    # the mask multiplies every writer of the stream; one probe per forward is shared by all, so a
    # channel's score sums gradient x weight over the embedding and every block's outputs
    torch.manual_seed(0)
    model = randomise(small_vit()).train()
    pruner = StructuredPruner(model, method="taylor", hidden=0.25)
    hidden = pruner.structures[0]
    assert hidden.kind == "hidden" and len(hidden.writers) == 3 + 4 * 2  # bias, tokens, blocks
    nn.functional.cross_entropy(model(IMAGES), torch.tensor([1, 7])).backward()
    assert int(pruner.sources[0].seen) == 1  # one probe per forward, over all writers


def test_export_reloads_bit_exactly(tmp_path):
    from masking.models import vit_small

    sizes = {"num_layers": 2, "hidden_dim": 32, "num_heads": 4, "mlp_dim": 64}
    model = randomise(vit_small(**sizes))
    pruner = StructuredPruner(model, hidden=0.25, heads=0.25, neurons=0.5)
    pruner.step(0)
    slim = pruner.compact((IMAGES,))
    folder = export_pruned(
        slim, tmp_path / "export", builder={"_target_": "masking.models.vit_small", **sizes}
    )
    back = load_pruned(folder).eval()
    assert torch.equal(run(back), run(slim))
    assert back.encoder.ln.normalized_shape == (24,) and back.hidden_dim == 24


def llama(**extra):
    """A 2-block Llama with grouped-query attention (8 query heads over 4 key/value heads)."""
    from tasks.modules.language import causal_lm

    sizes = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2}
    return causal_lm(
        "llama", vocab_size=100, num_attention_heads=8, num_key_value_heads=4, **sizes, **extra
    )


TOKENS = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=TOKENS, use_cache=False).logits


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("units", [{"hidden": 0.25}, {"hidden": 0.5, "heads": 0.5, "neurons": 0.5}])
def test_a_llama_narrows_its_stream_exactly_and_keeps_its_head_tied(tied, units):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = randomise(llama(tie_word_embeddings=tied))
    dense = logits(model)
    pruner = StructuredPruner(model, **units)
    pruner.step(0)
    masked = logits(model)
    assert not torch.allclose(masked, dense, rtol=1e-3, atol=1e-3)
    report = pruner.report(tokens=12)
    slim = pruner.compact({"input_ids": TOKENS, "use_cache": False})
    torch.testing.assert_close(logits(slim), masked, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]
    kept = 64 - round(units["hidden"] * 64)
    assert slim.config.hidden_size == kept == slim.model.embed_tokens.embedding_dim
    assert slim.model.norm.weight.shape == (kept,)
    assert type(slim.model.norm).__name__ == "LlamaRMSNorm"
    assert slim.lm_head.in_features == kept
    assert (slim.lm_head.weight is slim.model.embed_tokens.weight) == tied
    for layer in slim.model.layers:
        assert layer.self_attn.q_proj.in_features == kept == layer.mlp.down_proj.out_features
        assert layer.mlp.hidden_size == kept


def test_a_narrower_llama_exports_and_reloads_bit_exactly_tied(tmp_path):
    pytest.importorskip("transformers")
    from tasks.modules.language import causal_lm

    model = randomise(llama(tie_word_embeddings=True))
    pruner = StructuredPruner(model, hidden=0.25, heads=0.25, neurons=0.5, method="taylor")
    pruner.step(0)
    slim = pruner.compact({"input_ids": TOKENS, "use_cache": False})
    builder = {
        "_target_": "tasks.modules.language.causal_lm",
        "family": "llama",
        "vocab_size": 100,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "tie_word_embeddings": True,
    }
    folder = export_pruned(slim, tmp_path / "export", builder=builder)
    back = load_pruned(folder, builders={builder["_target_"]: causal_lm}).eval()
    assert torch.equal(logits(back), logits(slim))
    assert back.lm_head.weight is back.model.embed_tokens.weight
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in slim.parameters())


@pytest.mark.parametrize("budget", ["macs", "params"])
@pytest.mark.parametrize("model", ["vit", "llama"])
def test_a_budget_over_every_width_is_met_exactly_within_one_unit(model, budget):
    """A channel's cost overlaps every head's and neuron's: the budget is counted on the shapes
    the kept units leave, and the compacted model is what the report predicts."""
    if model == "llama":
        pytest.importorskip("transformers")
        net, example, tokens = randomise(llama()), {"input_ids": TOKENS, "use_cache": False}, 12
    else:
        net, example, tokens = randomise(small_vit()), (IMAGES,), 17
    kinds = ["heads", "neurons", "hidden"]
    pruner = StructuredPruner(net, **{budget: 0.4}, kinds=kinds, tokens=tokens)
    pruner.step(0)
    report = pruner.report(tokens=tokens)
    if budget == "macs":
        before, after = report["structure_macs_before"], report["structure_macs_after"]
        share = 1 - after / before
        # one more unit kept would cost at most the costliest unit's first-order cost
        largest = float(torch.cat(pruner._costs).max()) / before
    else:
        share = (report["parameters_before"] - report["parameters_after"]) / (
            pruner._owned_parameters
        )
        largest = float(torch.cat(pruner._costs).max()) / pruner._owned_parameters
    assert 0.4 <= share < 0.4 + largest
    cut = {row["kind"] for row in report["structures"] if row["kept"] < row["units"]}
    assert "hidden" in cut and len(cut) >= 2  # ranked together, not the stream alone
    assert all(row["kept"] >= 1 for row in report["structures"])
    reference = run(net) if model == "vit" else logits(net)
    slim = pruner.compact(example)
    out = run(slim) if model == "vit" else logits(slim)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) == report["parameters_after"]


def test_a_plan_takes_a_macs_budget_over_the_hidden_width():
    plan = PruningPlan(
        method="magnitude", granularity="heads+neurons+hidden", budget="macs", sparsity=0.3
    )
    options = plan.structured_options()
    assert options["macs"] == 0.3 and list(options["kinds"]) == ["heads", "neurons", "hidden"]


def test_what_cannot_be_done_is_one_line():
    transformers = pytest.importorskip("transformers")
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=4, n_positions=16)
    )
    with pytest.raises(
        ValueError,
        match=r"hidden: pruning the residual stream's width supports torchvision "
        r"VisionTransformer; Llama-family .* got a GPT2LMHeadModel",
    ):
        find_structures(gpt2, ["hidden"])
    with pytest.raises(ValueError, match=r"hidden must be in \[0, 1\)"):
        StructuredPruner(randomise(small_vit()), hidden=1.0)
    pruner = StructuredPruner(randomise(small_vit()), hidden=0.5)
    with pytest.raises(ValueError, match="a pruned hidden width needs compaction"):
        pruner.bake()
    pruner.set_progress(1.0)
    pruner.sources[0].keep.zero_()
    with pytest.raises(
        CompactionError, match="residual stream: every hidden channel would be removed"
    ):
        pruner.compact((IMAGES,))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"finalize": "bake"}, "pruning.finalize: pruning.granularity=neurons\\+hidden narrows"),
    ],
)
def test_plan_settings_the_hidden_width_cannot_take(settings, message):
    with pytest.raises(ValueError, match=message) as error:
        PruningPlan(method="magnitude", granularity="hidden+neurons", **settings)
    assert "\n" not in str(error.value)


def test_plan_spells_each_set_of_units_once():
    plan = PruningPlan(method="taylor", granularity="hidden+heads", sparsity=0.25)
    assert str(plan.granularity) == "heads+hidden" and plan.units
    assert plan.structured_options()["hidden"] == 0.25
    with pytest.raises(
        ValueError, match="for transformers: heads, head_dims, neurons, hidden or several"
    ):
        PruningPlan(method="taylor", granularity="heads+heads")
