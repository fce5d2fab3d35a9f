"""Learned masks on GPT-2, whose projections are Hugging Face ``Conv1D`` layers storing their weight
as ``(in, out)``: every mask is defined on the ``(out, in)`` view, as for ``nn.Linear`` and the
one-shot pruners, so n:m groups run along input features (dim 0 of the stored weight), a one-shot
prior is reproduced exactly, and the masked, baked and copied models compute the same."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from masking.pruning import Pruner, SparsitySchedule
from masking.pruning.oneshot import linear_weight, oneshot_keep, prune_oneshot
from tasks.modules.language import causal_lm, lm_loss

pytest.importorskip("transformers")

GPT2 = {"family": "gpt2", "vocab_size": 128, "n_embd": 32, "n_layer": 2, "n_head": 4}
PROJECTIONS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def gpt2() -> nn.Module:
    torch.manual_seed(0)
    return causal_lm(**GPT2, n_positions=64).eval()


def token_batches(count: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return list(torch.randint(0, GPT2["vocab_size"], (2 * count, 16), generator=g).split(2))


def projections(model: nn.Module) -> dict[str, nn.Module]:
    """Every block's four Conv1D projections by qualified name."""
    named = dict(model.named_modules())
    names = [f"transformer.h.{i}.{p}" for i in range(GPT2["n_layer"]) for p in PROJECTIONS]
    assert all(type(named[n]).__name__.endswith("Conv1D") for n in names)
    return {name: named[name] for name in names}


def fine_tune(model: nn.Module, pruner: Pruner, steps: int = 3) -> None:
    """A few steps of next-token training of the masks (and the weights, unless frozen)."""
    groups = [{"params": pruner.mask_parameters(), "lr": 0.05}]
    if pruner.weight_parameters():
        groups.append({"params": pruner.weight_parameters(), "lr": 1e-3})
    optimizer = torch.optim.Adam(groups)
    model.train()
    for step, ids in zip(range(steps), token_batches(steps)):
        pruner.step(step)
        optimizer.zero_grad()
        lm_loss(model, ids).backward()
        for parameter in pruner.mask_parameters():  # (maskllm's samples harden as τ anneals)
            assert parameter.grad is not None and (step > 0 or parameter.grad.abs().sum() > 0)
        optimizer.step()
    model.eval()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_maskllm_learns_an_exact_n_m_pattern_along_conv1d_input_features(n, m):
    model = gpt2()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    steps = 4
    schedule = SparsitySchedule(0.5, kind="one_shot", end_step=steps - 1)
    pruner = Pruner(
        model,
        method="maskllm",
        granularity=f"{n}:{m}",
        sparsity=0.5,
        schedule=schedule,
        exclude=["lm_head"],
    )
    assert [layer.name for layer in pruner.layers] == list(projections(model))
    for layer in pruner.layers:  # the logits are per group of the (out, in) view
        out_features, in_features = layer.module.weight.shape[::-1]
        assert layer.source.logits.shape[:2] == (out_features, in_features // m)
    fine_tune(model, pruner, steps)
    ids = token_batches(3)[-1]
    with torch.no_grad():
        masked = model(ids).logits
        copied = copy.deepcopy(model)(ids).logits
    baked = pruner.bake()
    with torch.no_grad():
        assert torch.equal(baked(ids).logits, masked)
    assert torch.equal(copied, masked)
    for name, module in projections(baked).items():
        stored = module.weight  # (in, out): the groups run along dim 0
        groups = (stored.t() != 0).reshape(stored.shape[1], -1, m)
        assert torch.all(groups.sum(-1) == n), name
        kept = stored != 0
        assert torch.equal(stored[kept], dense[f"{name}.weight"][kept]), name  # frozen weights
    assert pruner.achieved_sparsity() == pytest.approx(1 - n / m)


@pytest.mark.parametrize("method", ["sparsegpt", "magnitude"])
def test_a_one_shot_prior_is_the_hard_mask_at_the_start(method):
    model = gpt2()
    dense = copy.deepcopy(model)
    result = prune_oneshot(
        copy.deepcopy(model),
        token_batches(),
        method=method,
        granularity="2:4",
        forward=lambda net, ids: net(ids, use_cache=False),
    )
    pruner = Pruner(model, method="maskllm", granularity="2:4", sparsity=0.5, exclude=["lm_head"])
    for layer in pruner.layers:
        layer.source.set_prior(result.masks[layer.name])
    pruner.set_sparsity(0.5)
    model.eval()
    magnitude_masks = []
    for layer in pruner.layers:
        prior = result.masks[layer.name]  # (out, in): oneshot's view of the Conv1D
        assert torch.equal(layer.source.hard(), prior), layer.name
        assert torch.equal(linear_weight(layer.module) != 0, prior), layer.name
        weight = linear_weight(dense.get_submodule(layer.name)).detach()
        magnitude_masks.append(torch.equal(prior, oneshot_keep(weight.abs(), "2:4")))
    # SparseGPT's prior is not the magnitude mask maskllm would start from without one
    assert all(magnitude_masks) == (method == "magnitude")


@pytest.mark.parametrize("method", ["movement", "hard_concrete"])
def test_learned_weight_masks_reach_the_target_sparsity_on_gpt2(method):
    model = gpt2()
    steps = 4
    schedule = SparsitySchedule(0.6, kind="linear", start_step=0, end_step=steps - 1)
    pruner = Pruner(
        model,
        method=method,
        sparsity=0.6,
        schedule=schedule,
        exclude=["lm_head"],
        penalty=1.0 if method == "hard_concrete" else 0.0,
    )
    fine_tune(model, pruner, steps)
    pruner.set_sparsity(0.6)
    ids = token_batches(1)[0]
    with torch.no_grad():
        masked = model(ids).logits
    keeps = {layer.name: layer.source.keep.clone() for layer in pruner.layers}
    baked = pruner.bake()
    with torch.no_grad():
        assert torch.equal(baked(ids).logits, masked)
    zeros = total = 0
    for name, module in projections(baked).items():
        assert keeps[name].shape == linear_weight(module).shape, name  # the (out, in) view
        assert torch.equal(linear_weight(module) != 0, keeps[name]), name
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    assert zeros / total == pytest.approx(0.6, abs=1e-4)
    assert pruner.achieved_sparsity() == pytest.approx(zeros / total)


def test_block_masks_tile_the_out_in_view():
    model = gpt2()
    Pruner(model, granularity="block4x8", sparsity=0.5, exclude=["lm_head"]).bake()
    for name, module in projections(model).items():
        view = linear_weight(module)
        tiles = (view != 0).reshape(view.shape[0] // 4, 4, view.shape[1] // 8, 8)
        kept = tiles.sum((1, 3))
        assert torch.all((kept == 0) | (kept == 32)), name  # whole 4 × 8 tiles of (out, in)


def test_channel_granularity_refuses_conv1d_in_one_line():
    with pytest.raises(ValueError, match=r"^granularity=channel: Hugging Face Conv1D layers "):
        Pruner(
            gpt2(),
            granularity="channel",
            sparsity=0.5,
            exclude=["lm_head"],
            example_inputs=token_batches(1)[0],
        )
