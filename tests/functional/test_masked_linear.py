"""masked_linear (the training op of learned weight masks) and bit-packed masks, on the reference."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from masking import PackedMask, mask_product, masked_conv2d, masked_linear, pack_mask


def assert_same_function(out, expected, leaves) -> None:
    """Equal outputs, and equal gradients of a squared loss for every leaf."""
    torch.testing.assert_close(out, expected)
    got = torch.autograd.grad(out.square().sum(), leaves)
    want = torch.autograd.grad(expected.square().sum(), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("mask_shape", [(6, 10), (6, 1), (1, 10)], ids=str)
def test_masked_linear_is_linear_on_the_masked_weight(mask_shape):
    x = torch.randn(2, 3, 10, requires_grad=True)
    weight = torch.randn(6, 10, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    mask = torch.rand(mask_shape, requires_grad=True)
    assert_same_function(
        masked_linear(x, weight, mask, bias),
        F.linear(x, weight * mask, bias),
        (x, weight, mask, bias),
    )


def test_a_bool_mask_takes_no_gradient_and_zeroes_pruned_weight_gradients():
    weight = torch.randn(4, 8, requires_grad=True)
    mask = torch.rand(4, 8) > 0.5
    masked_linear(torch.randn(3, 8), weight, mask).sum().backward()
    assert torch.equal(weight.grad[~mask], torch.zeros(int((~mask).sum())))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": torch.randn(6, 9)}, r"weight must be \(out_features, in_features\)"),
        ({"weight": torch.randn(6, 10, dtype=torch.float64)}, "weight must have x's dtype"),
        ({"mask": torch.ones(6, 2)}, r"mask of shape \(6, 2\) does not broadcast to weight"),
        ({"mask": torch.full((6, 10), 2.0)}, r"mask must hold values in \[0, 1\]"),
        ({"bias": torch.randn(5)}, r"bias must be \(6,\)"),
    ],
)
def test_masked_linear_bad_input_names_the_argument(kwargs, message):
    args = {"x": torch.randn(3, 10), "weight": torch.randn(6, 10), "mask": torch.ones(6, 10)}
    with pytest.raises(ValueError, match=message):
        masked_linear(**{**args, **kwargs})


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 11), min_size=1, max_size=4),
    broadcast=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_packed_masks_round_trip_and_multiply_like_bool_masks(shape, broadcast, seed):
    g = torch.Generator().manual_seed(seed)
    mask_shape = [1 if b else s for s, b in zip(shape, broadcast)]
    mask = torch.rand(mask_shape, generator=g) > 0.5
    packed = pack_mask(mask)
    assert packed.bits.dtype == torch.uint8
    assert packed.bits.shape[-1] == -(-mask.shape[-1] // 8)
    assert torch.equal(packed.unpack(), mask)
    x = torch.randn(shape, generator=g, requires_grad=True)
    out = mask_product(x, packed)
    assert torch.equal(out, x * mask)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, mask.expand(shape).float())


def test_pack_mask_rejects_soft_masks_and_scalars():
    with pytest.raises(ValueError, match="only 0 and 1"):
        pack_mask(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="at least one dimension"):
        pack_mask(torch.tensor(True))
    assert isinstance(pack_mask(torch.tensor([0.0, 1.0])), PackedMask)
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) does not broadcast"):
        mask_product(torch.ones(2, 4), pack_mask(torch.ones(3, dtype=torch.bool)))


@pytest.mark.parametrize("mask_shape", [(6, 4, 3, 3), (6, 1, 1, 1), (1, 4, 1, 1)], ids=str)
def test_masked_conv2d_is_conv2d_on_the_masked_weight(mask_shape):
    x = torch.randn(2, 4, 9, 7, requires_grad=True)
    weight = torch.randn(6, 4, 3, 3, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    mask = torch.rand(mask_shape, requires_grad=True)
    geometry = {"stride": 2, "padding": 1, "dilation": (1, 2)}
    assert_same_function(
        masked_conv2d(x, weight, mask, bias, **geometry),
        F.conv2d(x, weight * mask, bias, **geometry),
        (x, weight, mask, bias),
    )


def test_masked_conv2d_bad_mask_names_the_argument():
    x, weight = torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match=r"mask of shape \(6, 4\) does not broadcast to weight"):
        masked_conv2d(x, weight, torch.ones(6, 4))
    with pytest.raises(ValueError, match="expects 4 input channels"):
        masked_conv2d(torch.randn(1, 3, 5, 5), weight, torch.ones(6, 1, 1, 1))
