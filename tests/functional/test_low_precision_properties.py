"""Half-precision properties of the masked ops on CPU, and on CUDA when there is one: fp16 and bf16
tensors, and fp32 tensors under ``torch.autocast``, over random geometries, groups and masks (all
hole, all valid, one valid pixel, random, soft), against the float64 oracle.

``test_partial_conv_properties.py`` pins the fp32/fp64/bf16 forward of ``partial_conv2d``; this file
adds fp16, autocast, gradients, the updated masks, ``gated_conv2d``, ``mask_product`` and the layers.

Tolerances are forward-error bounds taken from the dtype: a result computed with unit roundoff ``u``
(``eps / 2``) is within ``ROUNDINGS · u`` times the same computation on absolute values of the exact
result (``|W|ᵀ(|X| ⊙ M) · ratio + |b|`` for a partial convolution). That is the scale of the terms an
output sums, which cancellation cannot shrink; ``ROUNDINGS`` counts the roundings on the way (the
inputs under autocast, the convolution's result, the rescaling, the bias, the upstream gradient),
with a margin.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from masking import GatedConv2d, PartialConv2d, gated_conv2d, mask_product, partial_conv2d
from masking.functional import ACTIVATIONS
from tests.oracle import gated_conv2d_split, partial_conv2d_unfold

HALF = (torch.float16, torch.bfloat16)
ROUNDINGS = 8
MASK_KINDS = ("hole", "valid", "one", "random", "soft")
# activations whose derivative is Lipschitz (|φ''| <= 1): their gradients are compared, not only
# checked for finiteness (at a kink, half precision may land on the other side of 0)
SMOOTH = {"elu", "gelu", "silu", "tanh", "none"}
# bounds on |φ'| and |φ''| over SMOOTH (GELU's φ' peaks at 1.13), and on σ's
PHI_SLOPE, PHI_CURVATURE = 1.2, 1.0
SIGMOID_SLOPE, SIGMOID_CURVATURE = 0.25, 0.1
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# the CUDA runs check the Triton kernels and cuDNN under the same bounds; skipped without a GPU
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def assert_within(actual: Tensor | None, exact: Tensor, bound: Tensor, dtype, what: str) -> None:
    """``|actual - exact| <= ROUNDINGS · u · bound`` (plus the smallest normal, for subnormals)."""
    assert actual is not None, f"{what} has no gradient"
    assert torch.isfinite(actual).all(), f"{what} is not finite"
    assert actual.shape == exact.shape, f"{what}: shape {tuple(actual.shape)} != {exact.shape}"
    error = (actual.double() - exact).abs()
    limit = ROUNDINGS * roundoff(dtype) * bound + torch.finfo(dtype).smallest_normal
    excess = (error / limit).max().item()
    assert excess <= 1, f"{what}: error {error.max().item():.3g} is {excess:.2f}x its bound"


def make_mask(
    kind: str, shape, dtype: torch.dtype, g: torch.Generator, density: float, device="cpu"
) -> Tensor:
    """A mask of ``kind``; "one" has a single valid element per image, "soft" holds quarters."""
    if kind == "hole":
        mask = torch.zeros(shape)
    elif kind == "valid":
        mask = torch.ones(shape)
    elif kind == "one":
        mask = torch.zeros(shape[0], shape[1:].numel())
        mask[torch.arange(shape[0]), torch.randint(shape[1:].numel(), (shape[0],), generator=g)] = 1
        mask = mask.view(shape)
    elif kind == "random":
        mask = (torch.rand(shape, generator=g) < density).float()
    else:
        mask = torch.randint(0, 5, shape, generator=g) / 4  # exact in every float dtype
    return mask.to(device=device, dtype=dtype)


@st.composite
def conv_cases(draw, *, out_per_group: int = 1):
    groups = draw(st.sampled_from([1, 2, 3]))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kh // 2 + 1)), draw(st.integers(0, kw // 2 + 1)))
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    c_in = groups * draw(st.integers(1, 3))
    return {
        "batch": draw(st.integers(1, 3)),
        "c_in": c_in,
        "c_out": groups * draw(st.integers(1, 2)),
        "size": (
            draw(st.integers(max(1, span_h - 2 * padding[0]), 12)),
            draw(st.integers(max(1, span_w - 2 * padding[1]), 12)),
        ),
        "kernel": (kh, kw),
        "geometry": (stride, padding, dilation, groups),
        "bias": draw(st.booleans()),
        "mask_kind": draw(st.sampled_from(MASK_KINDS)),
        "density": draw(st.sampled_from([0.05, 0.5, 0.95])),
        "dtype": draw(st.sampled_from(HALF)),
        "autocast": draw(st.booleans()),
        "via_layer": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def precision(case, device: str) -> tuple[contextlib.AbstractContextManager, torch.dtype]:
    """The context to run in and the dtype of the leaves: fp32 under autocast, else half."""
    if case["autocast"]:
        return torch.autocast(device, dtype=case["dtype"]), torch.float32
    return contextlib.nullcontext(), case["dtype"]


def leaves(case, g: torch.Generator, weight_rows: int, leaf_dtype: torch.dtype, device: str):
    """x, weight and bias, as values representable in ``leaf_dtype``, requiring grad."""
    b, c_in, (h, w) = case["batch"], case["c_in"], case["size"]
    groups = case["geometry"][3]
    x = torch.randn(b, c_in, h, w, generator=g)
    weight = 0.5 * torch.randn(weight_rows, c_in // groups, *case["kernel"], generator=g)
    bias = torch.randn(weight_rows, generator=g) if case["bias"] else None
    return tuple(
        None if t is None else t.to(device=device, dtype=leaf_dtype).requires_grad_()
        for t in (x, weight, bias)
    )


def f64_leaves(*tensors: Tensor | None, absolute: bool = False):
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        t = t.detach().double()
        out.append((t.abs() if absolute else t).requires_grad_())
    return out


def grads(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.grad for t in tensors]


# ------------------------------------------------------------------------------------ mask product


@st.composite
def mask_product_cases(draw):
    shape = tuple(draw(st.integers(1, n)) for n in (3, 4, 9, 9))
    kept = [draw(st.booleans()) for _ in shape]
    mask_shape = tuple(s if keep else 1 for s, keep in zip(shape, kept))
    mask_shape = mask_shape[draw(st.integers(0, 2)) :]  # fewer leading dimensions broadcast too
    kind = draw(st.sampled_from(MASK_KINDS))
    dtype = draw(st.sampled_from(HALF))
    float_masks = [torch.float32, dtype]
    mask_dtypes = float_masks if kind == "soft" else [torch.bool, torch.uint8, *float_masks]
    return {
        "shape": shape,
        "mask_shape": mask_shape,
        "mask_kind": kind,
        "mask_dtype": draw(st.sampled_from(mask_dtypes)),
        "dtype": dtype,
        "autocast": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(mask_product_cases())
def test_mask_product_in_half_precision(device, case):
    g = torch.Generator().manual_seed(case["seed"])
    context, leaf_dtype = precision(case, device)
    x = torch.randn(case["shape"], generator=g).to(device=device, dtype=leaf_dtype).requires_grad_()
    shape = torch.Size(case["mask_shape"])
    mask = make_mask(case["mask_kind"], shape, case["mask_dtype"], g, 0.5, device)
    if mask.is_floating_point():
        mask.requires_grad_()
    with context:
        out = mask_product(x, mask)
    upstream = torch.randn(out.shape, generator=g).to(device)
    (out.float() * upstream).sum().backward()

    # elementwise, so autocast leaves it alone; and keeping or zeroing a value is exact
    assert out.dtype == x.dtype and out.shape == x.shape
    ref_x, ref_mask = f64_leaves(x, mask if mask.is_floating_point() else None)
    ref_out = ref_x * (mask.double() if ref_mask is None else ref_mask)
    ref_out.backward(upstream.double())
    if case["mask_kind"] == "soft":
        assert_within(out, ref_out.detach(), ref_out.detach().abs(), x.dtype, "out")
    else:
        assert torch.equal(out.double(), ref_out.detach())
    assert_within(x.grad, ref_x.grad, (upstream.double() * mask.double()).abs(), x.dtype, "x.grad")
    if mask.is_floating_point():
        bound = (upstream.double() * x.detach().double()).abs().sum_to_size(shape)
        # the gradient is reduced in x's dtype, then stored in the mask's
        worst = x.dtype if roundoff(x.dtype) > roundoff(mask.dtype) else mask.dtype
        assert_within(mask.grad, ref_mask.grad, bound, worst, "mask.grad")
        assert mask.grad.dtype == mask.dtype


# ------------------------------------------------------------------------------------ partial conv


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(conv_cases(), st.booleans())
def test_partial_conv2d_in_half_precision(device, case, multi_channel):
    g = torch.Generator().manual_seed(case["seed"])
    context, leaf_dtype = precision(case, device)
    stride, padding, dilation, groups = case["geometry"]
    x, weight, bias = leaves(case, g, case["c_out"], leaf_dtype, device)
    mask_channels = case["c_in"] if multi_channel else 1
    mask_dtype = torch.float32 if case["mask_kind"] == "soft" else torch.bool
    mask_shape = torch.Size((case["batch"], mask_channels, *case["size"]))
    mask = make_mask(case["mask_kind"], mask_shape, mask_dtype, g, case["density"], device)
    if mask.is_floating_point():
        mask.requires_grad_()  # documented as a constant: it must receive no gradient

    if case["via_layer"]:
        layer = PartialConv2d(
            case["c_in"],
            case["c_out"],
            case["kernel"],
            stride,
            padding,
            dilation,
            groups,
            case["bias"],
            multi_channel=multi_channel,
            dtype=leaf_dtype,
            device=device,
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        weight, bias = layer.weight, layer.bias

        def conv(x, mask):
            return layer(x, mask)
    else:

        def conv(x, mask):
            return partial_conv2d(
                x,
                mask,
                weight,
                bias,
                stride,
                padding,
                dilation,
                groups,
                multi_channel=multi_channel,
            )

    with context:
        out, new_mask = conv(x, mask)
    upstream = torch.randn(out.shape, generator=g).to(device)
    (out.float() * upstream).sum().backward()

    assert out.dtype == case["dtype"]
    assert mask.grad is None
    # the updated mask is exactly the fp32 one, in the mask's dtype
    _, fp32_mask = partial_conv2d(
        x.detach().float(),
        mask.detach(),
        weight.detach().float(),
        None,
        stride,
        padding,
        dilation,
        groups,
        multi_channel=multi_channel,
    )
    assert new_mask.dtype == mask.dtype and torch.equal(new_mask, fp32_mask)
    holes = (new_mask == 0).expand_as(out)
    assert out[holes].eq(0).all(), "a window without valid input must give exactly 0"

    geometry = (stride, padding, dilation, groups)
    exact = f64_leaves(x, weight, bias)
    ref, _ = partial_conv2d_unfold(exact[0], mask.detach(), exact[1], exact[2], *geometry)
    ref.backward(upstream.double())
    # the same computation on absolute values bounds the terms of the output and of each gradient
    absolute = f64_leaves(x, weight, bias, absolute=True)
    scale, _ = partial_conv2d_unfold(
        absolute[0], mask.detach(), absolute[1], absolute[2], *geometry
    )
    scale.backward(upstream.double().abs())
    dtype = case["dtype"]
    assert_within(out, ref.detach(), scale.detach(), dtype, "out")
    for name, actual, want, bound in zip(
        ("x.grad", "weight.grad", "bias.grad"),
        grads(x, weight, bias),
        grads(*exact),
        grads(*absolute),
    ):
        if want is not None:
            assert actual.dtype == leaf_dtype
            assert_within(actual, want, bound, dtype, name)


# -------------------------------------------------------------------------------------- gated conv


def gated_bounds(x, weight, bias, geometry, phi, upstream: Tensor) -> dict[str, Tensor]:
    """Error bounds (before ``ROUNDINGS · u``) of the gated output and its gradients.

    Feature and gate are convolutions, whose errors are bounded by ``conv(|x|, |W|) + |b|``; the
    output's error propagates them through φ and σ with the bounds on their slopes, and a gradient's
    error is the transposed convolution of the error in the upstream gradient of feature and gate.
    """
    stride, padding, dilation, groups = geometry
    xs, ws, bs = f64_leaves(x, weight, bias)
    pre = F.conv2d(xs, ws, bs, stride, padding, dilation, groups)
    b, c2, h, w = pre.shape
    halves = pre.view(b, groups, 2, c2 // (2 * groups), h, w)
    feature, gate = halves[:, :, 0], halves[:, :, 1]
    feature.retain_grad()
    gate.retain_grad()
    phi = phi or (lambda t: t)
    activated = phi(feature)
    out = activated * torch.sigmoid(gate)
    out.backward(upstream.double().view(b, groups, -1, h, w))

    xa, wa, ba = f64_leaves(x, weight, bias, absolute=True)
    magnitude = F.conv2d(xa, wa, ba, stride, padding, dilation, groups)
    halves_abs = magnitude.detach().view(b, groups, 2, c2 // (2 * groups), h, w)
    # every bound below is in units of ROUNDINGS · u
    feature_error, gate_error = halves_abs[:, :, 0], halves_abs[:, :, 1]
    sig, act = torch.sigmoid(gate).detach(), activated.detach().abs()
    up = upstream.double().abs().view_as(act)
    # φ and σ in half precision are off by a rounding of max(|value|, 1) (tanh, σ near ±1)
    out_bound = PHI_SLOPE * feature_error * sig + SIGMOID_SLOPE * act * gate_error + act + 1
    # the upstream gradients of feature and gate: their own rounding, plus what the errors change
    feature_up = feature.grad.abs() + up * (
        PHI_CURVATURE * feature_error * sig + PHI_SLOPE * SIGMOID_SLOPE * gate_error
    )
    gate_up = gate.grad.abs() + up * (
        PHI_SLOPE * SIGMOID_SLOPE * feature_error + SIGMOID_CURVATURE * act * gate_error
    )
    magnitude.backward(torch.stack([feature_up, gate_up], 2).view_as(magnitude))
    return {"out": out_bound.reshape(b, -1, h, w), "grads": grads(xa, wa, ba)}


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(conv_cases(), st.sampled_from(sorted(ACTIVATIONS)))
def test_gated_conv2d_in_half_precision(device, case, activation):
    g = torch.Generator().manual_seed(case["seed"])
    context, leaf_dtype = precision(case, device)
    stride, padding, dilation, groups = case["geometry"]
    x, weight, bias = leaves(case, g, 2 * case["c_out"], leaf_dtype, device)
    mask_shape = torch.Size((case["batch"], 1, *case["size"]))
    mask = make_mask(case["mask_kind"], mask_shape, torch.float32, g, case["density"], device)

    if case["via_layer"]:
        layer = GatedConv2d(
            case["c_in"],
            case["c_out"],
            case["kernel"],
            stride,
            padding,
            dilation,
            groups,
            case["bias"],
            activation=activation,
            dtype=leaf_dtype,
            device=device,
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        weight, bias = layer.weight, layer.bias
        with context:
            out, new_mask = layer(x, mask)
        # the mask is passed along on the output grid, exactly as in fp32
        fp32_layer = copy.deepcopy(layer).float()
        assert torch.equal(new_mask, fp32_layer(x.detach().float(), mask)[1])
    else:
        with context:
            out = gated_conv2d(
                x, weight, bias, stride, padding, dilation, groups, activation=activation
            )
    upstream = torch.randn(out.shape, generator=g).to(device)
    (out.float() * upstream).sum().backward()
    assert out.dtype == case["dtype"]

    phi = ACTIVATIONS[activation]
    exact = f64_leaves(x, weight, bias)
    ref = gated_conv2d_split(exact[0], exact[1], exact[2], stride, padding, dilation, groups, phi)
    ref.backward(upstream.double())
    dtype = case["dtype"]
    bounds = gated_bounds(x, weight, bias, case["geometry"], phi, upstream)
    assert_within(out, ref.detach(), bounds["out"], dtype, "out")
    for name, actual, want, bound in zip(
        ("x.grad", "weight.grad", "bias.grad"),
        grads(x, weight, bias),
        grads(*exact),
        bounds["grads"],
    ):
        if want is None:
            continue
        assert actual.dtype == leaf_dtype
        if activation in SMOOTH:
            assert_within(actual, want, bound, dtype, name)
        else:
            assert torch.isfinite(actual).all(), f"{name} is not finite"


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_the_bounds_catch_a_wrong_result(dtype):
    """The tolerance has teeth: mixing up features and gates, or dropping the renormalisation,
    is far outside it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g).to(dtype)
    weight = (0.5 * torch.randn(6, 4, 3, 3, generator=g)).to(dtype)
    out = gated_conv2d(x, weight, padding=1)
    swapped = torch.cat([weight[3:], weight[:3]])
    upstream = torch.ones(out.shape)
    bounds = gated_bounds(x, swapped, None, ((1, 1), (1, 1), (1, 1), 1), F.elu, upstream)
    wrong = gated_conv2d_split(x.double(), swapped.double(), None, 1, 1)
    with pytest.raises(AssertionError, match="its bound"):
        assert_within(out, wrong, bounds["out"], dtype, "out")

    mask = make_mask("random", torch.Size((2, 1, 8, 8)), torch.float32, g, density=0.3)
    out, _ = partial_conv2d(x, mask, weight, padding=1)
    absolute = partial_conv2d_unfold(x.double().abs(), mask, weight.double().abs(), None, 1, 1)[0]
    unnormalised = F.conv2d(x.double() * mask, weight.double(), padding=1)
    with pytest.raises(AssertionError, match="its bound"):
        assert_within(out, unnormalised, absolute, dtype, "out")
