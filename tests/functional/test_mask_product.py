import pytest
import torch

from masking import mask_product

# (x shape, mask shape): pixel, channel, per-output-channel weight, full weight, trailing, scalar-like
BROADCASTS = [
    ((2, 3, 5, 6), (2, 1, 5, 6)),
    ((2, 3, 5, 6), (1, 3, 1, 1)),
    ((8, 4, 3, 3), (8, 1, 1, 1)),
    ((8, 4, 3, 3), (8, 4, 3, 3)),
    ((2, 3, 5, 6), (5, 6)),
    ((2, 3, 5, 6), (1,)),
    ((7, 9), (7, 1)),
]


class TestMaskProduct:
    def test_smoke(self):
        assert mask_product(torch.ones(3), torch.tensor([1.0, 0.0, 1.0])).tolist() == [1, 0, 1]

    @pytest.mark.parametrize(("x_shape", "mask_shape"), BROADCASTS, ids=str)
    @pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.float32])
    def test_matches_broadcast_multiply(self, x_shape, mask_shape, mask_dtype):
        x = torch.randn(x_shape)
        mask = torch.rand(mask_shape) > 0.4
        out = mask_product(x, mask.to(mask_dtype))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.equal(out, x * mask.float())

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_keeps_x_dtype(self, dtype):
        x = torch.randn(2, 3, 4, 4, dtype=dtype)
        out = mask_product(x, torch.rand(2, 1, 4, 4, dtype=torch.float64))
        assert out.dtype == dtype

    def test_keeps_channels_last_layout(self):
        x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
        out = mask_product(x, torch.rand(2, 1, 5, 5) > 0.5)
        assert out.is_contiguous(memory_format=torch.channels_last)

    def test_soft_mask_scales(self):
        x = torch.full((2, 2), 4.0)
        assert torch.equal(mask_product(x, torch.tensor([0.25, 0.5])), torch.tensor([[1.0, 2]] * 2))

    def test_gradients(self):
        x = torch.randn(2, 3, 4, 4, requires_grad=True)
        mask = torch.rand(1, 3, 1, 1, requires_grad=True)
        grad = torch.randn(2, 3, 4, 4)
        mask_product(x, mask).backward(grad)
        torch.testing.assert_close(x.grad, grad * mask.detach())
        torch.testing.assert_close(mask.grad, (grad * x.detach()).sum((0, 2, 3), keepdim=True))

    def test_bool_mask_gradient_only_for_x(self):
        x = torch.randn(4, 4, requires_grad=True)
        mask = torch.rand(4, 4) > 0.5
        mask_product(x, mask).sum().backward()
        assert torch.equal(x.grad, mask.float())

    @pytest.mark.parametrize(("x_shape", "mask_shape"), BROADCASTS[:3], ids=str)
    def test_gradcheck_float64(self, x_shape, mask_shape):
        x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
        mask = torch.rand(mask_shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(mask_product, (x, mask))

    def test_torch_compile(self):
        def fn(x, mask):
            return mask_product(x, mask) * 2

        compiled = torch.compile(fn, fullgraph=True)
        x, mask = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8) > 0.5
        assert torch.equal(compiled(x, mask), fn(x, mask))

    def test_all_hole_and_all_valid(self):
        x = torch.randn(2, 3, 4, 4)
        assert torch.equal(mask_product(x, torch.ones(2, 1, 4, 4)), x)
        assert not mask_product(x, torch.zeros(2, 1, 4, 4, dtype=torch.bool)).any()
