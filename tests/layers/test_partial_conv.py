"""PartialConv2d at the edges of its input space."""

import pytest
import torch
from torch import nn

from masking import PartialConv2d


@pytest.mark.parametrize("multi_channel", [False, True])
def test_an_empty_batch_gives_empty_outputs_like_conv2d(multi_channel):
    layer = PartialConv2d(3, 4, 3, padding=1, multi_channel=multi_channel)
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    mask = torch.ones(0, 3 if multi_channel else 1, 8, 8)
    out, new_mask = layer(x, mask)
    assert out.shape == nn.Conv2d(3, 4, 3, padding=1)(x).shape == (0, 4, 8, 8)
    _, full_mask = layer(torch.randn(1, 3, 8, 8), torch.ones(1, *mask.shape[1:]))
    assert new_mask.shape == (0, *full_mask.shape[1:])
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(layer.weight.grad, torch.zeros_like(layer.weight))
