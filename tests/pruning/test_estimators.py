"""Mask estimators: they start from the magnitude order, learn, and their masks mean what they say."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from masking.pruning import ESTIMATORS, Pruner, SparsitySchedule, parse_granularity
from masking.pruning.estimators import (
    HardConcreteMask,
    LearnedNMMask,
    MagnitudeMask,
    MagnitudeStats,
    MovementMask,
    SlimmingMask,
    STRMask,
    TaylorMask,
)
from tests.helpers.pruning import small_net, train


def magnitude(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Distinct magnitudes spread over three decades."""
    g = torch.Generator().manual_seed(seed)
    return 10 ** (3 * torch.rand(n, generator=g) - 2)


def test_registry_names_every_estimator_by_its_name():
    assert {
        "magnitude": MagnitudeMask,
        "movement": MovementMask,
        "taylor": TaylorMask,
        "hard_concrete": HardConcreteMask,
        "str": STRMask,
        "slimming": SlimmingMask,
        "maskllm": LearnedNMMask,
    } == ESTIMATORS
    learned = {name for name, cls in ESTIMATORS.items() if cls.learned}
    assert learned == {"movement", "hard_concrete", "str", "maskllm"}
    stochastic = {name for name, cls in ESTIMATORS.items() if cls.stochastic}
    assert stochastic == {"hard_concrete", "maskllm"}
    assert {name for name, cls in ESTIMATORS.items() if cls.freezes_weights} == {"maskllm"}


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "maskllm"])
def test_importance_starts_in_the_magnitude_order(name):
    mag = magnitude()
    source = ESTIMATORS[name]((64,), mag)
    assert torch.equal(source.importance().argsort(), mag.argsort())
    assert source.keep.shape == (64,) and source.keep.all()


@pytest.mark.parametrize("cls", [MovementMask, HardConcreteMask])
def test_shared_statistics_keep_the_order_across_sources(cls):
    # two layers of very different scales: scaled by shared statistics, the learned state of the
    # two compares like their magnitudes do
    small, large = magnitude(32) * 1e-3, magnitude(32, seed=1)
    stats = MagnitudeStats.of([small, large])
    sources = [cls((32,), m, stats=stats) for m in (small, large)]
    together = torch.cat([s.importance() for s in sources])
    assert torch.equal(together.argsort(), torch.cat([small, large]).argsort())


def test_magnitude_stats():
    stats = MagnitudeStats.of([torch.tensor([1.0, 100.0]), torch.tensor([10.0])])
    assert stats.mean == pytest.approx(37.0)
    assert stats.log_mean == pytest.approx(torch.tensor(10.0).log().item())
    assert stats.log_std == pytest.approx(torch.tensor([0.0, 2.0, 1.0]).std().item() * 2.302585)
    single = MagnitudeStats.of([torch.tensor([0.0])])
    assert single.mean == 1e-12 and single.log_std == 1.0  # never a division by zero


def test_movement_mask_is_hard_and_passes_gradients_straight_through():
    source = MovementMask((6,), magnitude(6))
    source.keep.copy_(torch.tensor([True, False, True, False, True, True]))
    mask = source.mask(None, resample=False)
    assert torch.equal(mask, source.keep.float())
    (mask * torch.arange(6.0)).sum().backward()
    assert torch.equal(source.scores.grad, torch.arange(6.0))  # dropped entries learn too


def test_hard_concrete_gates_sample_in_training_and_are_fixed_in_eval():
    source = HardConcreteMask((256,), magnitude(256))
    source.train()
    first, again = source.mask(None, resample=True), source.mask(None, resample=False)
    assert torch.equal(first, again)  # coupled parameters share the sample of the pass
    assert not torch.equal(first, source.mask(None, resample=True))
    assert ((first >= 0) & (first <= 1)).all()
    source.eval()
    gate = (torch.sigmoid(source.log_alpha) * 1.2 - 0.1).clamp(0, 1)
    torch.testing.assert_close(source.mask(None, resample=True), gate)
    total, count = source.penalty()
    assert count == 256 and 0 < float(total) / count < 1
    total.backward()
    assert (source.log_alpha.grad > 0).all()  # the L0 penalty closes every gate


def test_hard_concrete_noise_is_never_saved():
    source = HardConcreteMask((8,), magnitude(8)).train()
    source.mask(None, resample=True)
    assert source._noise is not None
    assert pickle.loads(pickle.dumps(source))._noise is None
    assert copy.deepcopy(source)._noise is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ({"stretch": (0.1, 1.1)}, r"stretch must be \(γ < 0, ζ > 1\)"),
    ],
)
def test_bad_hard_concrete_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HardConcreteMask((4,), magnitude(4), **kwargs)


def test_str_zeroes_weights_below_its_threshold_and_shrinks_the_rest():
    weight = torch.tensor([-2.0, -0.5, 0.1, 0.3, 1.0, 4.0])
    source = STRMask((6,), weight.abs(), init=0.0)  # τ = σ(0)·mean|W| = 0.65
    tau = float(source.threshold())
    assert tau == pytest.approx(0.5 * weight.abs().mean().item())
    product = weight * source.mask(weight, resample=False)
    expected = weight.sign() * (weight.abs() - tau).clamp_min(0)
    torch.testing.assert_close(product, expected)
    value, count = source.penalty()
    assert count == 1 and float(value) == 0.0  # s² at s = 0


def test_keep_float_is_converted_again_only_after_keep_changes():
    source = MagnitudeMask((5,), magnitude(5))
    first = source.keep_float()
    assert source.keep_float() is first
    source.keep[2] = False
    second = source.keep_float()
    assert second is not first and torch.equal(second, source.keep.float())


