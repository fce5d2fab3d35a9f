"""The pruning job through run(cfg): report, export, cache, structured compaction, bad input."""

from __future__ import annotations

import pytest
import torch

from masking.pruning.export import load_pruned
from tasks import run
from tests.helpers.jobs import prune_fast, read_json
from tests.hydra_config import compose_config, options


def test_unstructured_run_reports_exports_and_caches_the_dense_model(tmp_path):
    overrides = [*prune_fast(tmp_path), "pruning=movement", "pruning.sparsity=0.8"]
    value = run(compose_config(tmp_path / "a", overrides))
    run_dir = tmp_path / "a"
    metrics, report = read_json(run_dir / "metrics.json"), read_json(run_dir / "prune_report.json")
    assert value == metrics["final/acc"]
    assert abs(report["achieved_sparsity"] - 0.8) <= 0.005
    # baking is exact: the final model classifies like the masked one did
    assert report["accuracy"]["final"] == report["accuracy"]["masked_after_finetune"]
    assert report["final"]["nonzero_params"] < 0.3 * report["dense"]["params"]
    assert set(report["final"]["latency_ms"]) == {"batch_1", "batch_4"}
    assert "| final |" in (run_dir / "prune_report.md").read_text()
    assert len(report["layers"]) == 21  # 20 convolutions and the classifier
    model = load_pruned(run_dir / "export")
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    assert nonzero == report["final"]["nonzero_params"]
    cached = list((tmp_path / "cache").glob("dense-*.pt"))
    assert len(cached) == 1
    # the second run starts from the cached dense model: same dense accuracy, no retraining
    run(compose_config(tmp_path / "b", [*overrides, "pruning=magnitude"]))
    assert read_json(tmp_path / "b" / "metrics.json")["dense/acc"] == metrics["dense/acc"]
    assert list((tmp_path / "cache").glob("dense-*.pt")) == cached


def test_structured_run_compacts_to_fewer_macs(tmp_path):
    overrides = [*prune_fast(tmp_path), "pruning=slimming", "pruning.sparsity=0.5"]
    run(compose_config(tmp_path, overrides))
    report = read_json(tmp_path / "prune_report.json")
    assert report["finalize"] == "compact"
    assert abs(report["achieved_sparsity"] - 0.5) <= 0.005
    assert report["mac_reduction"] > 3.0  # half the channels in and out: about 4x
    assert report["final"]["params"] < 0.35 * report["dense"]["params"]
    assert report["accuracy"]["final"] == report["accuracy"]["masked_after_finetune"]
    model = load_pruned(tmp_path / "export")
    assert sum(p.numel() for p in model.parameters()) == report["final"]["params"]
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("option", [o for o in options("pruning") if not o.startswith("_")])
def test_every_pruning_option_composes(tmp_path, option):
    cfg = compose_config(tmp_path, ["task=prune", f"pruning={option}"])
    assert cfg.pruning.method == option
    assert cfg.net._target_.endswith("resnet18_cifar") and cfg.data._target_.endswith("Module")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pruning.sparsity=1.0", r"sparsity must be in \[0, 1\)"),
        ("pruning.exclude=[layer9]", "exclude pattern 'layer9' matches no module"),
        ("pruning.finalize=shrink", "pruning.finalize must be one of"),
        ("task.pretrained=/nonexistent/weights.pt", "task.pretrained: no file at"),
    ],
)
def test_bad_pruning_input_is_named(tmp_path, override, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(compose_config(tmp_path, [*prune_fast(tmp_path), override]))


def test_batchnorm_recalibration_uses_deterministic_gates():
    from masking.pruning import Pruner
    from tasks.pruning import recalibrate_batchnorm

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )
    net(torch.randn(2, 3, 8, 8))
    Pruner(net, method="hard_concrete", sparsity=0.5).step(0)
    batches = [(torch.randn(4, 3, 8, 8), torch.zeros(4)) for _ in range(3)]
    assert recalibrate_batchnorm(net, batches, 2) == 2
    assert net.training  # the flag it had
    bn = net[1]
    assert int(bn.num_batches_tracked) == 2
    net.eval()
    with torch.no_grad():  # the statistics are the plain average over the two batches' features
        features = [net[0](x) for x, _ in batches[:2]]
    expected = torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1
