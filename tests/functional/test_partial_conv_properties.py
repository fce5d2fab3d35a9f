"""Property tests: random geometries, groups, mask densities and dtypes against the unfold oracle."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import partial_conv2d
from tests.oracle import partial_conv2d_unfold, tolerance


@st.composite
def cases(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kh // 2 + 1)), draw(st.integers(0, kw // 2 + 1)))
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    h = draw(st.integers(max(1, span_h - 2 * padding[0]), 12))
    w = draw(st.integers(max(1, span_w - 2 * padding[1]), 12))
    return {
        "shape": (draw(st.integers(1, 3)), c_in, h, w),
        "weight": (c_out, c_in // groups, kh, kw),
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "multi_channel": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "density": draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_partial_conv2d_matches_the_oracle(case):
    g = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    x = torch.randn(case["shape"], generator=g).to(dtype)
    weight = (torch.randn(case["weight"], generator=g) * 0.5).to(dtype)
    bias = torch.randn(case["weight"][0], generator=g).to(dtype) if case["bias"] else None
    b, c_in, h, w = case["shape"]
    channels = c_in if case["multi_channel"] else 1
    mask = (torch.rand(b, channels, h, w, generator=g) < case["density"]).float()
    args = (case["stride"], case["padding"], case["dilation"], case["groups"])
    out, new_mask = partial_conv2d(
        x, mask, weight, bias, *args, multi_channel=case["multi_channel"]
    )
    ref, ref_mask = partial_conv2d_unfold(x, mask, weight, bias, *args)
    assert torch.isfinite(out).all()
    assert out.dtype == dtype and out.shape == ref.shape
    # windows hold few terms here, so a low-precision result is within a few units of its rounding
    scale = max(1.0, ref.abs().max().item())
    torch.testing.assert_close(out.double() / scale, ref / scale, **tolerance(dtype))
    expected_mask = (
        ref_mask[:, :1]
        if not case["multi_channel"]
        else ref_mask.repeat_interleave(weight.shape[0] // ref_mask.shape[1], 1)
    )
    assert torch.equal(new_mask.double(), expected_mask)
