"""``mask_product`` with mask tensors and with bit-packed masks, against torch's broadcast multiply."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masking import PackedMask, mask_product, pack_mask
from tests.compiled import assert_compiles_like_eager

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

    @pytest.mark.parametrize(
        ("mask_dtype", "message"),
        [
            (torch.float32, r"mask of shape \(2, 2, 4, 4\) does not broadcast to x"),
            (torch.int32, "mask must be bool, uint8 or floating-point, got dtype torch.int32"),
        ],
    )
    def test_bad_inputs(self, mask_dtype, message):
        with pytest.raises((ValueError, TypeError), match=message):
            mask_product(torch.ones(2, 3, 4, 4), torch.ones(2, 2, 4, 4, dtype=mask_dtype))
        with pytest.raises(TypeError, match="x must be a floating-point tensor"):
            mask_product(torch.ones(3, dtype=torch.int64), torch.ones(3))

    def test_torch_compile(self):
        def fn(x, mask):
            return mask_product(x, mask) * 2

        compiled = torch.compile(fn, fullgraph=True)
        x, mask = torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8) > 0.5
        assert torch.equal(compiled(x, mask), fn(x, mask))
        # training: gradients for x and for a soft channel mask through inductor's backward graph
        soft = torch.rand(1, 3, 1, 1, requires_grad=True)
        assert_compiles_like_eager(fn, [x.requires_grad_(), soft], backend="inductor")

    def test_all_hole_and_all_valid(self):
        x = torch.randn(2, 3, 4, 4)
        assert torch.equal(mask_product(x, torch.ones(2, 1, 4, 4)), x)
        assert not mask_product(x, torch.zeros(2, 1, 4, 4, dtype=torch.bool)).any()


class TestMaskProductPacked:
    """``mask_product`` with a :class:`PackedMask` (the ``masking::mask_product_packed`` op)."""

    def test_smoke(self):
        packed = pack_mask(torch.tensor([True, False, True]))
        assert mask_product(torch.ones(2, 3), packed).tolist() == [[1, 0, 1], [1, 0, 1]]

    @settings(max_examples=40, deadline=None)
    @given(
        shape=st.lists(st.integers(1, 11), min_size=1, max_size=4),
        broadcast=st.lists(st.booleans(), min_size=4, max_size=4),
        seed=st.integers(0, 2**16),
    )
    def test_round_trips_and_multiplies_like_a_bool_mask(self, shape, broadcast, seed):
        g = torch.Generator().manual_seed(seed)
        mask_shape = [1 if b else s for s, b in zip(shape, broadcast)]
        mask = torch.rand(mask_shape, generator=g) > 0.5
        packed = pack_mask(mask)
        assert packed.bits.dtype == torch.uint8
        assert packed.bits.shape[-1] == -(-mask.shape[-1] // 8)
        assert torch.equal(packed.unpack(), mask)
        x = torch.randn(shape, generator=g, requires_grad=True)
        out = mask_product(x, packed)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.equal(out, x * mask)
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.equal(grad, mask.expand(shape).float())

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="only 0 and 1"):
            pack_mask(torch.tensor([0.5, 1.0]))
        with pytest.raises(ValueError, match="at least one dimension"):
            pack_mask(torch.tensor(True))
        assert isinstance(pack_mask(torch.tensor([0.0, 1.0])), PackedMask)
        with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast"):
            mask_product(torch.ones(2, 4), pack_mask(torch.ones(3, dtype=torch.bool)))

    def test_gradcheck_float64(self):
        x = torch.randn(3, 2, 13, dtype=torch.float64, requires_grad=True)
        packed = pack_mask(torch.rand(2, 13) > 0.5)
        assert torch.autograd.gradcheck(lambda t: mask_product(t, packed), (x,))

    def test_torch_compile(self):
        packed = pack_mask(torch.rand(1, 4, 1, 9) > 0.5)
        x = torch.randn(2, 4, 3, 9, requires_grad=True)
        assert_compiles_like_eager(lambda t: mask_product(t, packed), [x], backend="aot_eager")
