"""Masks, estimators, schedules and allocation: the properties a pruning user relies on."""

from __future__ import annotations

import copy
import io
import itertools
import pickle

import pytest
import torch
from torch import nn

from masking.pruning import ESTIMATORS, Pruner, SparsitySchedule, masked_tensors, parse_granularity


def small_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


def train(net: nn.Module, pruner: Pruner, steps: int) -> None:
    """A few real optimisation steps on random data: weights by SGD, mask state by Adam."""
    mask_ids = {id(p) for p in pruner.mask_parameters()}
    weights = torch.optim.SGD([p for p in net.parameters() if id(p) not in mask_ids], lr=0.01)
    masks = torch.optim.Adam(pruner.mask_parameters(), lr=0.05) if mask_ids else None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, 8, 8, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    for step in range(steps):
        pruner.step(step)
        loss = nn.functional.cross_entropy(net(x), y) + pruner.penalty()
        weights.zero_grad()
        if masks:
            masks.zero_grad()
        loss.backward()
        weights.step()
        if masks:
            masks.step()


WEIGHT_METHODS = [m for m in ESTIMATORS if m != "slimming"]


@pytest.mark.parametrize("method", WEIGHT_METHODS)
@pytest.mark.parametrize(
    ("granularity", "sparsity"), [("weight", 0.9), ("block4x4", 0.75), ("2:4", 0.5)]
)
def test_estimators_reach_target_sparsity(method, granularity, sparsity):
    net = small_net()
    schedule = SparsitySchedule(sparsity, kind="cubic", end_step=12)
    pruner = Pruner(
        net,
        method=method,
        granularity=granularity,
        sparsity=sparsity,
        schedule=schedule,
        penalty=0.1,
    )
    train(net, pruner, 20)
    assert abs(pruner.achieved_sparsity() - sparsity) <= 0.005
    pruner.bake()
    assert not masked_tensors(net)
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert abs(zeros / sum(w.numel() for w in weights) - sparsity) <= 0.005


def test_two_four_pattern_holds_in_every_group():
    net = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16 * 36, 8))
    pruner = Pruner(net, method="movement", granularity="2:4", sparsity=0.5)
    train_input = torch.randn(2, 8, 8, 8)
    net(train_input).sum().backward()
    pruner.bake()
    conv = net[0].weight.permute(0, 2, 3, 1).reshape(-1, 4)  # groups along input channels
    assert ((conv != 0).sum(1) <= 2).all()
    linear = net[2].weight.reshape(-1, 4)
    assert ((linear != 0).sum(1) <= 2).all()


def test_learned_scores_actually_learn():
    net = small_net()
    pruner = Pruner(net, method="movement", sparsity=0.5)
    before = [s.scores.detach().clone() for s in pruner.sources]
    train(net, pruner, 5)
    assert any(not torch.equal(b, s.scores) for b, s in zip(before, pruner.sources))


def test_masked_weights_get_no_gradient_and_stay_zero_in_output():
    net = small_net()
    pruner = Pruner(net, method="magnitude", sparsity=0.8)
    pruner.step(0)
    net(torch.randn(2, 4, 8, 8)).sum().backward()
    conv = net[0]
    keep = pruner.layers[0].source.keep
    assert (conv.parametrizations.weight.original.grad[~keep] == 0).all()
    assert (conv.weight[~keep] == 0).all()


@pytest.mark.parametrize("kind", ["one_shot", "linear", "cubic"])
def test_schedules_are_monotone_and_hit_the_target(kind):
    schedule = SparsitySchedule(0.9, kind=kind, start_step=10, end_step=110, every=7)
    values = [schedule(t) for t in range(200)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[0] == 0.0
    assert values[110] == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)


def test_cubic_prunes_fast_first():
    cubic = SparsitySchedule(0.8, kind="cubic", end_step=100)
    linear = SparsitySchedule(0.8, kind="linear", end_step=100)
    assert cubic(25) > linear(25)


@pytest.mark.parametrize("method", WEIGHT_METHODS)
def test_parametrized_model_survives_copy_pickle_and_state_dict(method):
    net = small_net()
    pruner = Pruner(net, method=method, granularity="weight", sparsity=0.7)
    train(net, pruner, 3)
    net.eval()
    x = torch.randn(3, 4, 8, 8)
    expected = net(x)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert masked_tensors(clone)
        assert torch.equal(clone(x), expected)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)
    # a fresh model with the same masks attached loads the state_dict and gives the same output
    fresh = small_net()
    Pruner(fresh, method=method, granularity="weight", sparsity=0.7)
    fresh.load_state_dict(net.state_dict())
    fresh.eval()
    assert torch.equal(fresh(x), expected)


