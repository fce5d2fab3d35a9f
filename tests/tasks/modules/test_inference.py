"""Inpainting one image: the tiled path for large images blends its tiles into the same image the
one-pass path gives, and keeps the known pixels."""

import pytest
import torch
from torch import nn

from masking.models import PConvUNet
from tasks.modules.inference import _ramp, _starts, coarse_to_fine, inpaint, pyramid_levels


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


class Local(nn.Module):
    """A 'network' that sees 4 pixels around each pixel: the mean of the known pixels there, black
    where there are none (a network's receptive field, in miniature)."""

    size_multiple = 1

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, mask):
        total = nn.functional.avg_pool2d(x * mask, 9, stride=1, padding=4)
        count = nn.functional.avg_pool2d(mask, 9, stride=1, padding=4)
        return torch.where(count > 0, total / count.clamp_min(1e-8), torch.zeros_like(x))


def test_pyramid_levels():
    assert pyramid_levels(256, 256, 64) == 2 and pyramid_levels(427, 640, 64) == 2
    assert pyramid_levels(127, 500, 64) == 0 and pyramid_levels(128, 128, 64) == 1
    assert pyramid_levels(4000, 4000, None) == 0


def test_coarse_to_fine_carries_the_context_colour_into_a_wide_hole():
    """One pass of a network that sees 4 px leaves the middle of a 40-px hole black; coarse to fine
    fills all of it with the surrounding colour, and at level 0 it is the plain pass."""
    colour = torch.tensor([0.8, 0.3, 0.1]).view(1, 3, 1, 1)
    image = colour.expand(1, 3, 64, 64).clone()
    mask = torch.ones(1, 1, 64, 64)
    mask[..., 12:52, 12:52] = 0
    plain = coarse_to_fine(Local(), image, mask, levels=0)
    torch.testing.assert_close(plain, Local()(image, mask))
    assert plain[..., 32, 32].abs().max() == 0
    filled = coarse_to_fine(Local(), image, mask, levels=3, band=4)
    torch.testing.assert_close(filled, image.expand_as(filled))


def test_inpaint_goes_coarse_to_fine_when_the_network_records_its_crop_side():
    torch.manual_seed(0)
    net = PConvUNet(depth=3, base_width=8).eval()
    image, mask = torch.rand(3, 100, 150), torch.ones(100, 150)
    mask[20:80, 30:120] = 0
    plain = inpaint(net, image, mask)
    net.coarse_side = 32
    pyramid = inpaint(net, image, mask)
    assert pyramid.shape == image.shape and pyramid.min() >= 0 and pyramid.max() <= 1
    assert torch.equal(pyramid[:, mask.bool()], image[:, mask.bool()])
    assert not torch.allclose(pyramid, plain)
    net.coarse_side = 64  # 100 px is less than twice that: one plain pass
    torch.testing.assert_close(inpaint(net, image, mask), plain)


def test_checkpoints_carry_the_crop_side(tmp_path):
    from tasks.runtime.checkpoints import load_inpainting_network
    from tests.helpers.models import inpaint_checkpoint

    path = inpaint_checkpoint(tmp_path / "new.ckpt", inference={"coarse_side": 64})
    assert load_inpainting_network(path).coarse_side == 64
    assert load_inpainting_network(inpaint_checkpoint(tmp_path / "old.ckpt")).coarse_side is None
    bad = inpaint_checkpoint(tmp_path / "bad.ckpt", inference={"coarse_side": 2.5})
    with pytest.raises(ValueError, match=r"its coarse_side must be an int >= 8 or None, got 2\.5"):
        load_inpainting_network(bad)
