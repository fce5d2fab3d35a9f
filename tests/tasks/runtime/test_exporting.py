"""Exports leave PyTorch as plain ops and compute what PyTorch computes: ONNX in onnxruntime and
``torch.export`` programs, for the default inpainting U-Net, a compacted ResNet and a baked sparse
one, at two batch sizes and two image sizes each; a model that cannot be exported is one line, and
a failed check writes nothing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from datamodules.digits import load_digits_tensors
from masking.models import GatedGenerator, resnet18_cifar
from masking.programs import export_program
from masking.pruning import Pruner, SparseLinear, channel_groups, compact
from tasks.jobs.export import inpainting_inputs
from tasks.runtime.exporting import (
    Refiner,
    export_checked,
    exportable,
    onnx_latency_pair,
    onnx_session,
    signature_for,
    tolerance,
)
from tests.helpers.pruning import random_keep, randomise_norms
from tests.hydra_config import compose_config

RTOL, ATOL = tolerance(torch.float32)


def digits(batch: int, size: int = 32) -> torch.Tensor:
    """Real digit images as the pruning job feeds them: grey in three channels, at ``size``."""
    images, _ = load_digits_tensors()
    x = images[:batch].float().reshape(-1, 1, 8, 8) / 16
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)


def assert_close_to_pytorch(model: nn.Module, got: list, inputs: tuple) -> None:
    with torch.no_grad():
        want = model(*inputs)
    want = list(want) if isinstance(want, tuple) else [want]
    for w, g in zip(want, got):
        g = torch.as_tensor(np.asarray(g))
        assert g.shape == w.shape
        bound = ATOL + RTOL * float(w.abs().max())
        assert float((g - w).abs().max()) <= bound


def run_everywhere(model: nn.Module, path, sizes, batches, make) -> None:
    """The ONNX file in onnxruntime at every (batch, size), against PyTorch."""
    session = onnx_session(path)
    names = [i.name for i in session.get_inputs()]
    for batch in batches:
        for size in sizes:
            inputs = make(batch, size)
            got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
            assert_close_to_pytorch(model, got, inputs)


@pytest.fixture(scope="module")
def default_unet():
    """The default job's U-Net (conf/net/pconv_unet.yaml), random weights, statistics away from
    the identity."""
    cfg = compose_config(None, [])
    net = instantiate(cfg.net).eval()
    randomise_norms(net)
    return net


def test_the_default_unet_exports_as_plain_onnx_and_matches_pytorch(default_unet, tmp_path):
    # the default U-Net refines fill_holes' fill: its refining part is what exports
    model, inputs, prepare = exportable(default_unet, inpainting_inputs())
    assert prepare is not None and isinstance(model, Refiner)
    signature = signature_for(model, inputs)
    assert signature.input_names == ["filled", "mask"]
    result = export_checked(model, signature, tmp_path / "unet.onnx")
    assert [c["shapes"][0] for c in result["checks"]] == [[1, 3, 256, 256], [2, 3, 320, 320]]
    import onnx

    ops = {node.op_type for node in onnx.load(tmp_path / "unet.onnx").graph.node}
    assert "Conv" in ops and not any("masking" in op for op in ops)

    def make(batch, size):
        images, masks = inpainting_inputs(batch=2, size=size)
        index = torch.arange(batch) % 2
        return prepare(images[index], masks[index])

    run_everywhere(model, tmp_path / "unet.onnx", (192, 256), (1, 3), make)


def compacted_resnet() -> nn.Module:
    net = resnet18_cifar(num_classes=10, width=16).eval()
    randomise_norms(net)
    example = digits(2)
    groups = channel_groups(net, example, ignored=[nn.Linear])
    return compact(net, example, random_keep(groups), ignored=[nn.Linear]).eval()


def baked_sparse_resnet() -> nn.Module:
    net = resnet18_cifar(num_classes=10, width=16).eval()
    randomise_norms(net)
    return Pruner(net, method="magnitude", granularity="weight", sparsity=0.9).bake().eval()


@pytest.mark.parametrize("build", [compacted_resnet, baked_sparse_resnet])
def test_pruned_classifiers_match_pytorch_in_onnxruntime(build, tmp_path):
    net = build()
    zeros = sum(int((p == 0).sum()) for p in net.parameters())
    if build is baked_sparse_resnet:
        assert zeros > 0.8 * sum(p.numel() for p in net.parameters() if p.dim() > 1)
    path = tmp_path / "model.onnx"
    export_checked(net, signature_for(net, digits(8)), path)
    run_everywhere(net, path, (32, 48), (1, 4), lambda b, s: (digits(b, s),))


def test_a_vit_with_fewer_heads_exports_at_its_fixed_size(tmp_path):
    from masking.models import vit_small
    from masking.pruning import StructuredPruner

    torch.manual_seed(0)
    net = vit_small(num_layers=2, hidden_dim=32, num_heads=4, mlp_dim=48, patch_size=8).eval()
    example = digits(8)
    net = StructuredPruner(net, heads=0.5, neurons=0.5).compact(example).eval()
    signature = signature_for(net, example)  # the position embedding fixes the image size
    path = tmp_path / "vit.onnx"
    export_checked(net, signature, path)
    run_everywhere(net, path, (32,), (1, 5), lambda b, s: (digits(b, s),))


def test_a_torch_export_program_reloads_and_matches(tmp_path):
    net = compacted_resnet()
    path = tmp_path / "model.pt2"
    result = export_checked(net, signature_for(net, digits(8)), path, "torch_export")
    assert result["format"] == "torch_export" and path.stat().st_size == result["bytes"]
    program = torch.export.load(str(path)).module()
    for batch, size in ((1, 32), (3, 40)):
        x = digits(batch, size)
        with torch.no_grad():
            assert_close_to_pytorch(net, [program(x)], (x,))


@pytest.mark.slow
def test_the_gated_generator_exports_both_outputs(tmp_path):
    net = GatedGenerator(width=8).eval()
    signature = signature_for(net, inpainting_inputs(size=64))
    assert signature.output_names == ["coarse", "refined"]
    export_checked(net, signature, tmp_path / "gated.onnx")
    run_everywhere(
        net, tmp_path / "gated.onnx", (64, 96), (1, 2), lambda b, s: inpainting_inputs(b, s)
    )


class _BlockSparseHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        linear = nn.Linear(64, 32)
        with torch.no_grad():
            linear.weight[:, 32:] = 0
        self.head = SparseLinear(linear, "triton_bsr16")

    def forward(self, x):
        return self.head(x.flatten(1))


def test_a_model_with_no_plain_form_is_one_clear_error_and_writes_nothing(tmp_path):
    net = _BlockSparseHead().eval()
    path = tmp_path / "model.onnx"
    with pytest.raises(
        ValueError, match=r"^head is a sparse serving layer \(masking\.pruning\.sparsify\)"
    ):
        export_checked(net, signature_for(net, torch.rand(4, 1, 8, 8)), path)
    assert list(tmp_path.iterdir()) == []


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        if x.mean() > 0.5:  # a branch on the values: no graph holds it
            return self.conv(x)
        return -self.conv(x)


def test_a_model_that_cannot_be_traced_is_one_line_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"^_Untraceable cannot be traced for export \(") as info:
        export_checked(
            _Untraceable(),
            signature_for(_Untraceable(), torch.rand(2, 3, 16, 16)),
            tmp_path / "m.onnx",
        )
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_parity_check_keeps_the_existing_file(tmp_path, monkeypatch):
    net = compacted_resnet()
    path = tmp_path / "model.onnx"
    path.write_bytes(b"the user's earlier export")
    signature = signature_for(net, digits(8))
    # the runtime answering something else: the check must catch it and leave the old file
    monkeypatch.setattr(
        "tasks.runtime.exporting._onnx_runner",
        lambda staged, names: lambda *inputs: [np.zeros((inputs[0].shape[0], 10), np.float32)],
    )
    with pytest.raises(ValueError, match=r"differs from PyTorch .* nothing was written"):
        export_checked(net, signature, path)
    assert path.read_bytes() == b"the user's earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_onnx_latency_pair_times_both_models_at_each_batch():
    dense = resnet18_cifar(num_classes=10, width=16).eval()
    final = compacted_resnet()
    times = onnx_latency_pair(
        dense,
        final,
        signature_for(dense, digits(8)),
        lambda b: digits(b),
        batches=[1, 4],
        repeats=2,
        warmup=1,
    )
    assert set(times) == {"dense", "final"}
    for stage in times.values():
        assert set(stage) == {"batch_1", "batch_4"} and all(v > 0 for v in stage.values())


def test_export_program_restores_the_training_mode():
    net = copy.deepcopy(compacted_resnet()).train()
    export_program(net, (digits(2),))
    assert net.training and all(m.training for m in net.modules())
