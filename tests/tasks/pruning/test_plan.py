"""``pruning=`` builds a PruningPlan that rejects bad settings before any work, one line each,
and builds the schedule and the Pruner the pipeline uses."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tasks.pruning import PruningPlan
from tests.hydra_config import compose_config, options

ADAM = functools.partial(torch.optim.Adam, lr=1e-2)


def plan(**settings) -> PruningPlan:
    return PruningPlan(**{"method": "magnitude", "mask_optimizer": ADAM, **settings})


@pytest.mark.parametrize("option", [o for o in options("pruning") if not o.startswith("_")])
def test_every_pruning_option_builds_its_plan(tmp_path, option):
    built = instantiate(compose_config(tmp_path, ["task=prune", f"pruning={option}"]).pruning)
    assert isinstance(built, PruningPlan) and built.method == option
    assert isinstance(built.mask_optimizer([nn.Parameter(torch.ones(1))]), torch.optim.Optimizer)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "bogus"}, r"pruning.method must be one of .*got 'bogus'"),
        ({"sparsity": 1.0}, r"pruning.sparsity must be in \[0, 1\)"),
        ({"granularity": "2:4", "sparsity": 0.9}, "pruning.sparsity must be 0.5 for granularity"),
        ({"granularity": "diagonal"}, "pruning.granularity must be"),
        ({"schedule": "bogus"}, "pruning.schedule must be one of one_shot, linear, cubic"),
        ({"ramp": [0.5, 0.2]}, r"pruning.ramp must end at or after its start, got \[0.5, 0.2\]"),
        ({"ramp": [0.2]}, r"pruning.ramp must be \[start, end\]"),
        ({"ramp": [0.0, 1.5]}, r"pruning.ramp must be a number in \[0, 1\]"),
        ({"initial_sparsity": 0.95}, "pruning.initial_sparsity must be <= pruning.sparsity"),
        ({"update_every": 0}, "pruning.update_every must be an int >= 1"),
        ({"penalty": -1.0}, "pruning.penalty must be a number >= 0"),
        ({"finalize": "shrink"}, "pruning.finalize must be one of auto, bake, compact"),
        ({"finalize": "compact"}, "pruning.finalize=compact removes channels"),
        ({"include": "conv*"}, "pruning.include must be a list of name patterns"),
        ({"mask_optimizer": 0.01}, "pruning.mask_optimizer must be an optimizer factory"),
        (
            {"granularity": "heads", "method": "slimming"},
            r"pruning.method: pruning.granularity=heads learns head and neuron masks with one of "
            r"magnitude, taylor, movement, hard_concrete, got 'slimming'",
        ),
        ({"granularity": "heads+neurons", "include": ["encoder*"]}, "pruning.include: "),
        ({"granularity": "neurons", "round_to": 0}, "pruning.round_to must be an int >= 1"),
        ({"budget": "flops"}, "pruning.budget must be one of units, params, macs, got 'flops'"),
        ({"budget": "macs"}, "pruning.budget=macs is a budget for transformer units: it needs"),
        ({"granularity": "heads", "tokens": 0}, "pruning.tokens must be an int >= 1"),
    ],
)
def test_bad_settings_fail_at_once_naming_the_key(settings, message):
    with pytest.raises(ValueError, match=message) as error:
        plan(**settings)
    assert "\n" not in str(error.value)


def test_bad_settings_from_the_command_line_fail_before_training(tmp_path):
    from tasks import run

    cfg = compose_config(tmp_path, ["task=prune", "pruning.ramp=[0.5,0.2]"])
    with pytest.raises(ValueError, match=r"pruning\.ramp must end at or after its start"):
        run(cfg)
    assert not (tmp_path / "dense").exists()  # nothing was trained


def test_schedule_spans_the_ramp_of_the_fine_tuning():
    schedule = plan(sparsity=0.8, schedule="linear", ramp=[0.25, 0.75]).schedule(100)
    assert (schedule.start_step, schedule.end_step) == (25, 75)
    assert schedule(0) == 0.0 and schedule(50) == pytest.approx(0.4) and schedule(99) == 0.8


def test_finalize_auto_compacts_channels_and_bakes_weights():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    x = torch.rand(2, 3, 12, 12)
    weights = plan(sparsity=0.5, include=["*"])
    baked, how = weights.finalize_model(weights.attach(copy.deepcopy(net), x, 10), x)
    assert how == "bake" and isinstance(baked, nn.Sequential)
    channels = plan(granularity="channel", sparsity=0.5)
    pruner = channels.attach(net, x, 10)
    pruner.set_sparsity(0.5)
    compacted, how = channels.finalize_model(pruner, x)
    assert how == "compact" and compacted[0].out_channels == 4


def test_transformer_units_build_a_structured_pruner_on_the_same_schedule():
    from masking.models import vit_small
    from masking.pruning import StructuredPruner

    net = vit_small(num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=48, patch_size=8)
    x = torch.rand(2, 3, 32, 32)
    units = plan(granularity="heads+neurons", sparsity=0.5, method="taylor", ramp=[0.0, 0.5])
    assert str(units.granularity) == "heads+neurons" and units.granularity.structured
    units.check(copy.deepcopy(net), x)  # what the job runs before any training
    pruner = units.attach(net, x, 10)
    assert isinstance(pruner, StructuredPruner) and pruner.allocation == "layer"
    assert pruner.step(0) == 0.0 and pruner.achieved_sparsity() == 0.0
    assert 0 < pruner.step(2) < 0.5
    assert pruner.step(5) == 0.5 and pruner.achieved_sparsity() == 0.5
    assert [r["kept_units"] for r in pruner.layer_sparsity()] == [2, 24, 2, 24]
    slim, how = units.finalize_model(pruner, x)
    assert how == "compact"
    assert sum(p.numel() for p in slim.parameters()) == pruner.report()["parameters_after"]
    heads = plan(granularity="heads", sparsity=0.25).structured_options()
    assert heads["heads"] == 0.25 and "neurons" not in heads
    macs = plan(granularity="heads+neurons", sparsity=0.5, budget="macs", tokens=5)
    pruner = macs.attach(vit_small(num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=48), x, 10)
    assert (pruner.budget, pruner.tokens) == (("macs", 0.5), 5)
    pruner.set_sparsity(0.5)
    report = pruner.report(tokens=5)
    assert report["structure_macs_after"] <= 0.5 * report["structure_macs_before"]
    rounded = plan(granularity="neurons", sparsity=0.3, round_to=8)
    pruner = rounded.attach(vit_small(num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=48), x, 10)
    pruner.set_sparsity(0.3)  # 48 - 14 = 34 neurons kept, rounded up to 40
    assert [r["kept_units"] for r in pruner.layer_sparsity()] == [40, 40]


def test_transformer_units_on_a_network_without_attention_name_what_is_missing():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    message = r"^pruning.granularity=heads: no heads found: the model has none of the supported"
    with pytest.raises(ValueError, match=message):
        plan(granularity="heads", sparsity=0.5).check(net, torch.rand(2, 3, 8, 8))
