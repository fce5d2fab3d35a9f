"""Triton kernels against the pure-torch reference.

Without a GPU they run on CPU tensors under ``TRITON_INTERPRET=1`` (small shapes, fp32/fp16: the
interpreter gets bf16 dots wrong and is slow); with one, on CUDA.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are decorated

triton = pytest.importorskip("triton")

from masking import PartialConv2d, kernels, mask_product  # noqa: E402
from masking.kernels import _triton, ops, reference  # noqa: E402
from tests.oracle import blob_mask  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

BROADCASTS = [
    ((2, 3, 5, 6), (2, 1, 5, 6)),  # pixel mask
    ((2, 3, 5, 6), (1, 3, 1, 1)),  # channel mask
    ((8, 4, 3, 3), (8, 1, 1, 1)),  # per-output-channel weight mask
    ((8, 4, 3, 3), (8, 4, 3, 3)),  # weight-shaped
    ((3, 1000), (1, 1000)),
    ((2, 3, 5, 6), (1,)),
]


@pytest.mark.parametrize(("x_shape", "mask_shape"), BROADCASTS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.float32])
def test_mask_product_kernel(x_shape, mask_shape, dtype, mask_dtype):
    x = torch.randn(x_shape, device=DEVICE).to(dtype)
    mask = (torch.rand(mask_shape, device=DEVICE) > 0.5).to(mask_dtype)
    out = _triton.mask_product(x, mask)
    assert out is not None
    assert torch.equal(out, reference.mask_product(x, mask))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_mask_product_kernel_matches_reference_for_soft_masks(dtype):
    x = torch.randn(4, 300, device=DEVICE).to(dtype)
    mask = torch.rand(1, 300, device=DEVICE, dtype=torch.float32)
    assert torch.equal(_triton.mask_product(x, mask), reference.mask_product(x, mask))


def test_mask_product_kernel_declines_what_it_cannot_index():
    x = torch.randn(2, 3, 4, 5, 6, device=DEVICE)
    mask = torch.rand(2, 1, 4, 1, 6, device=DEVICE) > 0.5  # five uncollapsible dimensions
    assert _triton.mask_product(x, mask) is None
    assert _triton.mask_product(x.transpose(0, 1), mask.transpose(0, 1)) is None
    with kernels.backend("triton"):
        assert torch.equal(mask_product(x, mask), x * mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_pconv_epilogue_kernel(dtype, groups, bias):
    out = torch.randn(2, 4, 5, 7, device=DEVICE).to(dtype)
    count = torch.randint(0, 10, (2, groups, 5, 7), device=DEVICE).float()
    scale = torch.where(count > 0, 9 / count.clamp_min(1), 0.0)
    b = torch.randn(4, device=DEVICE).to(dtype) if bias else None
    expected = reference.pconv_epilogue_(out.clone(), scale, (scale > 0).to(dtype), b)
    got = out.clone()
    assert _triton.pconv_epilogue_(got, scale, b) is got
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(got, expected, **tol)


@pytest.mark.parametrize("multi_channel", [False, True])
def test_partial_conv_through_triton_matches_reference(multi_channel):
    layer = PartialConv2d(4, 6, 3, stride=2, padding=1, groups=2, multi_channel=multi_channel)
    layer = layer.to(DEVICE)
    x = torch.randn(2, 4, 10, 10, device=DEVICE, requires_grad=True)
    channels = 4 if multi_channel else 1
    mask = torch.cat([blob_mask(2, 10, 0.5, seed=i) for i in range(channels)], 1).to(DEVICE)
    with kernels.backend("reference"):
        ref, ref_mask = layer(x, mask)
        (ref_grad,) = torch.autograd.grad(ref.square().sum(), x)
    with kernels.backend("triton"):
        out, new_mask = layer(x, mask)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, ref_grad)
    assert torch.equal(new_mask, ref_mask)


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        kernels.set_backend("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_partial_conv_low_precision_matches_fp32(dtype):
    layer = PartialConv2d(16, 16, 3, padding=1).cuda()
    x = torch.randn(2, 16, 32, 32, device="cuda")
    mask = blob_mask(2, 32, 0.5).cuda()
    mask[0] = 0
    ref, _ = layer(x, mask)
    with torch.autocast("cuda", dtype=dtype):
        out, _ = layer(x, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.cuda
def test_cuda_graph_capture():
    layer = PartialConv2d(8, 8, 3, padding=1).cuda()
    x = torch.randn(2, 8, 16, 16, device="cuda")
    mask = blob_mask(2, 16, 0.4).cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            layer(x, mask)  # warm-up on a side stream, as CUDA graphs require
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, new_mask = layer(x, mask)
    fresh_mask = blob_mask(2, 16, 0.6, seed=3).cuda()
    mask.copy_(fresh_mask)
    x.copy_(torch.randn_like(x))
    graph.replay()
    ref, ref_mask = layer(x, fresh_mask)
    torch.testing.assert_close(out, ref)
    assert torch.equal(new_mask, ref_mask)


def test_ops_are_registered_with_fake_implementations():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, mask = torch.empty(2, 4, 9, 9), torch.empty(2, 1, 9, 9)
        out, scale, valid = ops.partial_conv2d(
            x, mask, torch.empty(6, 2, 3, 3), None, [2, 2], [1, 1], [1, 1], 2
        )
        assert out.shape == (2, 6, 5, 5) and scale.shape == valid.shape == (2, 1, 5, 5)
        assert scale.dtype == torch.float32 and valid.dtype == x.dtype
        assert ops.mask_product(x, mask).shape == x.shape
