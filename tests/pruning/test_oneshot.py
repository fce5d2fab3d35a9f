"""One-shot pruning from calibration data (magnitude, Wanda, SparseGPT): exact sparsity and n:m
patterns on every pruned linear of Llama (grouped-query attention) and GPT-2 (fused Conv1D), the
properties each method is chosen for, block-by-block calibration, export and reload."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from masking.pruning import export_pruned, load_pruned
from masking.pruning.oneshot import (
    decoder_blocks,
    linear_weight,
    oneshot_keep,
    prune_oneshot,
    sparsegpt_prune,
)
from tasks.modules.language import causal_lm
from tasks.runtime.checkpoints import trusted

transformers = pytest.importorskip("transformers")

LLAMA = {
    "family": "llama",
    "vocab_size": 96,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention
    "max_position_embeddings": 64,
}
GPT2 = {
    "family": "gpt2",
    "vocab_size": 96,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 64,
}


def _model(config: dict) -> nn.Module:
    torch.manual_seed(0)
    return causal_lm(**config).eval()


def _calibration(vocab: int = 96) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return list(torch.randint(0, vocab, (4, 24), generator=g).split(2))


def _forward(model: nn.Module, ids: torch.Tensor):
    return model(ids, use_cache=False)


def _linears(model: nn.Module, result) -> dict[str, torch.Tensor]:
    named = dict(model.named_modules())
    return {name: linear_weight(named[name]) for name in result.masks}


@pytest.mark.parametrize("config", [LLAMA, GPT2], ids=["llama_gqa", "gpt2_conv1d"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("granularity", ["weight", "2:4", "4:8"])
def test_every_pruned_linear_has_the_exact_sparsity_or_pattern(config, method, granularity):
    model = _model(config)
    result = prune_oneshot(
        model,
        _calibration(),
        method=method,
        granularity=granularity,
        sparsity=0.6,
        forward=_forward,
    )
    expected = 2 * (
        7 if config is LLAMA else 4
    )  # q, k, v, o, gate, up, down | c_attn, c_proj, c_fc, c_proj
    assert len(result.masks) == expected
    for name, weight in _linears(model, result).items():
        keep = result.masks[name]
        assert keep.shape == weight.shape, name
        assert torch.all(weight[~keep] == 0), name  # the weights hold the mask (dense with zeros)
        if granularity == "weight":
            drop = (
                round(0.6 * keep.numel())
                if method != "wanda"
                else keep.shape[0] * round(0.6 * keep.shape[1])
            )
            assert int((~keep).sum()) == drop, name
            if method == "wanda":  # compared within each output row
                assert torch.all((~keep).sum(1) == round(0.6 * keep.shape[1])), name
        else:
            n, m = map(int, granularity.split(":"))
            groups = keep.reshape(keep.shape[0], -1, m)
            assert torch.all(groups.sum(-1) == n), name
            assert torch.all((weight.reshape(groups.shape) != 0).sum(-1) <= n), name


def test_calibration_runs_without_dropout_and_the_mode_is_handed_back():
    config = {**LLAMA, "attention_dropout": 0.5}
    runs = []
    for seed in (1, 2):
        model = _model(config).train()
        torch.manual_seed(seed)  # dropout, if it ran, would differ between the two
        prune_oneshot(model, _calibration(), method="sparsegpt", forward=_forward)
        assert model.training
        runs.append(model.model.layers[1].mlp.down_proj.weight.clone())
    assert torch.equal(*runs)  # the same statistics both times: no dropout was sampled


def test_gpt2s_fused_projection_is_pruned_along_its_input_features():
    """Conv1D stores (in, out): the n:m groups must run along dim 0 of its storage."""
    model = _model(GPT2)
    prune_oneshot(model, _calibration(), method="wanda", granularity="2:4", forward=_forward)
    stored = model.transformer.h[0].attn.c_attn.weight  # (in=32, out=96)
    assert stored.shape == (32, 96)
    groups = (stored.t() != 0).reshape(96, 8, 4)
    assert torch.all(groups.sum(-1) <= 2)


def _planted_outliers() -> tuple[nn.Module, list[torch.Tensor], list[int]]:
    """One linear layer whose inputs have a few features 50× larger than the rest, with weights
    4× smaller there: their contribution to the output dominates, their magnitude does not."""
    g = torch.Generator().manual_seed(0)
    features, outliers = 64, [3, 17, 40, 58]
    layer = nn.Linear(features, 32, bias=False)
    with torch.no_grad():
        # magnitudes in [0.5, 1.5]: an outlier's |W|·‖X‖ is above every other weight's
        signs = torch.randint(0, 2, (32, features), generator=g) * 2 - 1
        layer.weight.copy_(signs * (0.5 + torch.rand(32, features, generator=g)))
        layer.weight[:, outliers] *= 0.25
    scale = torch.ones(features)
    scale[outliers] = 50.0
    batches = [torch.randn(8, 16, features, generator=g) * scale for _ in range(4)]
    return nn.Sequential(nn.Sequential(layer)), batches, outliers


def test_wanda_keeps_the_weights_of_outlier_features_that_magnitude_drops():
    model, batches, outliers = _planted_outliers()
    kept = {}
    for method in ("magnitude", "wanda"):
        pruned = copy.deepcopy(model)
        result = prune_oneshot(pruned, batches, method=method, sparsity=0.5, blocks=[pruned[0]])
        kept[method] = next(iter(result.masks.values()))[:, outliers].float().mean().item()
    assert kept["wanda"] == 1.0  # every weight of an outlier feature survives
    assert kept["magnitude"] < 0.3  # magnitude drops most of them: they are small


def _layer_error(layer_weight: torch.Tensor, pruned: torch.Tensor, x: torch.Tensor) -> float:
    return float((x @ layer_weight.t() - x @ pruned.t()).square().sum())


@pytest.mark.parametrize("granularity", ["weight", "2:4"])
def test_sparsegpt_reconstructs_a_layers_outputs_better_than_magnitude_and_wanda(granularity):
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(48, 48, generator=g) / 48**0.5 + torch.eye(48)
    x = torch.randn(512, 48, generator=g) @ mixing  # correlated inputs, as activations are
    x[:, :4] *= 8.0
    weight = torch.randn(40, 48, generator=g)
    hessian = x.t() @ x
    norms = x.square().sum(0).sqrt()
    masks = {
        "magnitude": oneshot_keep(weight.abs(), granularity, 0.5),
        "wanda": oneshot_keep(weight.abs() * norms, granularity, 0.5, per_row=True),
    }
    errors = {name: _layer_error(weight, weight * keep, x) for name, keep in masks.items()}
    pruned, keep = sparsegpt_prune(weight, hessian, granularity, 0.5)
    assert int((~keep).sum()) == weight.numel() // 2
    sparsegpt = _layer_error(weight, pruned, x)
    assert sparsegpt < min(errors.values())
    # with the mask fixed to Wanda's, SparseGPT's weight update still lowers the error
    updated, same = sparsegpt_prune(weight, hessian, keep=masks["wanda"])
    assert torch.equal(same, masks["wanda"]) and torch.all(updated[~same] == 0)
    assert _layer_error(weight, updated, x) < errors["wanda"]


def test_each_block_is_calibrated_on_the_outputs_of_the_blocks_already_pruned():
    g = torch.Generator().manual_seed(0)
    blocks = nn.Sequential(
        nn.Sequential(nn.Linear(16, 16), nn.Tanh()), nn.Sequential(nn.Linear(16, 8))
    )
    batches = [torch.randn(6, 16, generator=g) for _ in range(3)]
    expected = copy.deepcopy(blocks)
    # by hand: block 0 from the inputs, then block 1 from the pruned block 0's outputs
    first = expected[0][0]
    norms = torch.cat(batches).square().sum(0).sqrt()
    first.weight.data *= oneshot_keep(first.weight.abs() * norms, "weight", 0.5, per_row=True)
    with torch.no_grad():
        hidden = torch.cat([expected[0](b) for b in batches])
    second = expected[1][0]
    norms = hidden.square().sum(0).sqrt()
    second.weight.data *= oneshot_keep(second.weight.abs() * norms, "weight", 0.5, per_row=True)
    prune_oneshot(blocks, batches, method="wanda", sparsity=0.5, blocks=list(blocks))
    assert torch.equal(blocks[0][0].weight, expected[0][0].weight)
    assert torch.equal(blocks[1][0].weight, expected[1][0].weight)


def test_every_layers_hessian_is_its_own_inputs_xtx_when_layers_share_inputs():
    from masking.pruning.oneshot import _gather

    model = _model(LLAMA)
    block = model.model.layers[0]
    names = {id(m): n for n, m in block.named_modules()}
    chosen = [(names[id(m)], m) for m in block.modules() if isinstance(m, nn.Linear)]
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda m, a, o, n=n: seen.setdefault(n, []).append(a[0]))
        for n, m in chosen
    ]
    calibration = _calibration()
    inputs = []
    first = block.register_forward_pre_hook(
        lambda m, a, k: inputs.append((a, dict(k))), with_kwargs=True
    )
    with torch.no_grad():
        for ids in calibration:
            model(ids, use_cache=False)
    first.remove()
    for hook in hooks:
        hook.remove()
    stats = _gather(block, chosen, inputs, hessian=True)
    assert seen["self_attn.q_proj"][0] is seen["self_attn.k_proj"][0]  # one input, read thrice
    for name, recorded in seen.items():
        x = torch.cat([r.reshape(-1, r.shape[-1]) for r in recorded]).double()
        assert stats[name].tokens == x.shape[0] == 4 * 24
        torch.testing.assert_close(stats[name].hessian.double(), x.T @ x, rtol=1e-5, atol=1e-4)


class _Reuse(nn.Module):
    """``a(x)``, ``a(y)``, ``b(x)``, ``a(x)``: one layer called thrice, an input read by two."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.a(x))
        return self.a(y) + self.b(x) + self.a(x)


