"""Serving baked sparse weights: every path computes the dense layer, sparsify swaps layers only for
measured gains and never changes the model's outputs."""

import pytest
import torch
from torch import nn

from masking.kernels import sparse, table
from masking.pruning import Pruner
from masking.pruning.sparsify import SparseConv2d, SparseLinear, sparsify

CPU_PATHS = [p for p in sparse.PATHS if sparse.supports(p, torch.zeros(64, 64)) is None]


def _pruned(out, k, sparsity, pattern="unstructured"):
    w = torch.randn(out, k)
    if pattern == "rows":
        w[torch.rand(out) < sparsity] = 0
    elif pattern == "block":
        keep = torch.rand(out // 16, 1, k // 16, 1) > sparsity
        w = (w.view(out // 16, 16, k // 16, 16) * keep).view(out, k)
    else:
        w[torch.rand(out, k) < sparsity] = 0
    return w


@pytest.mark.parametrize("path", CPU_PATHS)
@pytest.mark.parametrize("pattern", ["unstructured", "rows", "block"])
def test_every_path_computes_the_dense_product(path, pattern):
    w = _pruned(64, 128, 0.8, pattern)
    x = torch.randn(7, 128)
    torch.testing.assert_close(sparse.Packed(w, path)(x), x @ w.t(), rtol=1e-5, atol=1e-5)


def test_path_sparsity_counts_what_each_path_skips():
    w = torch.ones(32, 32)
    w[:16] = 0  # half the rows, half the 16x16 blocks, half the entries
    w[16:, :4] = 0
    assert sparse.path_sparsity(w, "rows") == 0.5
    assert sparse.path_sparsity(w, "bsr16") == 0.5
    assert sparse.path_sparsity(w, "bsr32") == 0.0
    assert sparse.path_sparsity(w, "csr") == pytest.approx(0.5 + 0.5 * 4 / 32)
    assert sparse.path_sparsity(w, "dense") == 0.0


def test_unsupported_paths_say_why():
    assert "not a multiple" in sparse.supports("bsr64", torch.zeros(48, 64))
    assert "no torch.float16 matmul" in sparse.supports("csr", torch.zeros(4, 4, dtype=torch.half))
    with pytest.raises(ValueError, match="path 'bsr32'"):
        sparse.Packed(torch.zeros(48, 48), "bsr32")
    with pytest.raises(ValueError, match="path must be one of"):
        sparse.path_sparsity(torch.zeros(4, 4), "coo")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc1 = nn.Linear(16 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.depthwise(torch.relu(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _pruned_net():
    net = Net().eval()
    with torch.no_grad():
        for m in (net.fc1, net.fc2):
            m.weight[torch.rand_like(m.weight) < 0.9] = 0
        net.conv.weight[torch.rand_like(net.conv.weight) < 0.5] = 0
        net.conv.weight[:4] = 0  # a quarter of the filters (no other filter of 27 is all zero)
    return net


def test_sparsify_with_an_override_keeps_outputs_and_reports_each_layer():
    net, x = _pruned_net(), torch.randn(2, 3, 8, 8)
    expected = net(x)
    net, report = sparsify(net, x, paths={"fc1": "csr", "conv": "rows"})
    assert isinstance(net.fc1, SparseLinear) and net.fc1.path == "csr"
    assert isinstance(net.conv, SparseConv2d) and net.conv.path == "rows"
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    by_layer = {r["layer"]: r for r in report}
    assert by_layer["fc1"]["gemm"] == [64, 1024, 2]
    assert by_layer["conv"]["gemm"] == [16, 27, 2 * 64]
    assert by_layer["conv"]["path_sparsity"] == pytest.approx(0.25)
    assert by_layer["fc1"]["reason"] == "override"


def test_sparsify_unfolded_csr_convolution():
    net, x = _pruned_net(), torch.randn(2, 3, 8, 8)
    expected = net(x)
    net, _ = sparsify(net, x, paths={"conv": "csr"})
    torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


def test_sparsify_follows_the_table(monkeypatch):
    entry = {"shape": [64, 1024, 2], "paths": {"csr": [[0.5, 3.0]]}}
    measured = {"ops": {"linear": {"float32": [entry]}}}
    monkeypatch.setattr(table, "load_table", lambda kind: measured)
    net, x = _pruned_net(), torch.randn(2, 3, 8, 8)
    net, report = sparsify(net, x)
    assert isinstance(net.fc1, SparseLinear) and net.fc1.path == "csr"
    assert isinstance(net.conv, nn.Conv2d)  # conv2d not measured: dense, not swapped
    assert {r["layer"]: r["path"] for r in report}["conv"] == "dense"


def test_sparsify_refuses_masked_layers_and_bad_paths():
    net, x = _pruned_net(), torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="names no Linear/Conv2d layer"):
        sparsify(net, x, paths={"fc9": "csr"})
    with pytest.raises(ValueError, match="depthwise is a conv2d, which takes one of"):
        sparsify(net, x, paths={"depthwise": "csr"})
    with pytest.raises(ValueError, match="cannot run fc2"):
        sparsify(net, x, paths={"fc2": "bsr16"})  # 10 x 64 is no multiple of 16
    pruner = Pruner(Net(), sparsity=0.5, method="magnitude")
    with pytest.raises(ValueError, match="bake the masks first"):
        sparsify(pruner.model, x)


def test_a_global_override_skips_the_layers_it_cannot_run():
    net, x = _pruned_net(), torch.randn(2, 3, 8, 8)
    with table.prefer("linear", "bsr16"):
        net, report = sparsify(net, x)
    by_layer = {r["layer"]: r for r in report}
    assert by_layer["fc1"]["path"] == "bsr16" and by_layer["fc1"]["reason"] == "override"
    assert by_layer["fc2"]["path"] == "dense"  # 10 x 64 is no multiple of 16
    assert "cannot run this layer" in by_layer["fc2"]["reason"]
