import pytest
import torch
import torch.nn.functional as F

from masking import GatedConv2d, gated_conv2d
from tests.compiled import assert_compiles_like_eager
from tests.oracle import gated_conv2d_split, tolerance

# (c_in, c_out, kernel, stride, padding, dilation, groups, bias)
GEOMETRIES = [
    (3, 4, 3, 1, 1, 1, 1, True),
    (4, 6, 3, 2, 1, 1, 1, False),
    (4, 6, 3, 1, 2, 2, 2, True),
    (4, 4, 5, 1, 2, 1, 4, True),  # depthwise
]


class TestGatedConv2d:
    def test_smoke(self):
        assert gated_conv2d(torch.randn(1, 2, 5, 5), torch.randn(6, 2, 3, 3)).shape == (1, 3, 3, 3)

    @pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
    def test_matches_two_convolutions(self, geometry):
        c_in, c_out, k, stride, padding, dilation, groups, bias = geometry
        x = torch.randn(2, c_in, 11, 11)
        weight = torch.randn(2 * c_out, c_in // groups, k, k) * 0.3
        b = torch.randn(2 * c_out) if bias else None
        out = gated_conv2d(x, weight, b, stride, padding, dilation, groups)
        ref = gated_conv2d_split(x, weight, b, stride, padding, dilation, groups)
        torch.testing.assert_close(out, ref, **tolerance(torch.float32))

    def test_depthwise_gates_each_channel_from_its_own_input(self):
        layer = GatedConv2d(4, 4, 3, padding=1, groups=4)
        x = torch.randn(1, 4, 8, 8)
        out, _ = layer(x)
        poked = x.clone()
        poked[:, 2] += 10
        changed = (layer(poked)[0] - out).abs().amax((0, 2, 3)) > 0
        assert changed.tolist() == [False, False, True, False]

    @pytest.mark.parametrize(
        ("activation", "phi"),
        [("elu", F.elu), ("relu", F.relu), (None, None), (torch.tanh, torch.tanh)],
    )
    def test_activation(self, activation, phi):
        x, weight = torch.randn(2, 3, 6, 6), torch.randn(8, 3, 3, 3)
        out = gated_conv2d(x, weight, padding=1, activation=activation)
        torch.testing.assert_close(out, gated_conv2d_split(x, weight, None, 1, 1, phi=phi))

    def test_output_layer_without_activation_can_be_negative(self):
        out = gated_conv2d(torch.randn(2, 3, 6, 6), torch.randn(8, 3, 3, 3) * 3, activation=None)
        assert (out < -1).any()

    def test_gradcheck_float64(self):
        x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(4, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda x, w, b: gated_conv2d(x, w, b, 2, 1, 1, 2), (x, weight, b)
        )

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_low_precision_is_finite(self, dtype):
        layer = GatedConv2d(4, 4, 3, padding=1).to(dtype)
        x = (torch.randn(2, 4, 8, 8) * 100).to(dtype).requires_grad_()
        out, _ = layer(x)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()

    def test_module_matches_function(self):
        layer = GatedConv2d(4, 6, 3, stride=2, padding=1, groups=2, activation="silu")
        x = torch.randn(2, 4, 9, 9)
        out, _ = layer(x)
        assert torch.equal(
            out, gated_conv2d(x, layer.weight, layer.bias, 2, 1, 1, 2, activation="silu")
        )
        assert layer.weight.shape == (12, 2, 3, 3)

    def test_module_passes_mask_on_the_output_grid(self):
        layer = GatedConv2d(3, 4, 4, stride=2, padding=1)
        mask = torch.zeros(2, 1, 10, 10)
        mask[..., :5] = 1
        out, new_mask = layer(torch.randn(2, 3, 10, 10), mask)
        assert new_mask.shape == (2, 1, *out.shape[2:])
        assert new_mask[..., :2].all() and not new_mask[..., 4:].any()

    def test_torch_compile(self):
        layer = GatedConv2d(3, 4, 3, padding=1)
        compiled = torch.compile(layer, fullgraph=True)
        x, mask = torch.randn(2, 3, 8, 8), torch.ones(2, 1, 8, 8)
        out, new_mask = compiled(x, mask)
        ref, ref_mask = layer(x, mask)
        torch.testing.assert_close(out, ref)
        assert torch.equal(new_mask, ref_mask)
        # training: the weight, bias and input gradients through inductor's backward graph
        assert_compiles_like_eager(layer, [x.requires_grad_(), mask], backend="inductor")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"weight": torch.randn(5, 3, 3, 3)}, r"must be divisible by groups \* 2 = 2"),
            ({"bias": torch.randn(4)}, r"bias must be \(8,\), got \(4,\)"),
            ({"padding": -1}, "padding must be >= 0, got -1"),
            ({"activation": "swishy"}, "activation must be one of"),
        ],
    )
    def test_bad_inputs(self, kwargs, message):
        args = {"x": torch.randn(2, 3, 6, 6), "weight": torch.randn(8, 3, 3, 3), **kwargs}
        with pytest.raises(ValueError, match=message):
            gated_conv2d(**args)

    def test_unknown_activation_fails_at_construction(self):
        with pytest.raises(ValueError, match="activation must be one of"):
            GatedConv2d(3, 4, 3, activation="swishy")
