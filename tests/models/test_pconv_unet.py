import re

import pytest
import torch

from masking.functional import fill_holes
from masking.models import PConvUNet
from tests.compiled import assert_compiles_like_eager
from tests.oracle import blob_mask

LAYERS = ["partial", "gated", "vanilla"]


def small(layer, **kwargs):
    return PConvUNet(layer, depth=3, base_width=8, max_width=32, **kwargs)


@pytest.mark.parametrize("layer", LAYERS)
class TestPConvUNet:
    def test_output_has_the_input_shape(self, layer):
        net = small(layer)
        out = net(torch.rand(2, 3, 32, 48), blob_mask(2, 48, 0.4)[..., :32, :])
        assert out.shape == (2, 3, 32, 48) and torch.isfinite(out).all()

    def test_output_ignores_what_the_holes_held(self, layer):
        net = small(layer)
        image, mask = torch.rand(2, 3, 32, 32), blob_mask(2, 32, 0.4)
        poisoned = image * mask + 1e3 * torch.randn_like(image) * (1 - mask)
        missing = image.masked_fill(mask == 0, float("nan"))  # NaN · 0 would be NaN
        missing[:, :, :2] = missing[:, :, :2].masked_fill(mask[:, :, :2] == 0, float("inf"))
        for mode in (net.train, net.eval):
            mode()
            torch.testing.assert_close(net(poisoned, mask), net(image, mask))
            torch.testing.assert_close(net(missing, mask), net(image, mask))

    def test_every_parameter_learns(self, layer):
        net = small(layer)
        net(torch.rand(2, 3, 32, 32), blob_mask(2, 32, 0.4)).square().mean().backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
        assert missing == []

    def test_all_hole_and_all_valid_masks(self, layer):
        net = small(layer).eval()
        for mask in (torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)):
            assert torch.isfinite(net(torch.rand(1, 3, 32, 32), mask)).all()

    def test_bf16_autocast_is_finite(self, layer):
        net = small(layer)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(torch.rand(2, 3, 32, 32), blob_mask(2, 32, 0.6))
        assert torch.isfinite(out).all()

    def test_compiles_fullgraph_for_training(self, layer):
        # forward and backward in one graph each (aot_eager traces the backward like inductor does,
        # without inductor's compile time), batch norm in training mode updating its statistics
        net = PConvUNet(layer, depth=2, base_width=4, max_width=8)
        image, mask = torch.rand(2, 3, 16, 16), blob_mask(2, 16, 0.4)
        assert_compiles_like_eager(net, [image, mask], backend="aot_eager")


def test_mask_channel_is_an_input_only_for_plain_layers():
    assert not small("partial").mask_as_input
    assert small("gated").mask_as_input and small("vanilla").mask_as_input
    assert small("vanilla", mask_as_input=False).encoder[0].conv.in_channels == 3


def test_partial_decoder_uses_per_channel_masks():
    net = small("partial")
    assert not net.encoder[0].conv.multi_channel
    assert all(stage.conv.multi_channel for stage in net.decoder)


def test_paper_configuration_size():
    # Liu et al.'s 512-px network: 8 levels, 64 to 512 channels, about 32.9 M parameters
    net = PConvUNet("partial", depth=8, base_width=64, max_width=512)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(32.86e6, rel=1e-3)
    assert [s.conv.kernel_size[0] for s in net.encoder][:4] == [7, 5, 5, 3]


@pytest.mark.parametrize("layer", LAYERS)
def test_a_prefill_network_starts_as_the_fill_and_learns_a_correction(layer):
    net = small(layer, prefill=True)
    image, mask = torch.rand(2, 3, 32, 32), blob_mask(2, 32, 0.4)
    fill = fill_holes(image, mask)
    torch.testing.assert_close(net(image, mask), fill)  # the last layer starts at zero
    poisoned = image.masked_fill(mask == 0, float("nan"))
    torch.testing.assert_close(net(poisoned, mask), fill)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):  # after the first step every layer takes part
        optimizer.zero_grad()
        loss = (net(image, mask) - image).abs().mean()
        loss.backward()
        optimizer.step()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert not torch.allclose(net(image, mask), fill)
    # forward is the fill and then the exportable refining part
    torch.testing.assert_close(net.refine(fill, mask), net(image, mask))
    assert net.mask_as_input and net.encoder[0].conv.in_channels == 4


def test_refine_belongs_to_prefill_networks():
    with pytest.raises(ValueError, match="refine is the second half of a prefill network"):
        small("partial").refine(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32))


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (
            lambda: small("partial")(torch.rand(1, 3, 30, 32), torch.ones(1, 1, 30, 32)),
            "multiples of 8, got (1, 3, 30, 32) (2 ** depth); pad it",
        ),
        (
            lambda: small("partial")(torch.rand(1, 3, 32, 32), torch.ones(1, 3, 32, 32)),
            "mask must be (1, 1, 32, 32) to match image, got (1, 3, 32, 32)",
        ),
        (lambda: PConvUNet("partal"), "layer must be one of"),
        (lambda: PConvUNet(encoder_kernels=(7, 4)), "encoder_kernels must be odd positive ints"),
        (lambda: PConvUNet(depth=0), "depth must be an int >= 1, got 0"),
        (lambda: PConvUNet(prefill="yes"), "prefill must be a bool, got 'yes'"),
    ],
)
def test_bad_arguments(call, text):
    with pytest.raises(ValueError, match=re.escape(text)):
        call()