def test_global_allocation_differs_by_layer_and_layer_allocation_is_uniform():
    net = small_net()
    with torch.no_grad():
        net[0].weight.mul_(0.01)  # the first layer's weights are much smaller
    pruner = Pruner(net, method="magnitude", sparsity=0.5, allocation="global")
    pruner.step(0)
    rows = {r["layer"]: r["sparsity"] for r in pruner.layer_sparsity()}
    assert rows["0"] > 0.9 > max(rows["3"], rows["6"])
    net = small_net()
    pruner = Pruner(net, method="magnitude", sparsity=0.5, allocation="layer")
    pruner.step(0)
    assert all(abs(r["sparsity"] - 0.5) < 0.01 for r in pruner.layer_sparsity())


@pytest.mark.parametrize("method", ["movement", "hard_concrete"])
@pytest.mark.parametrize("granularity", ["weight", "block4x4"])
def test_learned_estimators_start_from_the_global_magnitude_mask(method, granularity):
    # layers of very different scales: a learned state normalised per layer would rank as if each
    # layer were pruned alike, and start far from what the global allocation means
    net = small_net()
    with torch.no_grad():
        net[0].weight.mul_(0.01)
        net[6].weight.mul_(5.0)
    keeps = {}
    for name in ("magnitude", method):
        pruner = Pruner(copy.deepcopy(net), method=name, granularity=granularity, sparsity=0.8)
        pruner.set_sparsity(0.8)
        keeps[name] = torch.cat([layer.source.keep.flatten() for layer in pruner.layers])
    assert torch.equal(keeps[method], keeps["magnitude"])


def test_exclude_by_name_and_type():
    net = small_net()
    pruner = Pruner(net, sparsity=0.5, exclude=["Linear", "0"])
    assert [layer.name for layer in pruner.layers] == ["3"]


def test_hard_concrete_gates_are_random_in_training_and_fixed_in_eval():
    net = small_net()
    pruner = Pruner(net, method="hard_concrete", sparsity=0.5, penalty=1.0)
    pruner.step(0)
    conv = net[0]
    net.train()
    assert not torch.equal(conv.weight, conv.weight)  # a fresh sample per access in training
    net.eval()
    assert torch.equal(conv.weight, conv.weight)
    assert pruner.penalty().item() > 0


def test_granularity_parsing():
    assert parse_granularity("block16x16").block == (16, 16)
    assert parse_granularity("2:4").fixed_sparsity == 0.5
    assert str(parse_granularity("channel")) == "channel"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, "sparsity must be in \\[0, 1\\)"),
        ({"sparsity": -0.1}, "sparsity must be in \\[0, 1\\)"),
        ({"sparsity": "half"}, "sparsity must be a number"),
        ({"method": "lottery"}, "method must be one of"),
        ({"granularity": "row"}, "granularity must be"),
        ({"granularity": "2:4", "sparsity": 0.9}, "sparsity must be 0.5 for granularity 2:4"),
        ({"method": "slimming"}, "needs granularity=channel"),
        ({"exclude": ["layer9.*"]}, "exclude pattern 'layer9.\\*' matches no module"),
        ({"include": ["BatchNorm2d"]}, "no prunable layer"),
        ({"allocation": "uniform"}, "allocation must be one of"),
        ({"round_to": 0}, "round_to must be an int >= 1"),
        ({"penalty": -1.0}, "penalty must be a number >= 0"),
        ({"granularity": "channel"}, "example_inputs is required"),
        ({"estimator_args": {"colour": 1}}, "estimator_args for magnitude"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pruner(small_net(), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": 1.2}, "sparsity must be in"),
        ({"target": 0.5, "kind": "exp"}, "schedule must be one of"),
        ({"target": 0.5, "kind": "linear"}, "end_step must be an int >= start_step"),
        ({"target": 0.5, "initial": 0.6, "end_step": 5}, "initial_sparsity must be <="),
    ],
)
def test_bad_schedule_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsitySchedule(**kwargs)
