import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import masking
from masking import PartialConv2d, partial_conv2d, update_mask2d
from tests.compiled import assert_compiles_like_eager
from tests.oracle import blob_mask, partial_conv2d_unfold, tolerance

# (c_in, c_out, kernel, stride, padding, dilation, groups, multi_channel, bias)
GEOMETRIES = [
    (3, 8, 3, 1, 1, 1, 1, False, True),
    (3, 8, 3, 1, 0, 1, 1, False, False),
    (4, 6, 3, 2, 1, 1, 1, False, True),
    (4, 6, 5, 1, 2, 1, 1, False, True),
    (4, 4, 7, 2, 3, 1, 1, False, True),
    (4, 6, 3, 1, 2, 2, 1, False, True),
    (4, 6, (3, 1), (2, 1), (1, 0), 1, 1, False, True),
    (4, 6, 3, 1, 1, 1, 2, False, True),
    (4, 4, 3, 1, 1, 1, 4, False, False),  # depthwise
    (4, 6, 3, 1, 1, 1, 1, True, True),
    (4, 6, 3, 2, 1, 2, 2, True, True),
    (4, 8, 3, 1, 1, 1, 4, True, False),
    (6, 6, 4, 2, 1, 1, 3, True, True),  # even kernel
]


def make_inputs(
    c_in,
    c_out,
    kernel,
    groups,
    multi_channel,
    bias,
    *,
    dtype=torch.float32,
    size=12,
    hole_ratio=0.4,
    batch=2,
):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = torch.randn(batch, c_in, size, size, dtype=dtype)
    weight = torch.randn(c_out, c_in // groups, kh, kw, dtype=dtype) * 0.3
    b = torch.randn(c_out, dtype=dtype) if bias else None
    channels = c_in if multi_channel else 1
    if multi_channel:
        mask = torch.cat([blob_mask(batch, size, hole_ratio, seed=i) for i in range(channels)], 1)
    else:
        mask = blob_mask(batch, size, hole_ratio)
    return x, mask, weight, b


class TestPartialConv2d:
    def test_smoke(self):
        out, new_mask = partial_conv2d(
            torch.randn(1, 3, 8, 8), torch.ones(1, 1, 8, 8), torch.randn(4, 3, 3, 3), padding=1
        )
        assert out.shape == (1, 4, 8, 8)
        assert new_mask.shape == (1, 1, 8, 8)

    @pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
    def test_matches_unfold_reference(self, geometry):
        c_in, c_out, kernel, stride, padding, dilation, groups, multi, bias = geometry
        x, mask, weight, b = make_inputs(c_in, c_out, kernel, groups, multi, bias)
        out, new_mask = partial_conv2d(
            x, mask, weight, b, stride, padding, dilation, groups, multi_channel=multi
        )
        ref, ref_mask = partial_conv2d_unfold(x, mask, weight, b, stride, padding, dilation, groups)
        torch.testing.assert_close(out.double(), ref, **tolerance(torch.float32))
        assert out.shape == ref.shape
        expected_mask = (
            ref_mask.repeat_interleave(c_out // ref_mask.shape[1], 1)
            if multi
            else (ref_mask[:, :1])
        )
        assert torch.equal(new_mask.double(), expected_mask)

    def test_formula_by_hand(self):
        # one 3x3 window, 4 of 9 inputs valid: the output is the valid sum scaled by 9/4, plus bias
        x = torch.arange(9.0).view(1, 1, 3, 3)
        mask = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 0, 1]]).view(1, 1, 3, 3)
        out, new_mask = partial_conv2d(x, mask, torch.ones(1, 1, 3, 3), torch.tensor([0.5]))
        assert out.item() == pytest.approx((0 + 2 + 6 + 8) * 9 / 4 + 0.5)
        assert new_mask.item() == 1

    def test_all_hole_gives_zeros_and_closes_mask(self):
        x, _, weight, b = make_inputs(3, 5, 3, 1, False, True)
        out, new_mask = partial_conv2d(x, torch.zeros(2, 1, 12, 12), weight, b, padding=1)
        assert torch.equal(out, torch.zeros_like(out))
        assert torch.equal(new_mask, torch.zeros_like(new_mask))

    def test_all_valid_without_padding_is_plain_conv(self):
        x, _, weight, b = make_inputs(3, 5, 3, 1, False, True)
        out, new_mask = partial_conv2d(x, torch.ones(2, 1, 12, 12), weight, b)
        torch.testing.assert_close(out, F.conv2d(x, weight, b))
        assert bool(new_mask.all())

    def test_all_valid_with_padding_renormalises_borders(self):
        # partial-convolution-based padding: a corner window sees 4 of 9 pixels
        x = torch.ones(1, 1, 5, 5)
        out, _ = partial_conv2d(x, torch.ones(1, 1, 5, 5), torch.ones(1, 1, 3, 3), padding=1)
        assert torch.allclose(out, torch.full_like(out, 9.0))

    def test_new_mask_grows_the_valid_region(self):
        mask = torch.zeros(1, 1, 9, 9)
        mask[..., 4, 4] = 1
        _, new_mask = partial_conv2d(
            torch.randn(1, 1, 9, 9), mask, torch.randn(1, 1, 3, 3), padding=1
        )
        assert new_mask.sum() == 9 and new_mask[0, 0, 3:6, 3:6].all()

    @pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.float32, torch.float64])
    def test_mask_dtypes_agree_and_new_mask_keeps_dtype(self, mask_dtype):
        x, mask, weight, b = make_inputs(3, 4, 3, 1, False, True)
        out, new_mask = partial_conv2d(x, mask.to(mask_dtype), weight, b, padding=1)
        ref, ref_mask = partial_conv2d(x, mask, weight, b, padding=1)
        torch.testing.assert_close(out, ref)
        assert new_mask.dtype == mask_dtype
        assert torch.equal(new_mask.float(), ref_mask)

    def test_soft_mask_counts_fractionally(self):
        x, _, weight, b = make_inputs(3, 4, 3, 1, False, True)
        mask = torch.rand(2, 1, 12, 12) * (torch.rand(2, 1, 12, 12) > 0.5)
        out, _ = partial_conv2d(x, mask, weight, b, padding=1)
        ref, _ = partial_conv2d_unfold(x, mask, weight, b, 1, 1, 1, 1)
        torch.testing.assert_close(out.double(), ref, **tolerance(torch.float32))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_low_precision_is_finite_with_all_hole_windows(self, dtype):
        x, mask, weight, b = make_inputs(8, 8, 3, 1, False, True, hole_ratio=0.6)
        mask[0] = 0  # a whole image of holes
        x = x * 50  # large activations: the ratio must not overflow in half precision
        out, new_mask = partial_conv2d(
            x.to(dtype), mask.to(dtype), weight.to(dtype), b.to(dtype), padding=1
        )
        assert out.dtype == dtype
        assert torch.isfinite(out).all() and torch.isfinite(new_mask).all()
        ref, _ = partial_conv2d_unfold(x.to(dtype), mask, weight.to(dtype), b.to(dtype), 1, 1, 1, 1)
        scale = ref.abs().max().item()
        torch.testing.assert_close(out.double() / scale, ref / scale, **tolerance(dtype))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_low_precision_gradients_are_finite(self, dtype):
        x, mask, weight, b = make_inputs(4, 4, 3, 1, False, True, hole_ratio=0.6)
        mask[0] = 0
        x, weight, b = (t.to(dtype).requires_grad_() for t in (x, weight, b))
        out, _ = partial_conv2d(x, mask, weight, b, padding=1)
        out.square().mean().backward()
        for t in (x, weight, b):
            assert torch.isfinite(t.grad).all()

    def test_autocast_bf16(self):
        layer = PartialConv2d(3, 4, 3, padding=1)
        x, mask = torch.randn(2, 3, 12, 12), blob_mask(2, 12, 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = layer(x, mask)
        assert out.dtype == torch.bfloat16
        ref, _ = layer(x, mask)
        torch.testing.assert_close(out.float(), ref, **tolerance(torch.bfloat16))

    @pytest.mark.parametrize(
        "geometry", [GEOMETRIES[0], GEOMETRIES[2], GEOMETRIES[7], GEOMETRIES[10]], ids=str
    )
    def test_gradcheck_float64(self, geometry):
        c_in, c_out, kernel, stride, padding, dilation, groups, multi, bias = geometry
        x, mask, weight, b = make_inputs(
            c_in, c_out, kernel, groups, multi, bias, dtype=torch.float64, size=7
        )
        args = [x.requires_grad_(), weight.requires_grad_()]
        if b is not None:
            args.append(b.requires_grad_())

        def fn(x, weight, b=None):
            return partial_conv2d(
                x, mask, weight, b, stride, padding, dilation, groups, multi_channel=multi
            )[0]

        assert torch.autograd.gradcheck(fn, args)

    def test_gradgradcheck_float64(self):
        x, mask, weight, b = make_inputs(2, 3, 3, 1, False, True, dtype=torch.float64, size=5)
        args = [t.requires_grad_() for t in (x, weight, b)]

        def fn(x, weight, b):
            return partial_conv2d(x, mask, weight, b, 1, 1)[0]

        assert torch.autograd.gradgradcheck(fn, args)

    def test_gradient_matches_reference_autograd(self):
        x, mask, weight, b = make_inputs(4, 6, 3, 2, True, True)
        ours = [t.clone().requires_grad_() for t in (x, weight, b)]
        theirs = [t.double().requires_grad_() for t in (x, weight, b)]
        out, _ = partial_conv2d(ours[0], mask, ours[1], ours[2], 2, 1, 1, 2, multi_channel=True)
        ref, _ = partial_conv2d_unfold(theirs[0], mask, theirs[1], theirs[2], 2, 1, 1, 2)
        grad = torch.randn_like(ref)
        out.backward(grad.float())
        ref.backward(grad)
        for a, r in zip(ours, theirs):
            torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-4, atol=1e-4)

    @pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bool, torch.uint8], ids=str)
    def test_all_valid_mask_values_and_gradients(self, mask_dtype):
        # a mask without holes skips the input product on CPU; the result must not notice
        x, _, weight, b = make_inputs(3, 5, 3, 1, False, True, size=9)
        mask = torch.ones(2, 1, 9, 9, dtype=mask_dtype)
        ours = [t.clone().requires_grad_() for t in (x, weight, b)]
        theirs = [t.double().requires_grad_() for t in (x, weight, b)]
        out, new_mask = partial_conv2d(ours[0], mask, ours[1], ours[2], padding=1)
        ref, ref_mask = partial_conv2d_unfold(theirs[0], mask.double(), *theirs[1:], 1, 1, 1, 1)
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(new_mask.double(), ref_mask)
        grad = torch.randn_like(ref)
        out.backward(grad.float())
        ref.backward(grad)
        for a, r in zip(ours, theirs):
            torch.testing.assert_close(a.grad.double(), r.grad, rtol=1e-4, atol=1e-4)
        x64, w64, b64 = (
            t.detach().double().requires_grad_() for t in (x[:1, :2, :5, :5], weight[:2, :2], b[:2])
        )
        ones = torch.ones(1, 1, 5, 5, dtype=torch.float64)
        assert torch.autograd.gradgradcheck(
            lambda *a: partial_conv2d(a[0], ones, a[1], a[2], padding=1)[0], (x64, w64, b64)
        )

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
    @pytest.mark.parametrize("channels_last", [False, True])
    def test_all_valid_mask_rescales_only_the_border(self, dtype, channels_last):
        # without holes the bias rides in the convolution and only windows reaching into the zero
        # padding are rescaled; geometries where some or every window lies wholly in the padding
        # (its output must be 0, not the bias) included
        for kernel, stride, padding, dilation in [
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (5, 1, 2, 1),
            (5, 3, 4, 1),
            (3, 1, 2, 2),
            (2, 1, 1, 1),
            (1, 1, 2, 1),  # the outer rows and columns see only padding
            (3, 1, 0, 1),  # no padding: nothing to rescale
            ((3, 1), (2, 1), (3, 0), 1),
        ]:
            for bias in (True, False):
                x, _, weight, b = make_inputs(3, 4, kernel, 1, False, bias, size=11, dtype=dtype)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                mask = torch.ones(2, 1, 11, 11, dtype=dtype)
                out, new_mask = partial_conv2d(x, mask, weight, b, stride, padding, dilation)
                ref, ref_mask = partial_conv2d_unfold(x, mask, weight, b, stride, padding, dilation)
                where = f"kernel {kernel} stride {stride} padding {padding} dilation {dilation}"
                torch.testing.assert_close(out.double(), ref, **tolerance(dtype), msg=where)
                assert torch.equal(new_mask.double(), ref_mask), where
                assert out.is_contiguous(
                    memory_format=torch.channels_last if channels_last else torch.contiguous_format
                )

    def test_holes_without_closed_windows(self):
        # isolated holes: every window keeps valid input, so the CPU epilogue is a single pass
        x, _, weight, b = make_inputs(3, 5, 3, 1, False, True, size=16)
        mask = torch.ones(2, 1, 16, 16)
        mask[:, :, ::3, 1::4] = 0
        out, new_mask = partial_conv2d(x, mask, weight, b, padding=1)
        ref, ref_mask = partial_conv2d_unfold(x, mask, weight, b, 1, 1, 1, 1)
        assert bool(ref_mask.all())
        torch.testing.assert_close(out.double(), ref, **tolerance(torch.float32))
        assert bool(new_mask.all())

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_minimum_valid_count(self, dtype):
        # a window holding less than MIN_VALID_COUNT of valid input is a hole; exactly that much is not
        minimum = masking.kernels.ops.MIN_VALID_COUNT
        mask = torch.zeros(1, 1, 9, 9, dtype=dtype)
        mask[0, 0, 1, 1] = minimum
        mask[0, 0, 7, 7] = torch.nextafter(
            torch.tensor(minimum, dtype=dtype), torch.tensor(0.0, dtype=dtype)
        )
        x = torch.ones(1, 1, 9, 9, dtype=dtype)
        out, new_mask = partial_conv2d(x, mask, torch.ones(1, 1, 3, 3, dtype=dtype), padding=1)
        assert bool(new_mask[0, 0, :3, :3].all()) and not new_mask[0, 0, 6:, 6:].any()
        torch.testing.assert_close(out[0, 0, 1, 1], torch.tensor(9.0, dtype=dtype))
        assert bool(torch.isfinite(out).all()) and not out[0, 0, 6:, 6:].any()

    @pytest.mark.parametrize("batch", [3, 40])  # one GEMV per image, and the batched path
    def test_bias_gradient_counts_only_valid_outputs(self, batch):
        x = torch.randn(batch, 2, 6, 6)
        mask = blob_mask(batch, 6, 0.6)
        mask[0] = 0
        bias = torch.zeros(3, requires_grad=True)
        out, new_mask = partial_conv2d(x, mask, torch.randn(3, 2, 3, 3), bias, padding=1)
        grad = torch.randn_like(out)
        out.backward(grad)
        torch.testing.assert_close(bias.grad, (grad * new_mask).sum((0, 2, 3)))

    def test_mask_receives_no_gradient(self):
        x, mask, weight, b = make_inputs(3, 4, 3, 1, False, True)
        mask.requires_grad_()
        x.requires_grad_()
        partial_conv2d(x, mask, weight, b, padding=1)[0].sum().backward()
        assert x.grad is not None and mask.grad is None

    def test_channels_last_in_channels_last_out(self):
        x, mask, weight, b = make_inputs(8, 8, 3, 1, False, True)
        out, _ = partial_conv2d(
            x.contiguous(memory_format=torch.channels_last), mask, weight, b, padding=1
        )
        ref, _ = partial_conv2d(x, mask, weight, b, padding=1)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, ref)

    def test_repeated_calls_do_not_share_state(self):
        # the op reuses scratch memory on CPU: results must not depend on earlier calls
        x, mask, weight, b = make_inputs(3, 4, 3, 1, False, True)
        first, _ = partial_conv2d(x, mask, weight, b, padding=1)
        other_x, other_mask = torch.randn_like(x), blob_mask(2, 12, 0.7, seed=5)
        partial_conv2d(other_x, other_mask, weight, b, padding=1)
        again, _ = partial_conv2d(x, mask, weight, b, padding=1)
        assert torch.equal(first, again)
        smaller, _ = partial_conv2d(x[:1, :, :9, :9], mask[:1, :, :9, :9], weight, b, padding=1)
        ref, _ = partial_conv2d_unfold(x[:1, :, :9, :9], mask[:1, :, :9, :9], weight, b, 1, 1, 1, 1)
        torch.testing.assert_close(smaller.double(), ref, **tolerance(torch.float32))

    @pytest.mark.parametrize("multi_channel", [False, True])
    def test_valid_count_is_not_a_dense_convolution(self, multi_channel):
        # the mask update is a box filter over a few channels: exactly one convolution runs
        x, mask, weight, b = make_inputs(16, 32, 3, 1, multi_channel, True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            partial_conv2d(x, mask, weight, b, padding=1, multi_channel=multi_channel)
        convs = [e for e in prof.events() if e.name == "aten::convolution"]
        assert len(convs) == 1

    def test_multi_channel_accepts_shared_mask(self):
        x, mask, weight, b = make_inputs(4, 6, 3, 1, False, True)
        out, new_mask = partial_conv2d(x, mask, weight, b, padding=1, multi_channel=True)
        ref, ref_mask = partial_conv2d(
            x, mask.expand(-1, 4, -1, -1), weight, b, padding=1, multi_channel=True
        )
        torch.testing.assert_close(out, ref)
        assert new_mask.shape == (2, 6, 12, 12) and torch.equal(new_mask, ref_mask)

    def test_module_matches_function(self):
        layer = PartialConv2d(4, 6, 3, stride=2, padding=1, groups=2, multi_channel=True)
        x, mask, _, _ = make_inputs(4, 6, 3, 2, True, True)
        out, new_mask = layer(x, mask)
        ref, ref_mask = partial_conv2d(
            x, mask, layer.weight, layer.bias, 2, 1, 1, 2, multi_channel=True
        )
        assert torch.equal(out, ref) and torch.equal(new_mask, ref_mask)

    def test_module_without_mask_is_partial_padding(self):
        layer = PartialConv2d(3, 4, 3, padding=1)
        x = torch.randn(2, 3, 10, 10)
        out, new_mask = layer(x)
        ref, _ = layer(x, torch.ones(2, 1, 10, 10))
        assert torch.equal(out, ref) and bool(new_mask.all())

    def test_module_keeps_no_state_between_calls(self):
        layer = PartialConv2d(3, 4, 3, padding=1)
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        buffers = list(layer.buffers())
        layer(torch.randn(2, 3, 16, 16), blob_mask(2, 16, 0.3))
        layer(torch.randn(1, 3, 9, 11), torch.ones(1, 1, 9, 11))
        assert buffers == [] and list(layer.buffers()) == []
        assert set(vars(layer)) == set(vars(PartialConv2d(3, 4, 3, padding=1)))
        assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())

    def test_dense_round_trip_is_exact(self):
        conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)
        layer = PartialConv2d.from_dense(conv)
        back = layer.to_dense()
        x = torch.randn(2, 4, 12, 12)
        assert torch.equal(back(x), conv(x))
        # all-valid input without padding effects equals the dense conv
        inner = PartialConv2d.from_dense(torch.nn.Conv2d(4, 6, 3))
        torch.testing.assert_close(inner(x)[0], F.conv2d(x, inner.weight, inner.bias))

    def test_padding_same(self):
        layer = PartialConv2d(3, 4, 5, padding="same", dilation=2)
        assert layer.padding == (4, 4)
        out, _ = layer(torch.randn(1, 3, 11, 11), torch.ones(1, 1, 11, 11))
        assert out.shape == (1, 4, 11, 11)

    def test_torch_compile(self):
        # training under inductor: the backward is traced (AOTAutograd), so the eager CPU shortcut
        # that reads the mask's values (no holes: skip x ⊙ m) must stay out of the graph
        layer = PartialConv2d(4, 6, 3, stride=2, padding=1)
        x, mask, _, _ = make_inputs(4, 6, 3, 1, False, True, size=16)
        assert_compiles_like_eager(layer, [x.requires_grad_(), mask], backend="inductor")

    def test_torch_compile_all_valid_mask(self):
        # eagerly an all-valid mask takes the no-holes shortcut, in the graph the product: the same
        layer = PartialConv2d(4, 6, 3, stride=2, padding=1)
        x = torch.randn(2, 4, 12, 12, requires_grad=True)
        assert_compiles_like_eager(layer, [x, torch.ones(2, 1, 12, 12)], backend="aot_eager")

    def test_torch_compile_multi_channel_and_without_mask(self):
        layer = PartialConv2d(4, 6, 3, padding=1, groups=2, multi_channel=True)
        x, mask, _, _ = make_inputs(4, 6, 3, 2, True, True, size=10)
        assert_compiles_like_eager(layer, [x.requires_grad_(), mask], backend="aot_eager")
        # mask=None: partial-convolution padding, the mask built inside the graph
        layer = PartialConv2d(4, 6, 3, padding=1)
        assert_compiles_like_eager(layer, [x], backend="aot_eager")

    def test_torch_compile_function_form(self):
        # the function form, as a training step calls it: every differentiable input gets its
        # gradient from the compiled graph, the mask none
        x, mask, weight, b = make_inputs(3, 5, 3, 1, False, True, size=9)

        def step(x, mask, weight, b):
            return partial_conv2d(x, mask, weight, b, 2, 1)

        leaves = [x.requires_grad_(), mask, weight.requires_grad_(), b.requires_grad_()]
        assert_compiles_like_eager(step, leaves, backend="aot_eager")

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"mask": torch.ones(2, 3, 12, 12)}, ValueError, "pass multi_channel=True"),
            ({"weight": torch.randn(5, 2, 3, 3)}, ValueError, "expects 2 input channels"),
            ({"bias": torch.randn(4)}, ValueError, r"bias must be \(5,\), got \(4,\)"),
            ({"stride": 0}, ValueError, "stride must be >= 1"),
            ({"x": torch.ones(2, 3, 12, 12, dtype=torch.int32)}, TypeError, "floating-point"),
        ],
    )
    def test_bad_inputs(self, kwargs, error, message):
        x, mask, weight, b = make_inputs(3, 5, 3, 1, False, True)
        args = {"x": x, "mask": mask, "weight": weight, "bias": b, **kwargs}
        with pytest.raises(error, match=message):
            partial_conv2d(**args)


