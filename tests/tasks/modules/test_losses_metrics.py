import logging

import pytest
import torch
from torchvision.models import vgg16

from tasks.modules.losses import (
    InpaintingLoss,
    LossWeights,
    gram,
    hinge_discriminator_loss,
    hinge_generator_loss,
    load_vgg16_features,
    total_variation,
)
from tasks.modules.metrics import InpaintingMetrics, colour_error, hole_l1, per_image_scores
from tests.oracle import blob_mask


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    # the real loading path, with random weights (no ImageNet weights can be downloaded here)
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(vgg16(weights=None).state_dict(), path)
    return path


class TestInpaintingLoss:
    def test_terms_by_hand(self):
        target = torch.zeros(1, 1, 2, 2)
        output = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
        total, terms = InpaintingLoss()(output, target, mask)
        assert terms["valid"].item() == pytest.approx((1 + 3) / 4)
        assert terms["hole"].item() == pytest.approx((2 + 4) / 4)
        assert "perceptual" not in terms and "style" not in terms
        expected = 1 * terms["valid"] + 6 * terms["hole"] + 0.1 * terms["tv"]
        assert total.item() == pytest.approx(expected.item())

    def test_perfect_output_costs_nothing(self, vgg_file):
        loss = InpaintingLoss(vgg=load_vgg16_features(vgg_file))
        image = torch.rand(2, 3, 32, 32)
        total, terms = loss(image, image, blob_mask(2, 32, 0.4))
        assert set(terms) == {"valid", "hole", "tv", "perceptual", "style"}
        assert terms["perceptual"].item() == 0 and terms["style"].item() == 0
        assert total.item() == pytest.approx(terms["tv"].item() * 0.1)

    def test_gradients_reach_the_output_and_not_vgg(self, vgg_file):
        loss = InpaintingLoss(vgg=load_vgg16_features(vgg_file))
        output = torch.rand(1, 3, 32, 32, requires_grad=True)
        loss(output, torch.rand(1, 3, 32, 32), blob_mask(1, 32, 0.4))[0].backward()
        assert output.grad.abs().sum() > 0
        assert all(p.grad is None for p in loss.vgg.parameters())
        loss.train()
        assert not loss.vgg.training

    def test_weights_are_the_papers_by_default(self):
        assert LossWeights() == LossWeights(1.0, 6.0, 0.05, 120.0, 0.1)

    def test_gram_is_normalised_by_chw(self):
        features = torch.ones(1, 2, 3, 4)
        assert torch.allclose(gram(features), torch.full((1, 2, 2), 12 / 24))

    def test_total_variation_only_near_holes(self):
        image = torch.zeros(1, 1, 8, 8)
        image[..., 0, 0] = 1  # an edge far from the hole
        holes = torch.zeros(1, 1, 8, 8)
        holes[..., 5, 5] = 1
        assert total_variation(image, holes) == 0
        image[..., 5, 6] = 1  # an edge next to it
        assert total_variation(image, holes) > 0


class TestVGGLoading:
    def test_missing_weights_say_so_or_fail_when_required(self, tmp_path, caplog, monkeypatch):
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
        with caplog.at_level(logging.WARNING):
            assert load_vgg16_features(tmp_path / "none.pth") is None
        assert "training without the perceptual and style terms" in caplog.text
        with pytest.raises(FileNotFoundError, match=r"set loss\.vgg_path"):
            load_vgg16_features(tmp_path / "none.pth", required=True)

    def test_found_in_torchvision_cache(self, tmp_path, vgg_file, monkeypatch):
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "vgg16-397923af.pth").write_bytes(vgg_file.read_bytes())
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
        features = load_vgg16_features()
        assert [f.shape[1] for f in features(torch.rand(1, 3, 32, 32))] == [64, 128, 256]

    def test_wrong_weights(self, tmp_path):
        torch.save({"weight": torch.zeros(3)}, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match="do not fit torchvision's vgg16"):
            load_vgg16_features(tmp_path / "bad.pth")


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert hinge_generator_loss(fake).item() == pytest.approx(1.0)


class TestMetrics:
    def test_hole_l1_counts_hole_pixels_only(self):
        target = torch.zeros(1, 3, 2, 2)
        output = torch.ones(1, 3, 2, 2)
        mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
        assert hole_l1(output, target, mask).item() == 1.0
        assert hole_l1(output, target, torch.ones_like(mask)).item() == 0.0

    def test_perfect_composite(self):
        image = torch.rand(2, 3, 32, 32)
        scores = per_image_scores(image, image, blob_mask(2, 32, 0.3))
        assert (
            scores[:, 0].eq(0).all() and scores[:, 1].isinf().all() and scores[:, 2].gt(0.99).all()
        )
        assert scores[:, 3].abs().max() < 1e-3  # no colour error

    def test_colour_error_sees_a_cast_not_texture(self):
        """A grey fill of a colourful photo has a large colour error; a fill with the right colours
        but the wrong texture (the same hole-L1 or more) a small one."""
        from datamodules import load_bundled_photo

        target = load_bundled_photo("astronaut", size=64)[None]
        mask = torch.ones(1, 1, 64, 64)
        mask[..., 16:48, 16:48] = 0
        grey = target.mean(1, keepdim=True).expand_as(target)
        noisy = (
            target + 0.25 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
        ).clamp(0, 1)
        cast, textured = (m * target + (1 - m) * f for m, f in ((mask, grey), (mask, noisy)))
        assert hole_l1(textured, target, mask) > hole_l1(cast, target, mask)
        errors = colour_error(cast, target, mask), colour_error(textured, target, mask)
        assert errors[0] > 10 and errors[0] > 4 * errors[1]
        assert colour_error(cast, target, torch.ones_like(mask)) == 0  # no holes, no error

    def test_per_bin_and_overall_means(self):
        metric = InpaintingMetrics()
        target = torch.rand(4, 3, 32, 32)
        composite = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
        masks = torch.cat([blob_mask(2, 32, 0.15), blob_mask(2, 32, 0.45)])
        metric.update(composite, target, masks)
        out = metric.compute()
        scores = per_image_scores(composite, target, masks)
        assert out["psnr"].item() == pytest.approx(scores[:, 1].mean().item(), rel=1e-5)
        assert out["hole_l1/hole_10_20"].item() == pytest.approx(
            scores[:2, 0].mean().item(), rel=1e-5
        )
        assert out["ssim/hole_40_50"].item() == pytest.approx(scores[2:, 2].mean().item(), rel=1e-5)
        assert "psnr/hole_50_60" not in out

    def test_explicit_bins_override_the_ratio(self):
        metric = InpaintingMetrics()
        image = torch.rand(1, 3, 16, 16)
        metric.update(image, image, blob_mask(1, 16, 0.15), bins=torch.tensor([5]))
        assert "psnr/hole_50_60" in metric.compute()
