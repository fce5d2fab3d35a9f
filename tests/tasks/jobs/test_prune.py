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


def vit_fast(tmp_path) -> list[str]:
    """experiment=prune_vit on a 2-block ViT of 4 heads and 16-px digits, its dense model cached
    in ``tmp_path``."""
    return [
        "experiment=prune_vit",
        "logger=none",
        "net.num_layers=2",
        "net.hidden_dim=32",
        "net.num_heads=4",
        "net.mlp_dim=48",
        "net.image_size=16",
        "data.size=16",
        "data.batch_size=32",
        "task.dense_epochs=2",
        "task.finetune_epochs=2",
        "+trainer.limit_train_batches=8",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "task.latency.batches=[1,4]",
        f"task.cache_dir={tmp_path / 'cache'}",
    ]


def test_vit_run_removes_heads_and_neurons_and_exports_the_smaller_vit(tmp_path):
    from masking.layers import SlimMultiheadAttention

    run(compose_config(tmp_path, vit_fast(tmp_path)))
    report = read_json(tmp_path / "prune_report.json")
    assert (report["method"], report["granularity"]) == ("taylor", "heads+neurons")
    assert report["finalize"] == "compact" and report["achieved_sparsity"] == 0.5
    assert [(r["kind"], r["units"], r["kept_units"]) for r in report["layers"]] == [
        ("heads", 4, 2),
        ("neurons", 48, 24),
    ] * 2
    # half the heads and neurons of each block: the blocks' MACs halve (attention products
    # included, 2 x 5 x 5 x 32), the patch embedding (3 x 64 x 32 x 4) and the classifier do not
    blocks = 2 * (5 * 4 * 32 * 32 + 2 * 5 * 32 * 48 + 2 * 5 * 5 * 32)
    dense_macs = report["dense"]["macs"]
    assert dense_macs == 3 * 64 * 32 * 4 + blocks + 32 * 10
    assert report["final"]["macs"] == dense_macs - blocks // 2
    # per block: 2 heads' q, k, v rows (3 x 16 x 33) and out_proj columns (16 x 32), 24 neurons'
    # rows with biases (24 x 33) and columns (24 x 32)
    removed = 2 * (3 * 16 * 33 + 16 * 32 + 24 * 33 + 24 * 32)
    assert report["final"]["params"] == report["dense"]["params"] - removed
    # compaction is exact (checked to 1e-5 before export): at most one image moves
    final, masked = report["accuracy"]["final"], report["accuracy"]["masked_after_finetune"]
    assert abs(final - masked) <= 100 / 359 + 1e-9
    assert "speedup" in report["onnxruntime"]  # the ViT exports at its fixed image size
    model = load_pruned(tmp_path / "export")
    attentions = [m for m in model.modules() if isinstance(m, SlimMultiheadAttention)]
    assert [m.num_heads for m in attentions] == [2, 2]
    assert sum(p.numel() for p in model.parameters()) == report["final"]["params"]
    assert model(torch.rand(3, 3, 16, 16)).shape == (3, 10)
    assert (
        "| encoder.layers.encoder_layer_0.self_attention (heads) | 4 | 2 | 0.500 |"
        in (tmp_path / "prune_report.md").read_text()
    )


def test_vit_run_narrows_the_hidden_width_and_exports_the_narrower_vit(tmp_path):
    overrides = ["pruning.granularity=hidden+neurons", "pruning.sparsity=0.25"]
    run(compose_config(tmp_path, [*vit_fast(tmp_path), *overrides]))
    report = read_json(tmp_path / "prune_report.json")
    assert report["granularity"] == "neurons+hidden" and report["finalize"] == "compact"
    assert [(r["kind"], r["units"], r["kept_units"]) for r in report["layers"]] == [
        ("hidden", 32, 24),
        *[("neurons", 48, 40)] * 2,  # 36, rounded up to the experiment's round_to of 8
    ]
    # a 24-wide stream: the patch embedding, every projection's stream side and the classifier
    # narrow; the attention's inner width (4 heads of 8) and the products over 5 tokens do not
    block = 5 * 96 * 24 + 5 * 24 * 32 + 2 * 5 * 5 * 32 + 2 * 5 * 40 * 24
    assert report["final"]["macs"] == 3 * 64 * 24 * 4 + 2 * block + 24 * 10
    norm = 2 * 24
    block_params = 2 * norm + 96 * 24 + 96 + 24 * 32 + 24 + 40 * 24 + 40 + 24 * 40 + 24
    embedding = 24 * 3 * 64 + 24 + 24 + 5 * 24  # patch conv, class token, positions
    params = embedding + 2 * block_params + norm + 24 * 10 + 10
    assert report["final"]["params"] == params
    final, masked = report["accuracy"]["final"], report["accuracy"]["masked_after_finetune"]
    assert abs(final - masked) <= 100 / 359 + 1e-9  # compaction is exact (checked to 1e-5)
    model = load_pruned(tmp_path / "export")
    assert sum(p.numel() for p in model.parameters()) == params and model.hidden_dim == 24
    assert model(torch.rand(3, 3, 16, 16)).shape == (3, 10)
    assert (
        "| residual stream (hidden) | 32 | 24 | 0.250 |"
        in (tmp_path / "prune_report.md").read_text()
    )


def test_vit_run_thins_every_head_and_exports_the_thinner_vit(tmp_path):
    from masking.layers import SlimMultiheadAttention

    overrides = ["pruning.granularity=head_dims", "pruning=magnitude"]
    run(compose_config(tmp_path, [*vit_fast(tmp_path), *overrides]))
    report = read_json(tmp_path / "prune_report.json")
    assert report["granularity"] == "head_dims" and report["finalize"] == "compact"
    # 4 heads of 8 query/key and 8 value features: half of the 64 go, whole ones of every head
    assert [(r["kind"], r["units"], r["kept_units"]) for r in report["layers"]] == [
        ("head_dims", 64, 32)
    ] * 2
    # a query/key feature costs its q and k rows and a score per token pair, a value feature
    # its v row, its out_proj column and a weighted sum per token pair: the same, so the MACs are
    # known whichever split each block learned
    feature = 2 * 5 * 32 + 5 * 5
    dense_macs = report["dense"]["macs"]
    assert report["final"]["macs"] == dense_macs - 2 * 32 * feature
    final, masked = report["accuracy"]["final"], report["accuracy"]["masked_after_finetune"]
    assert abs(final - masked) <= 100 / 359 + 1e-9  # compaction is exact (checked to 1e-5)
    model = load_pruned(tmp_path / "export")
    attentions = [m for m in model.modules() if isinstance(m, SlimMultiheadAttention)]
    assert [m.num_heads for m in attentions] == [4, 4]
    assert all(m.head_dim + m.value_dim == 8 for m in attentions)
    assert sum(p.numel() for p in model.parameters()) == report["final"]["params"]
    assert model(torch.rand(3, 3, 16, 16)).shape == (3, 10)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pruning=slimming", "pruning.method: pruning.granularity=heads\\+neurons learns head"),
        ("net=resnet18_cifar", "pruning.granularity=heads\\+neurons: no heads or neurons found"),
    ],
)
def test_bad_vit_pruning_input_is_one_line_before_training(tmp_path, override, message):
    with pytest.raises(ValueError, match=message) as error:
        run(compose_config(tmp_path, [*vit_fast(tmp_path)[:2], override]))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "dense").exists()