class TestUpdateMask2d:
    """The mask update alone; it has no gradient (its output is a comparison), so no gradcheck."""

    def test_smoke(self):
        mask = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
        mask[0, 0, 2, 2] = True
        new_mask = update_mask2d(mask, 3, padding=1)
        assert new_mask.dtype == torch.bool and int(new_mask.sum()) == 9

    @pytest.mark.parametrize("channels", [1, 3])
    def test_matches_the_oracle_mask(self, channels):
        mask = torch.cat([blob_mask(2, 13, 0.6, seed=i) for i in range(channels)], 1)
        new_mask = update_mask2d(mask, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
        weight = torch.ones(1, channels, 3, 5)
        _, expected = partial_conv2d_unfold(
            torch.ones(2, channels, 13, 13), mask, weight, None, (2, 1), (1, 2), (1, 2)
        )
        assert new_mask.shape == (2, 1, 7, 9) == expected.shape
        assert torch.equal(new_mask.double(), expected)

    @pytest.mark.parametrize(
        ("kernel", "stride", "padding", "dilation"),
        [(3, 1, 1, 1), (4, 2, 1, 1), (3, 2, 2, 2), (7, 2, 3, 1)],
    )
    def test_matches_partial_conv_mask(self, kernel, stride, padding, dilation):
        mask = blob_mask(2, 17, 0.5)
        _, expected = partial_conv2d(
            torch.randn(2, 1, 17, 17),
            mask,
            torch.randn(1, 1, kernel, kernel),
            None,
            stride,
            padding,
            dilation,
        )
        assert torch.equal(update_mask2d(mask, kernel, stride, padding, dilation), expected)

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="mask must be"):
            update_mask2d(torch.ones(4, 4), 3)
        with pytest.raises(ValueError, match="smaller than the kernel"):
            update_mask2d(torch.ones(1, 1, 2, 2), 5)

    def test_torch_compile(self):
        def fn(mask):
            return update_mask2d(mask, 3, stride=2, padding=1)

        mask = blob_mask(2, 12, 0.5)
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        assert torch.equal(compiled(mask), fn(mask))
        assert torch.equal(compiled(mask.bool()), fn(mask.bool()))


def test_value_checks_can_be_disabled():
    x, weight = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3)
    with pytest.raises(ValueError, match="mask must hold values in"):
        partial_conv2d(x, torch.full((1, 1, 4, 4), 2.0), weight)
    masking.set_value_checks(False)
    try:
        partial_conv2d(x, torch.full((1, 1, 4, 4), 2.0), weight)
    finally:
        masking.set_value_checks(True)
