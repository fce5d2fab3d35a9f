import pytest
import torch

from masking import GatedConv2d
from masking.models import GatedGenerator, PatchDiscriminator
from tests.compiled import assert_compiles_like_eager
from tests.oracle import blob_mask


@pytest.mark.parametrize("layer", ["gated", "vanilla", "partial"])
class TestGatedGenerator:
    def test_coarse_and_refined_have_the_input_shape(self, layer):
        gen = GatedGenerator(layer, width=4)
        coarse, refined = gen(torch.rand(2, 3, 32, 40), blob_mask(2, 40, 0.4)[..., :32, :])
        assert coarse.shape == refined.shape == (2, 3, 32, 40)
        assert torch.isfinite(refined).all()

    def test_output_ignores_what_the_holes_held(self, layer):
        gen = GatedGenerator(layer, width=4)
        image, mask = torch.rand(2, 3, 32, 32), blob_mask(2, 32, 0.4)
        poisoned = image * mask + 1e3 * torch.randn_like(image) * (1 - mask)
        missing = image.masked_fill(mask == 0, float("nan"))  # NaN · 0 would be NaN
        for a, b in zip(gen(poisoned, mask), gen(image, mask)):
            torch.testing.assert_close(a, b)
        for a, b in zip(gen(missing, mask), gen(image, mask)):
            torch.testing.assert_close(a, b)

    def test_every_parameter_learns(self, layer):
        gen = GatedGenerator(layer, width=4)
        coarse, refined = gen(torch.rand(2, 3, 32, 32), blob_mask(2, 32, 0.4))
        (coarse.square().mean() + refined.square().mean()).backward()
        assert [n for n, p in gen.named_parameters() if p.grad is None] == []


def test_generator_compiles_fullgraph_for_training():
    gen = GatedGenerator(width=4)
    image, mask = torch.rand(2, 3, 16, 16), blob_mask(2, 16, 0.4)
    assert_compiles_like_eager(gen, [image, mask], backend="aot_eager")


def test_gated_output_layers_have_no_activation():
    gen = GatedGenerator(width=4)
    last = gen.refine.stages[-1].conv
    assert isinstance(last, GatedConv2d) and last.activation is None
    assert gen.refine.stages[0].conv.activation == "elu"


def test_default_sizes_match_deepfill_v2():
    # generator: cnum=48 counts features and gates, i.e. 24 gated channels, without the attention
    # branch; discriminator: 64-128-256-256-256-256 channels
    generator = sum(p.numel() for p in GatedGenerator().parameters())
    assert generator == pytest.approx(3.25e6, rel=0.02)
    assert sum(p.numel() for p in PatchDiscriminator().parameters()) == pytest.approx(
        5.95e6, rel=1e-3
    )


def test_dilated_bottleneck():
    dilations = [s.conv.dilation[0] for s in GatedGenerator(width=4).coarse.stages]
    assert dilations.count(1) == len(dilations) - 4 and sorted(set(dilations)) == [1, 2, 4, 8, 16]


class TestPatchDiscriminator:
    def test_one_score_per_patch(self):
        disc = PatchDiscriminator(width=8)
        out = disc(torch.rand(2, 3, 128, 64), torch.ones(2, 1, 128, 64))
        assert out.shape == (2, 32, 2, 1)

    def test_spectral_norm_on_every_convolution(self):
        disc = PatchDiscriminator(width=8)
        convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 6
        assert all(torch.nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)

    def test_compiles_fullgraph_for_training(self):
        # spectral norm's power iteration updates its vectors in place on every training call
        disc = PatchDiscriminator(width=4)
        image = torch.rand(2, 3, 32, 32, requires_grad=True)
        assert_compiles_like_eager(disc, [image, blob_mask(2, 32, 0.4)], backend="aot_eager")

    def test_mask_is_an_input(self):
        disc = PatchDiscriminator(width=8).eval()
        image = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            assert not torch.equal(
                disc(image, torch.ones(1, 1, 64, 64)), disc(image, torch.zeros(1, 1, 64, 64))
            )


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (
            lambda: GatedGenerator(width=4)(torch.rand(1, 3, 30, 32), torch.ones(1, 1, 30, 32)),
            "multiples of 4, got (1, 3, 30, 32)",
        ),
        (lambda: GatedGenerator(layer="gatd"), "layer must be one of"),
        (lambda: GatedGenerator(width=0), "width must be a positive int, got 0"),
        (
            lambda: PatchDiscriminator()(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 9)),
            "mask must be (1, 1, 8, 8) to match image, got (1, 1, 8, 9)",
        ),
    ],
)
def test_bad_arguments(call, text):
    import re

    with pytest.raises(ValueError, match=re.escape(text)):
        call()
