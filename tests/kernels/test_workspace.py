"""The CPU scratch buffers of the partial convolution: reused across calls, never across
``torch.inference_mode``'s boundary (an inference tensor may not be written outside it)."""

from __future__ import annotations

import torch

from masking import PartialConv2d
from masking.kernels import workspace
from tests.oracle import blob_mask


def test_calls_inside_and_outside_inference_mode_share_no_buffer():
    workspace.clear()
    layer = PartialConv2d(4, 6, 3, padding=1).eval()
    x, mask = torch.randn(2, 4, 16, 16), blob_mask(2, 16, 0.4)
    with torch.inference_mode():  # first, as validation runs: its buffer is an inference tensor
        inside = layer(x, mask)[0]
    with torch.no_grad():  # then an export or a training step: it used to write into that buffer
        outside = layer(x, mask)[0]
    with torch.inference_mode():
        again = layer(x, mask)[0]
    torch.testing.assert_close(outside, inside)
    torch.testing.assert_close(again, inside)
    outside.sum().item()  # an ordinary tensor, usable outside inference mode
    assert not outside.is_inference()


def test_a_buffer_is_reused_within_one_mode():
    workspace.clear()
    t = torch.empty(8, 8)
    assert workspace.scratch_like(t, "a").data_ptr() == workspace.scratch_like(t, "a").data_ptr()
    assert workspace.scratch_like(t, "a").data_ptr() != workspace.scratch_like(t, "b").data_ptr()
