"""``masking::bsr_linear``, the block-sparse GEMM that serves baked weights (``sparse.Packed``'s
``triton_bsr*`` paths), on its reference: the blocks densified. Inference only: no autograd formula.
The Triton kernel is checked against it in ``test_sparse_kernels.py``."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from masking.kernels import ops, sparse
from tests.oracle import tolerance


def block_sparse(out_features: int, in_features: int, block: int, dtype=torch.float32):
    """A weight whose zeros come in ``block × block`` tiles, and its int32 BSR arrays."""
    rows, cols = out_features // block, in_features // block
    keep = torch.rand(rows, 1, cols, 1) > 0.5
    keep[0] = False  # an empty block row
    weight = torch.randn(rows, block, cols, block) * keep
    weight = weight.view(out_features, in_features).to(dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta")
        blocks = weight.to_sparse_bsr((block, block))
    # copies: views into the sparse tensor cannot become fake tensors
    arrays = (
        blocks.crow_indices().to(torch.int32),
        blocks.col_indices().to(torch.int32),
        blocks.values().clone(),
    )
    return weight, arrays


class TestBsrLinear:
    def test_smoke(self):
        _, arrays = block_sparse(32, 16, 16)
        assert ops.bsr_linear(torch.ones(1, 16), *arrays, 32).shape == (1, 32)

    @pytest.mark.parametrize("rows", [1, 7])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_matches_the_dense_product(self, rows, dtype):
        weight, arrays = block_sparse(48, 32, 16, dtype)
        x = torch.randn(rows, 32, dtype=dtype)
        out = ops.bsr_linear(x, *arrays, 48)
        assert out.shape == (rows, 48) and out.dtype == dtype
        torch.testing.assert_close(out, F.linear(x, weight), **tolerance(dtype))
        assert not out[:, :16].any()  # the empty block row gives zeros, not garbage

    def test_bad_inputs(self):
        # the op trusts its arrays; the packing in front of it checks the weight
        with pytest.raises(ValueError, match="is not a multiple of the 16×16 block"):
            sparse.Packed(torch.randn(40, 32), "bsr16")
        with pytest.raises(ValueError, match="expected a 2-D weight"):
            sparse.Packed(torch.randn(2, 32, 32), "bsr16")

    def test_has_no_gradient(self):
        _, arrays = block_sparse(32, 16, 16)
        x = torch.randn(3, 16, requires_grad=True)
        with pytest.raises(RuntimeError, match="autograd"):
            ops.bsr_linear(x, *arrays, 32).sum().backward()

    def test_fake_implementation_and_torch_compile(self):
        from torch._subclasses.fake_tensor import FakeTensorMode

        _, arrays = block_sparse(48, 32, 16)
        x = torch.randn(5, 32)
        with FakeTensorMode(allow_non_fake_inputs=True):
            assert ops.bsr_linear(torch.empty(5, 32), *arrays, 48).shape == (5, 48)

        def serve(x):
            return ops.bsr_linear(x, *arrays, 48)

        compiled = torch.compile(serve, fullgraph=True, backend="aot_eager")
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), serve(x), **tolerance(torch.float32))
