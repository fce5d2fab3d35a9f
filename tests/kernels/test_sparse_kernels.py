"""The GEMM kernels (masked linear, BSR linear, fused partial conv) and the bit-packed mask product
against the references; on CPU under ``TRITON_INTERPRET=1``, on CUDA when there is one."""

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated

triton = pytest.importorskip("triton")

from masking import (  # noqa: E402
    PartialConv2d,
    kernels,
    mask_product,
    masked_conv2d,
    masked_linear,
    pack_mask,
)
from masking.kernels import _triton, _triton_pconv, _triton_sparse, ops, sparse, table  # noqa: E402
from tests.oracle import blob_mask  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float16: {"rtol": 2e-2, "atol": 2e-2}}


def _masked_weight(out, k, mask_shape, dtype, zero_rows=0):
    weight = torch.randn(out, k, device=DEVICE).to(dtype)
    mask = torch.rand(mask_shape, device=DEVICE) > 0.5
    if zero_rows and mask_shape[0] != 1:
        mask[:zero_rows] = False  # whole tiles of zeros: the skip table must not drop live ones
    return weight, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mask_shape", [(45, 70), (45, 1), (1, 70)], ids=str)
def test_masked_linear_kernel_forward_and_input_gradient(dtype, mask_shape):
    x = torch.randn(37, 70, device=DEVICE).to(dtype)
    weight, mask = _masked_weight(45, 70, mask_shape, dtype, zero_rows=32)
    product = weight.float() * mask
    torch.testing.assert_close(
        _triton_sparse.masked_linear(x, weight, mask).float(), x.float() @ product.t(), **TOL[dtype]
    )
    grad = torch.randn(37, 45, device=DEVICE).to(dtype)
    torch.testing.assert_close(
        _triton_sparse.masked_linear_grad_input(grad, weight, mask).float(),
        grad.float() @ product,
        **TOL[dtype],
    )


def test_skip_table_marks_exactly_the_tiles_with_a_live_entry():
    mask = torch.zeros(70, 40, dtype=torch.bool)
    mask[65, 39] = True  # the last, partial tile
    mask[3, 33] = True
    live = _triton_sparse.live_blocks(mask, (70, 40))
    assert live.tolist() == [[0, 1], [0, 0], [0, 1]]
    assert _triton_sparse.live_blocks(mask[:, :1], (70, 40)).tolist() == [[0, 0], [0, 0], [0, 0]]


@pytest.mark.parametrize("soft", [False, True])
def test_masked_linear_op_gradients_match_the_reference(soft):
    x = torch.randn(5, 3, 40, device=DEVICE, requires_grad=True)
    weight = torch.randn(33, 40, device=DEVICE, requires_grad=True)
    bias = torch.randn(33, device=DEVICE, requires_grad=True)
    mask = torch.rand(33, 1, device=DEVICE)
    mask = (mask if soft else (mask > 0.5).float()).requires_grad_()
    inputs = (x, weight, mask, bias)
    expected = torch.autograd.grad(F.linear(x, weight * mask, bias).square().sum(), inputs)
    with kernels.backend("triton"):
        out = masked_linear(x, weight, mask, bias)
        got = torch.autograd.grad(out.square().sum(), inputs)
    torch.testing.assert_close(out, F.linear(x, weight * mask, bias), rtol=1e-5, atol=1e-5)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("block", [16, 32])
@pytest.mark.parametrize("rows", [1, 20])
def test_bsr_kernel_matches_dense(dtype, block, rows):
    weight = torch.randn(4 * block, 3 * block, device=DEVICE)
    keep = torch.rand(4, 1, 3, 1, device=DEVICE) > 0.5
    keep[1] = False  # an empty block row
    weight = (weight.view(4, block, 3, block) * keep).view(4 * block, 3 * block).to(dtype)
    x = torch.randn(rows, 3 * block, device=DEVICE).to(dtype)
    packed = sparse.Packed(weight, f"triton_bsr{block}")
    expected = x.float() @ weight.float().t()
    with kernels.backend("triton"):
        torch.testing.assert_close(packed(x).float(), expected, **TOL[dtype])
    with kernels.backend("reference"):  # the op's reference: the dense product of the blocks
        torch.testing.assert_close(packed(x).float(), expected, **TOL[dtype])


