"""Inpainting one image: the tiled path for large images blends its tiles into the same image the
one-pass path gives, and keeps the known pixels."""

import pytest
import torch
from torch import nn

from masking.models import PConvUNet
from tasks.modules.inference import _ramp, _starts, inpaint


class Pointwise(nn.Module):
    """A 'network' whose output at a pixel depends on that pixel alone, so tiling cannot change it."""

    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, mask):
        return x * self.scale + (1 - mask) * 0.25


@pytest.mark.parametrize(("h", "w"), [(40, 40), (37, 61), (100, 23)])
def test_tiles_blend_into_the_one_pass_result(h, w):
    image, mask = torch.rand(3, h, w), (torch.rand(h, w) > 0.3).float()
    whole = inpaint(Pointwise(), image, mask, tile=10_000)
    tiled = inpaint(Pointwise(), image, mask, tile=16, overlap=5)
    torch.testing.assert_close(tiled, whole)
    assert torch.equal(tiled[:, mask.bool()], image[:, mask.bool()])


def test_a_real_network_in_tiles_keeps_known_pixels_and_stays_in_range():
    torch.manual_seed(0)
    net = PConvUNet(depth=3, base_width=8).eval()
    image, mask = torch.rand(3, 72, 90), torch.ones(72, 90)
    mask[20:50, 30:70] = 0
    out = inpaint(net, image, mask, tile=32, overlap=8)
    assert out.shape == image.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[:, mask.bool()], image[:, mask.bool()])


def test_tiles_cover_every_pixel_with_a_positive_weight():
    for size, tile, overlap in [(100, 32, 8), (33, 32, 8), (64, 32, 0), (1000, 300, 299)]:
        starts = _starts(size, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == size
        covered = torch.zeros(size)
        for i, start in enumerate(starts):
            before = starts[i - 1] + tile - start if i else 0
            after = start + tile - starts[i + 1] if i + 1 < len(starts) else 0
            covered[start : start + tile] += _ramp(tile, before, after)
        assert (covered > 0).all()