def test_taylor_score_is_the_gradient_times_weight_of_each_entry():
    # element-granular on a linear: the probe's gradient is exactly ∂L/∂W ⊙ W
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4))
    reference = copy.deepcopy(net[0])
    pruner = Pruner(net, method="taylor", sparsity=0.5, estimator_args={"momentum": 0.0})
    source = pruner.layers[0].source
    assert torch.equal(source.importance(), reference.weight.detach().abs())  # nothing seen yet
    x = torch.randn(5, 6)
    net(x).pow(2).sum().backward()
    reference(x).pow(2).sum().backward()
    expected = (reference.weight.grad * reference.weight.detach()).abs()
    torch.testing.assert_close(source.importance(), expected)
    assert int(source.seen) == 1
    # evaluation forwards add no probe and record nothing
    net.eval()
    net(x)
    assert int(source.seen) == 1


def test_taylor_averages_over_batches_and_one_probe_covers_every_member():
    source = TaylorMask((3,), torch.ones(3), momentum=0.5).train()
    first = source.mask(None, resample=True)
    second = source.mask(None, resample=False)  # a second parameter of the same forward
    (first * torch.tensor([1.0, -2.0, 0.0])).sum().add((second * 3.0).sum()).backward()
    torch.testing.assert_close(source.score, torch.tensor([4.0, 1.0, 3.0]))
    source.mask(None, resample=True).mul(torch.tensor([0.0, 1.0, 1.0])).sum().backward()
    torch.testing.assert_close(source.score, torch.tensor([2.0, 1.0, 2.0]))
    assert pickle.loads(pickle.dumps(source))._probe is None
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1.0"):
        TaylorMask((3,), torch.ones(3), momentum=1.0)


def test_learned_scores_actually_learn():
    net = small_net()
    pruner = Pruner(net, method="movement", sparsity=0.5)
    before = [s.scores.detach().clone() for s in pruner.sources]
    train(net, pruner, 5)
    assert any(not torch.equal(b, s.scores) for b, s in zip(before, pruner.sources))


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


def _maskllm(prior=None, **options):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 16, generator=g)
    source = LearnedNMMask(
        weight.shape, weight.abs(), granularity=parse_granularity("2:4"), **options
    )
    if prior is not None:
        source.set_prior(prior)
    return source, weight


def test_maskllm_starts_at_its_prior_and_evaluates_to_an_exact_n_m_mask():
    source, weight = _maskllm()
    groups = weight.abs().reshape(6, 4, 4)
    top = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, -1).indices, True)
    assert torch.equal(source.hard(), top.reshape(6, 16))  # the default prior: magnitude's 2:4
    g = torch.Generator().manual_seed(1)
    other = torch.zeros(6, 4, 4, dtype=torch.bool)
    other.scatter_(-1, torch.rand(6, 4, 4, generator=g).topk(2, -1).indices, True)
    source.set_prior(other.reshape(6, 16))
    assert torch.equal(source.hard(), other.reshape(6, 16))
    source.eval()
    assert torch.equal(source.mask(None, False), other.reshape(6, 16).float())


def test_maskllm_samples_soft_masks_that_harden_as_the_temperature_anneals():
    # κ = 1: the temperature alone decides how soft the samples are (the default κ = 10 starts
    # them close to the prior's pattern)
    source, _ = _maskllm(temperature=(4.0, 0.05), logit_scale=1.0)
    source.train()
    soft = source.mask(None, True)
    assert soft.min() >= 0 and soft.max() <= 1
    # every group keeps n in expectation: a mixture of patterns that each keep n
    assert torch.allclose(soft.reshape(6, 4, 4).sum(-1), torch.full((6, 4), 2.0), atol=1e-5)
    assert 0.01 < float(soft.reshape(6, 4, 4).std(-1).mean()) < 0.45  # undecided at τ = 4
    source.anneal(1.0)
    assert source.temperature == pytest.approx(0.05)
    hard = source.mask(None, True)
    assert float((hard - hard.round()).abs().mean()) < 0.05  # nearly one pattern per group
    (hard * torch.randn_like(hard)).sum().backward()
    assert source.logits.grad is not None and source.logits.grad.abs().sum() > 0


def test_maskllm_needs_an_n_m_granularity_and_linear_weights():
    with pytest.raises(ValueError, match="maskllm learns n:m masks: it needs granularity=n:m"):
        LearnedNMMask((4, 8), torch.ones(4, 8), granularity=parse_granularity("weight"))
    with pytest.raises(ValueError, match="linear weights"):
        LearnedNMMask((4, 8, 3, 3), torch.ones(4, 8, 3, 3), granularity=parse_granularity("2:4"))


def test_maskllm_trains_only_its_logits_and_ends_in_the_pattern():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    before = copy.deepcopy(net.state_dict())
    schedule = SparsitySchedule(0.5, kind="one_shot", end_step=19)
    pruner = Pruner(net, method="maskllm", granularity="2:4", sparsity=0.5, schedule=schedule)
    assert pruner.freezes_weights and pruner.weight_parameters() == []
    optimizer = torch.optim.Adam(pruner.mask_parameters(), lr=0.1)
    x, y = torch.randn(64, 16), torch.randn(64, 4)
    for step in range(20):
        pruner.step(step)
        loss = (net(x) - y).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    baked = pruner.bake()
    for name in ("0.weight", "2.weight"):
        weight = baked.state_dict()[name]
        assert torch.all((weight != 0).reshape(weight.shape[0], -1, 4).sum(-1) == 2)
        kept = weight != 0
        assert torch.equal(weight[kept], before[name][kept])  # the weights themselves never moved