@pytest.mark.parametrize(
    ("x_shape", "mask_shape"),
    [
        ((2, 3, 5, 13), (2, 1, 5, 13)),
        ((2, 3, 5, 13), (1, 3, 1, 13)),
        ((4, 17), (4, 1)),
        ((9,), (9,)),
    ],
    ids=str,
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_packed_mask_product_kernel(x_shape, mask_shape, dtype):
    x = torch.randn(x_shape, device=DEVICE).to(dtype)
    mask = torch.rand(mask_shape, device=DEVICE) > 0.5
    packed = pack_mask(mask)
    got = _triton.mask_product_packed(x, packed.bits, mask.shape[-1])
    assert got is not None and torch.equal(got, x * mask)
    with kernels.backend("triton"):
        assert torch.equal(mask_product(x, packed), x * mask)


GEOMETRIES = [  # stride, padding, dilation, kernel
    ((1, 1), (1, 1), (1, 1), 3),
    ((2, 2), (1, 1), (1, 1), 3),
    ((1, 2), (0, 2), (2, 1), 3),
    ((1, 1), (3, 3), (1, 1), 7),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_fused_partial_conv_matches_reference(dtype, geometry, bias):
    stride, padding, dilation, k = geometry
    x = torch.randn(2, 5, 11, 9, device=DEVICE).to(dtype)
    mask = blob_mask(2, 11, 0.5)[..., :9].to(DEVICE, dtype)
    weight = torch.randn(7, 5, k, k, device=DEVICE).to(dtype)
    b = torch.randn(7, device=DEVICE).to(dtype) if bias else None
    args = (stride, padding, dilation, 1)
    got = _triton_pconv.partial_conv2d_fused(x, mask, weight, b, args)
    out, scale, valid = ops.partial_conv2d(x, mask, weight, b, *args)
    torch.testing.assert_close(got[0].float(), out.float(), **TOL[dtype])
    torch.testing.assert_close(got[1], scale, rtol=1e-6, atol=0)
    assert torch.equal(got[2], valid)


def test_fused_partial_conv_skips_all_hole_tiles():
    x = torch.randn(2, 4, 12, 12, device=DEVICE)
    mask = torch.ones(2, 1, 12, 12, device=DEVICE)
    mask[1] = 0
    x[1] = float("nan")  # whatever a hole holds, a skipped tile never reads it
    weight, bias = torch.randn(6, 4, 3, 3, device=DEVICE), torch.randn(6, device=DEVICE)
    out, scale, valid = _triton_pconv.partial_conv2d_fused(
        x, mask, weight, bias, ((1, 1), (1, 1), (1, 1), 1)
    )
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert not valid[1].any() and not scale[1].any()
    expected, *_ = ops.partial_conv2d(x[:1], mask[:1], weight, bias, [1, 1], [1, 1], [1, 1], 1)
    torch.testing.assert_close(out[:1], expected, rtol=1e-5, atol=1e-5)


def test_fused_kernel_declines_what_it_does_not_cover():
    x, weight = torch.randn(1, 4, 6, 6, device=DEVICE), torch.randn(4, 2, 3, 3, device=DEVICE)
    mask = torch.ones(1, 1, 6, 6, device=DEVICE)
    assert _triton_pconv.partial_conv2d_fused(x, mask, weight, None, ((1, 1),) * 3 + (2,)) is None
    multi = torch.ones(1, 4, 6, 6, device=DEVICE)
    full = torch.randn(4, 4, 3, 3, device=DEVICE)
    assert _triton_pconv.partial_conv2d_fused(x, multi, full, None, ((1, 1),) * 3 + (1,)) is None


def test_fused_partial_conv_through_the_layer_when_preferred():
    layer = PartialConv2d(4, 6, 3, padding=1).to(DEVICE)
    x = torch.randn(2, 4, 10, 10, device=DEVICE, requires_grad=True)
    mask = blob_mask(2, 10, 0.5).to(DEVICE)
    ref, ref_mask = layer(x, mask)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)
    with kernels.backend("triton"), table.prefer("partial_conv2d", "fused"):
        out, new_mask = layer(x, mask)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)
    assert torch.equal(new_mask, ref_mask)


def test_new_ops_have_fake_implementations():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, w = torch.empty(7, 12), torch.empty(5, 12)
        assert ops.masked_linear(x, w, torch.empty(5, 1), None).shape == (7, 5)
        bits = torch.empty(7, 2, dtype=torch.uint8)
        assert ops.mask_product_packed(x, bits, 12).shape == x.shape
        index = torch.empty(3, dtype=torch.int32)
        values = torch.empty(2, 16, 16)
        assert ops.bsr_linear(torch.empty(7, 32), index, index, values, 32).shape == (7, 32)
        w = torch.empty(6, 4, 3, 3)
        out = ops.masked_conv2d(torch.empty(2, 4, 9, 9), w, w, None, [2, 2], [1, 1], [1, 1], 1)
        assert out.shape == (2, 6, 5, 5)


def test_masked_linear_under_torch_compile():
    x, w = torch.randn(6, 16), torch.randn(8, 16)
    mask = torch.rand(8, 16) > 0.5
    compiled = torch.compile(lambda a: masked_linear(a, w, mask), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.linear(x, w * mask))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mask_shape", [(7, 5, 3, 3), (7, 1, 1, 1), (1, 5, 1, 1)], ids=str)
def test_masked_conv_kernel_matches_the_reference(dtype, mask_shape):
    x = torch.randn(2, 5, 11, 9, device=DEVICE).to(dtype)
    weight = torch.randn(7, 5, 3, 3, device=DEVICE).to(dtype)
    bias = torch.randn(7, device=DEVICE).to(dtype)
    mask = torch.rand(mask_shape, device=DEVICE) > 0.5
    args = ((2, 1), (1, 2), (1, 2), 1)
    got = _triton_pconv.masked_conv2d(x, weight, mask, bias, args)
    expected = F.conv2d(x.float(), weight.float() * mask, bias.float(), *args)
    torch.testing.assert_close(got.float(), expected, **TOL[dtype])


def test_masked_conv_op_gradients_through_triton():
    x = torch.randn(2, 4, 8, 8, device=DEVICE, requires_grad=True)
    weight = torch.randn(6, 4, 3, 3, device=DEVICE, requires_grad=True)
    mask = torch.rand(6, 4, 1, 1, device=DEVICE, requires_grad=True)
    leaves = (x, weight, mask)
    expected = F.conv2d(x, weight * mask, padding=1)
    want = torch.autograd.grad(expected.square().sum(), leaves)
    with kernels.backend("triton"):
        out = masked_conv2d(x, weight, mask, padding=1)
        got = torch.autograd.grad(out.square().sum(), leaves)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
