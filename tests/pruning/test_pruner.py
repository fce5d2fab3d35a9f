"""Masks, estimators, schedules and allocation: the properties a pruning user relies on."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from masking.pruning import ESTIMATORS, Pruner, SparsitySchedule, masked_tensors, parse_granularity
from tests.helpers.pruning import small_net, train

# every estimator that takes any weight granularity (slimming ranks channels by BatchNorm scales;
# maskllm learns n:m choices of linear layers: tests/pruning/test_estimators.py)
WEIGHT_METHODS = [m for m in ESTIMATORS if m not in ("slimming", "maskllm")]


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


def test_masked_weights_get_no_gradient_and_stay_zero_in_output():
    net = small_net()
    pruner = Pruner(net, method="magnitude", sparsity=0.8)
    pruner.step(0)
    net(torch.randn(2, 4, 8, 8)).sum().backward()
    conv = net[0]
    keep = pruner.layers[0].source.keep
    assert (conv.parametrizations.weight.original.grad[~keep] == 0).all()
    assert (conv.weight[~keep] == 0).all()


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


def test_exclude_by_name_and_type():
    net = small_net()
    pruner = Pruner(net, sparsity=0.5, exclude=["Linear", "0"])
    assert [layer.name for layer in pruner.layers] == ["3"]


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
