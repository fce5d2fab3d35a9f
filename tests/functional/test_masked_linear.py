"""``masked_linear`` (the training op of learned weight masks) against ``F.linear`` on the masked
weight, on the reference."""

import pytest
import torch
import torch.nn.functional as F

from masking import masked_linear
from tests.compiled import assert_compiles_like_eager
from tests.oracle import assert_same_function


class TestMaskedLinear:
    def test_smoke(self):
        out = masked_linear(torch.ones(2, 4), torch.ones(3, 4), torch.tensor([[1.0], [0.0], [1.0]]))
        assert out.tolist() == [[4.0, 0.0, 4.0], [4.0, 0.0, 4.0]]

    @pytest.mark.parametrize("lead", [(), (5,), (2, 3)], ids=str)
    def test_output_shape_keeps_the_leading_dimensions(self, lead):
        x = torch.randn(*lead, 10)
        out = masked_linear(x, torch.randn(6, 10), torch.rand(6, 10) > 0.5, torch.randn(6))
        assert out.shape == (*lead, 6) and out.dtype == x.dtype

    @pytest.mark.parametrize("mask_shape", [(6, 10), (6, 1), (1, 10)], ids=str)
    def test_is_linear_on_the_masked_weight(self, mask_shape):
        x = torch.randn(2, 3, 10, requires_grad=True)
        weight = torch.randn(6, 10, requires_grad=True)
        bias = torch.randn(6, requires_grad=True)
        mask = torch.rand(mask_shape, requires_grad=True)
        assert_same_function(
            masked_linear(x, weight, mask, bias),
            F.linear(x, weight * mask, bias),
            (x, weight, mask, bias),
        )

    def test_a_bool_mask_takes_no_gradient_and_zeroes_pruned_weight_gradients(self):
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
    def test_bad_input_names_the_argument(self, kwargs, message):
        args = {"x": torch.randn(3, 10), "weight": torch.randn(6, 10), "mask": torch.ones(6, 10)}
        with pytest.raises(ValueError, match=message):
            masked_linear(**{**args, **kwargs})

    @pytest.mark.parametrize("mask_shape", [(5, 7), (5, 1)], ids=str)
    def test_gradcheck_float64(self, mask_shape):
        x = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
        mask = torch.rand(mask_shape, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(masked_linear, (x, weight, mask, bias))

    def test_torch_compile(self):
        leaves = [
            torch.randn(5, 3, 10, requires_grad=True),
            torch.randn(6, 10, requires_grad=True),
            torch.rand(6, 1, requires_grad=True),
            torch.randn(6, requires_grad=True),
        ]
        assert_compiles_like_eager(masked_linear, leaves, backend="aot_eager")