def test_every_call_of_a_layer_counts_and_a_shared_input_counts_for_each_reader():
    from masking.pruning.oneshot import _gather

    block = _Reuse()
    batches = [torch.randn(5, 8), torch.randn(3, 8)]
    stats = _gather(
        block, [("a", block.a), ("b", block.b)], [((x,), {}) for x in batches], hessian=True
    )
    with torch.no_grad():
        a_inputs = torch.cat([torch.cat([x, torch.tanh(block.a(x)), x]) for x in batches])
    b_inputs = torch.cat(batches)
    assert stats["a"].tokens == 3 * 8 and stats["b"].tokens == 8
    torch.testing.assert_close(stats["a"].hessian, a_inputs.T @ a_inputs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["b"].hessian, b_inputs.T @ b_inputs, rtol=1e-5, atol=1e-5)


def test_a_layer_its_block_never_calls_is_one_line():
    from masking.pruning.oneshot import _gather

    block = nn.Sequential(nn.Linear(4, 4))
    unused = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="unused was never called by its block"):
        _gather(
            block,
            [("0", block[0]), ("unused", unused)],
            [((torch.randn(2, 4),), {})],
            hessian=False,
        )


@pytest.mark.parametrize("config", [LLAMA, GPT2], ids=["llama_gqa", "gpt2_conv1d"])
def test_a_pruned_language_model_exports_and_reloads_bit_exactly(tmp_path, config):
    model = _model(config)
    prune_oneshot(model, _calibration(), method="sparsegpt", granularity="2:4", forward=_forward)
    ids = _calibration()[0]
    export_pruned(
        model,
        tmp_path / "export",
        builder={"_target_": "tasks.modules.language.causal_lm", **config},
    )
    loaded = load_pruned(tmp_path / "export", builders=trusted(None))
    assert type(loaded) is type(model)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_one_line_errors():
    model = _model(LLAMA)
    with pytest.raises(ValueError, match=r"^sparsity must be .*\[0, 1\)"):
        prune_oneshot(model, _calibration(), method="wanda", sparsity=1.0, forward=_forward)
    with pytest.raises(ValueError, match=r"'n:m' with 1 <= n < m .*got '4:4'"):
        prune_oneshot(model, _calibration(), method="wanda", granularity="4:4", forward=_forward)
    with pytest.raises(
        ValueError,
        match=r"model.layers.0.self_attn.q_proj has 32 input features, not a multiple of m=12",
    ):
        prune_oneshot(model, _calibration(), method="wanda", granularity="6:12", forward=_forward)
    with pytest.raises(
        ValueError, match=r"weight \(unstructured\) or n:m for one-shot pruning, got channel"
    ):
        prune_oneshot(
            model, _calibration(), method="wanda", granularity="channel", forward=_forward
        )
    with pytest.raises(ValueError, match="method must be one of magnitude, wanda, sparsegpt"):
        prune_oneshot(model, _calibration(), method="obs", forward=_forward)
    with pytest.raises(ValueError, match=r"calibration: no batch reached the first block"):
        prune_oneshot(model, [], method="sparsegpt", forward=_forward)
    with pytest.raises(ValueError, match=r"^model: Sequential has no list of decoder blocks"):
        decoder_blocks(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="leave no linear layer"):
        prune_oneshot(model, _calibration(), method="wanda", include=["nothing*"], forward=_forward)
