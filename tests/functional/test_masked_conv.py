"""``masked_conv2d`` against ``F.conv2d`` on the masked weight, on the reference."""

import pytest
import torch
import torch.nn.functional as F

from masking import masked_conv2d
from tests.compiled import assert_compiles_like_eager
from tests.oracle import assert_same_function


class TestMaskedConv2d:
    def test_smoke(self):
        mask = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
        out = masked_conv2d(torch.ones(1, 1, 3, 3), torch.ones(2, 1, 3, 3), mask)
        assert out.flatten().tolist() == [9.0, 0.0]

    @pytest.mark.parametrize(
        ("stride", "padding", "dilation", "groups", "expected"),
        [(1, 0, 1, 1, (2, 6, 7, 5)), (2, 1, 1, 2, (2, 6, 5, 4)), (1, 2, 2, 1, (2, 6, 9, 7))],
    )
    def test_output_shape(self, stride, padding, dilation, groups, expected):
        x = torch.randn(2, 4, 9, 7)
        weight = torch.randn(6, 4 // groups, 3, 3)
        mask = torch.rand(6, 1, 1, 1) > 0.5
        out = masked_conv2d(x, weight, mask, None, stride, padding, dilation, groups)
        assert out.shape == expected and out.dtype == x.dtype

    @pytest.mark.parametrize("mask_shape", [(6, 4, 3, 3), (6, 1, 1, 1), (1, 4, 1, 1)], ids=str)
    def test_is_conv2d_on_the_masked_weight(self, mask_shape):
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

    def test_a_bool_mask_takes_no_gradient_and_zeroes_pruned_weight_gradients(self):
        weight = torch.randn(6, 4, 3, 3, requires_grad=True)
        mask = torch.rand(6, 4, 1, 1) > 0.5
        masked_conv2d(torch.randn(2, 4, 5, 5), weight, mask, padding=1).sum().backward()
        pruned = ~mask.expand_as(weight)
        assert torch.equal(weight.grad[pruned], torch.zeros(int(pruned.sum())))

    def test_bad_mask_names_the_argument(self):
        x, weight = torch.randn(1, 4, 5, 5), torch.randn(6, 4, 3, 3)
        with pytest.raises(
            ValueError, match=r"mask of shape \(6, 4\) does not broadcast to weight"
        ):
            masked_conv2d(x, weight, torch.ones(6, 4))
        with pytest.raises(ValueError, match="expects 4 input channels"):
            masked_conv2d(torch.randn(1, 3, 5, 5), weight, torch.ones(6, 1, 1, 1))
        with pytest.raises(ValueError, match=r"mask must hold values in \[0, 1\]"):
            masked_conv2d(x, weight, torch.full((6, 1, 1, 1), -1.0))

    def test_gradcheck_float64(self):
        x = torch.randn(1, 4, 6, 5, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
        mask = torch.rand(4, 2, 1, 1, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda *a: masked_conv2d(*a, stride=2, padding=1, groups=2), (x, weight, mask, bias)
        )

    def test_torch_compile(self):
        leaves = [
            torch.randn(2, 4, 9, 7, requires_grad=True),
            torch.randn(6, 4, 3, 3, requires_grad=True),
            torch.rand(6, 4, 1, 1, requires_grad=True),
            torch.randn(6, requires_grad=True),
        ]

        def fn(x, weight, mask, bias):
            return masked_conv2d(x, weight, mask, bias, stride=2, padding=1)

        assert_compiles_like_eager(fn, leaves, backend="aot_eager")
