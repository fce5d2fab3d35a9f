"""The plain-op forms of the masking ops (what leaves PyTorch in an export) compute what the ops
compute, for every geometry the layers use, and hold no op but aten's."""

from __future__ import annotations

import pytest
import torch

from masking.kernels import plain
from masking.kernels.ops import mask_product, masked_conv2d, masked_linear, partial_conv2d
from tests.oracle import blob_mask

GEOMETRIES = [  # stride, padding, dilation, groups, per-channel mask
    ((1, 1), (1, 1), (1, 1), 1, False),
    ((2, 2), (3, 3), (1, 1), 1, False),
    ((1, 2), (2, 1), (2, 1), 2, False),
    ((1, 1), (1, 1), (1, 1), 2, True),
    ((2, 2), (0, 0), (1, 1), 1, True),
]


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups", "per_channel"), GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("soft", [False, True])
def test_partial_conv2d_plain_matches_the_op(
    stride, padding, dilation, groups, per_channel, bias, soft
):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 13, 11, generator=g)
    mask = blob_mask(2, 13, 0.4)[:, :, :, :11]
    if per_channel:
        mask = torch.cat(
            [blob_mask(2, 13, r, seed=i)[:, :, :, :11] for i, r in enumerate((0.2, 0.5, 0.7, 0.9))],
            1,
        )
    if soft:
        mask = mask * torch.rand(mask.shape, generator=g)
    weight = torch.randn(6, 4 // groups, 3, 5, generator=g)
    b = torch.randn(6, generator=g) if bias else None
    args = (x, mask, weight, b, stride, padding, dilation, groups)
    want = partial_conv2d(*args)
    got = plain.partial_conv2d(*args)
    for w, h in zip(want, got):
        torch.testing.assert_close(h, w, rtol=1e-5, atol=1e-5)
    if not per_channel:  # some windows are wholly hole: their output is 0, not the bias
        assert want[2].sum() < want[2].numel()


def test_masked_and_product_ops_plain_match():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, generator=g)
    w = torch.randn(5, 8, generator=g)
    m = (torch.rand(5, 8, generator=g) > 0.5).float()
    b = torch.randn(5, generator=g)
    torch.testing.assert_close(plain.masked_linear(x, w, m, b), masked_linear(x, w, m, b))
    image = torch.randn(2, 3, 9, 9, generator=g)
    cw = torch.randn(4, 3, 3, 3, generator=g)
    cm = (torch.rand(4, 3, 3, 3, generator=g) > 0.5).float()
    conv = ((2, 2), (1, 1), (1, 1), 1)
    torch.testing.assert_close(
        plain.masked_conv2d(image, cw, cm, None, *conv), masked_conv2d(image, cw, cm, None, *conv)
    )
    pixel = torch.rand(2, 1, 9, 9, generator=g) > 0.5
    torch.testing.assert_close(plain.mask_product(image, pixel), mask_product(image, pixel))


def test_every_op_of_the_core_but_the_serving_gemm_has_a_plain_form():
    ops = torch.ops.masking
    assert set(plain.plain_ops()) == {
        ops.mask_product.default,
        ops.mask_product_packed.default,
        ops.masked_linear.default,
        ops.masked_conv2d.default,
        ops.partial_conv2d.default,
    }
