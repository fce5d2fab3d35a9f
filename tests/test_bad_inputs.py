"""Bad input at the public boundary: a typed one-line error that names the argument."""

import pytest
import torch

from masking import (
    GatedConv2d,
    PartialConv2d,
    gated_conv2d,
    mask_product,
    partial_conv2d,
)

X = torch.randn(4, 3, 8, 8)
W = torch.randn(5, 3, 3, 3)
M = torch.ones(4, 1, 8, 8)

CASES = [
    # (description, call, error type, text the message must contain)
    (
        "mask rank",
        lambda: partial_conv2d(X, torch.ones(4, 3, 8), W),
        ValueError,
        "mask must be (4, 1, 8, 8) to match x of shape (4, 3, 8, 8), got (4, 3, 8)",
    ),
    (
        "mask batch",
        lambda: partial_conv2d(X, torch.ones(2, 1, 8, 8), W),
        ValueError,
        "got (2, 1, 8, 8)",
    ),
    (
        "mask size",
        lambda: partial_conv2d(X, torch.ones(4, 1, 8, 7), W),
        ValueError,
        "mask must be (4, 1, 8, 8)",
    ),
    (
        "per-channel mask without multi_channel",
        lambda: partial_conv2d(X, torch.ones(4, 3, 8, 8), W),
        ValueError,
        "pass multi_channel=True",
    ),
    (
        "multi-channel mask with wrong channels",
        lambda: partial_conv2d(X, torch.ones(4, 2, 8, 8), W, multi_channel=True),
        ValueError,
        "mask must be (4, 1, 8, 8) or (4, 3, 8, 8)",
    ),
    (
        "integer x",
        lambda: partial_conv2d(X.long(), M, W),
        TypeError,
        "x must be a floating-point tensor, got dtype torch.int64",
    ),
    (
        "complex x",
        lambda: mask_product(torch.randn(3, dtype=torch.complex64), torch.ones(3)),
        TypeError,
        "x must be a floating-point tensor",
    ),
    (
        "x not a tensor",
        lambda: partial_conv2d(X.numpy(), M, W),
        TypeError,
        "x must be a torch.Tensor, got ndarray",
    ),
    (
        "x rank",
        lambda: partial_conv2d(X[0], M, W),
        ValueError,
        "x must be (B, C, H, W), got (3, 8, 8)",
    ),
    (
        "negative mask",
        lambda: partial_conv2d(X, M - 2, W),
        ValueError,
        "mask must hold values in [0, 1] (1 = valid), got min -1",
    ),
    ("mask above one", lambda: partial_conv2d(X, M * 255, W), ValueError, "mask > 127"),
    (
        "uint8 0/255 mask",
        lambda: mask_product(X, (M * 255).to(torch.uint8)),
        ValueError,
        "mask must hold values in [0, 1]",
    ),
    ("NaN mask", lambda: partial_conv2d(X, M * float("nan"), W), ValueError, "mask contains NaN"),
    (
        "int64 mask",
        lambda: mask_product(X, M.long()),
        TypeError,
        "mask must be bool, uint8 or floating-point, got dtype torch.int64",
    ),
    (
        "mask not a tensor",
        lambda: partial_conv2d(X, 1.0, W),
        TypeError,
        "mask must be a torch.Tensor, got float",
    ),
    (
        "mask does not broadcast",
        lambda: mask_product(X, torch.ones(4, 2, 8, 8)),
        ValueError,
        "mask of shape (4, 2, 8, 8) does not broadcast to x of shape (4, 3, 8, 8)",
    ),
    ("mask larger than x", lambda: mask_product(X[0], M), ValueError, "does not broadcast"),
    (
        "weight channels",
        lambda: partial_conv2d(X, M, torch.randn(5, 2, 3, 3)),
        ValueError,
        "weight of shape (5, 2, 3, 3) with groups=1 expects 2 input channels, but x has 3",
    ),
    (
        "weight dtype",
        lambda: partial_conv2d(X, M, W.double()),
        TypeError,
        "weight dtype torch.float64 does not match x dtype torch.float32",
    ),
    ("weight rank", lambda: partial_conv2d(X, M, W[0]), ValueError, "weight must be (C_out"),
    (
        "bias shape",
        lambda: partial_conv2d(X, M, W, torch.randn(4)),
        ValueError,
        "bias must be (5,), got (4,)",
    ),
    (
        "groups do not divide",
        lambda: partial_conv2d(X, M, W, groups=2),
        ValueError,
        "with groups=2 expects",
    ),
    (
        "groups zero",
        lambda: partial_conv2d(X, M, W, groups=0),
        ValueError,
        "groups must be a positive int, got 0",
    ),
    (
        "negative padding",
        lambda: partial_conv2d(X, M, W, padding=-1),
        ValueError,
        "padding must be >= 0, got -1",
    ),
    ("zero stride", lambda: partial_conv2d(X, M, W, stride=0), ValueError, "stride must be >= 1"),
    (
        "stride triple",
        lambda: partial_conv2d(X, M, W, stride=(1, 1, 1)),
        TypeError,
        "stride must be an int or a pair of ints, got (1, 1, 1)",
    ),
    (
        "kernel larger than input",
        lambda: partial_conv2d(X[..., :2, :2], M[..., :2, :2], W),
        ValueError,
        "x of spatial size (2, 2) is smaller than the kernel (3, 3)",
    ),
    (
        "gated odd weight rows",
        lambda: gated_conv2d(X, torch.randn(5, 3, 3, 3)),
        ValueError,
        "weight's 5 output channels must be divisible by groups * 2 = 2",
    ),
    (
        "gated unknown activation",
        lambda: gated_conv2d(X, torch.randn(6, 3, 3, 3), activation="mish"),
        ValueError,
        "activation must be one of",
    ),
    (
        "gated layer mask batch",
        lambda: GatedConv2d(3, 4, 3)(X, torch.ones(2, 1, 8, 8)),
        ValueError,
        "mask must be (B, 1, H, W) = (4, 1, 8, 8) to match x of shape (4, 3, 8, 8), got (2, 1, 8, 8)",
    ),
    (
        "layer groups",
        lambda: GatedConv2d(3, 4, 3, groups=2),
        ValueError,
        "in_channels (3) and out_channels (4) must be divisible by groups (2)",
    ),
    (
        "padding same with stride",
        lambda: PartialConv2d(3, 4, 3, stride=2, padding="same"),
        ValueError,
        "padding='same' needs stride 1",
    ),
    (
        "padding same with even kernel",
        lambda: PartialConv2d(3, 4, 4, padding="same"),
        ValueError,
        "padding='same' needs an odd effective kernel size",
    ),
    (
        "unknown padding string",
        lambda: PartialConv2d(3, 4, 3, padding="full"),
        ValueError,
        "padding must be an int, a pair of ints, 'same' or 'valid', got 'full'",
    ),
]


@pytest.mark.parametrize(("description", "call", "error", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(description, call, error, text):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert text in message, message
    assert "\n" not in message


def test_all_hole_and_all_valid_masks_are_not_errors():
    for mask in (torch.zeros_like(M), torch.ones_like(M)):
        out, _ = partial_conv2d(X, mask, W, padding=1)
        assert torch.isfinite(out).all()
