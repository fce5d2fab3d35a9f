"""Numerical safety under CPU autocast (fp16 and bf16): the inpainting networks, losses and metrics
give finite values and gradients at the edges of their domain (masks that are all hole, all valid or
one valid pixel; constant, black and white images); and anomaly detection is a config switch."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from masking.models import GatedGenerator, PConvUNet
from tasks.modules.losses import InpaintingLoss, hinge_discriminator_loss, hinge_generator_loss
from tasks.modules.metrics import NAMES, InpaintingMetrics, hole_l1, per_image_scores
from tests.hydra_config import compose_config
from tests.oracle import blob_mask

HALF = [torch.float16, torch.bfloat16]
MASKS = ("all_hole", "all_valid", "one_valid", "blob")
IMAGES = ("constant", "black", "white", "random")
# every mask with every image, for the per-image losses and scores
PAIRS = [(mask, image) for mask in MASKS for image in IMAGES]


def make_masks(kinds, size: int) -> Tensor:
    """``(len(kinds), 1, size, size)``, 1 = valid: one mask of each kind."""
    masks = torch.zeros(len(kinds), 1, size, size)
    for i, kind in enumerate(kinds):
        if kind == "all_valid":
            masks[i] = 1
        elif kind == "one_valid":
            masks[i, :, size // 3, size // 2] = 1
        elif kind == "blob":
            masks[i] = blob_mask(1, size, 0.5, seed=i)[0]
    return masks


def make_images(kinds, size: int) -> Tensor:
    """``(len(kinds), 3, size, size)`` in [0, 1]: one image of each kind."""
    fill = {"constant": 0.5, "black": 0.0, "white": 1.0}
    g = torch.Generator().manual_seed(0)
    return torch.stack(
        [
            torch.full((3, size, size), fill[kind])
            if kind in fill
            else torch.rand(3, size, size, generator=g)
            for kind in kinds
        ]
    )


NETS = {
    "pconv_partial": lambda: PConvUNet("partial", depth=3, base_width=8),
    "pconv_partial_joint_mask": lambda: PConvUNet(
        "partial", depth=3, base_width=8, multi_channel_decoder=False
    ),
    "pconv_gated": lambda: PConvUNet("gated", depth=3, base_width=8),
    "pconv_vanilla": lambda: PConvUNet("vanilla", depth=3, base_width=8),
    "gated_generator": lambda: GatedGenerator(width=4),
}
# Batches of (mask, image) kinds, one pair per sample. With batch norm (the U-Nets, in training) a
# batch is one mask kind with every image, or a uniform batch: zero variance across the whole batch
# is batch norm's degenerate case (all-hole masks give it too, as holes are zero-filled). Without
# batch norm (the generator) samples are independent, and one batch holds every pair.
BN_BATCHES = {
    **{f"{mask}-mixed": [(mask, image) for image in IMAGES] for mask in MASKS},
    **{
        f"all_valid-{image}": [("all_valid", image)] * 2 for image in ("constant", "black", "white")
    },
}
NET_BATCHES = [
    pytest.param(net, batch, id=f"{net}-{name}")
    for net in NETS
    if net != "gated_generator"
    for name, batch in BN_BATCHES.items()
] + [pytest.param("gated_generator", PAIRS, id="gated_generator-every_pair")]


class TinyFeatures(nn.Module):
    """A stand-in for ``VGG16Features`` (no pretrained weights offline): three conv-ReLU-pool stages
    returning their features, with ``gain`` setting their magnitude.

    The Gram matrix sums products over every position before normalising, so features of magnitude
    ~10 on a 32×32 grid already sum past fp16's largest value (65504). Even VGG16Features with
    random weights sums to ~47 000 over pool1 at a 256-px crop, and past 65504 at 512 px.
    """

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.gain = gain
        self.blocks = nn.ModuleList()
        for c_in, c_out in ((3, 8), (8, 16), (16, 16)):
            conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(
                    torch.randn(conv.weight.shape, generator=g) * (2 / (9 * c_in)) ** 0.5
                )
                conv.bias.zero_()
            self.blocks.append(nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2)))
        self.requires_grad_(False)

    def forward(self, image: Tensor) -> list[Tensor]:
        out, x = [], image * self.gain
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out


def assert_finite_grads(parameters, what: str) -> None:
    grads = [p.grad for p in parameters if p.grad is not None]
    assert grads, f"no gradient reached {what}"
    assert all(torch.isfinite(g).all() for g in grads), f"{what} has a non-finite gradient"


# --------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize(("net_name", "batch"), NET_BATCHES)
def test_network_trains_finite_under_autocast(net_name, batch, dtype):
    """A training step's forward, loss and backward, as a ``bf16-mixed`` / ``16-mixed`` run does."""
    torch.manual_seed(0)
    net = NETS[net_name]().train()
    mask = make_masks([mask for mask, _ in batch], 16)
    image = make_images([image for _, image in batch], 16)
    loss = InpaintingLoss(vgg=TinyFeatures())
    with torch.autocast("cpu", dtype=dtype):
        outputs = net(image, mask)
        outputs = list(outputs) if isinstance(outputs, tuple) else [outputs]
        total = sum(loss(output, image, mask)[0] for output in outputs)
    for output in outputs:
        assert output.dtype == dtype and output.shape == image.shape
        bad = [batch[i] for i in range(len(batch)) if not torch.isfinite(output[i]).all()]
        assert not bad, f"the output is not finite for (mask, image) {bad}"
    assert torch.isfinite(total)
    total.backward()
    assert_finite_grads(net.parameters(), net_name)


# ----------------------------------------------------------------------------------------- losses

OUTPUTS = ("random", "target", "zeros")


@pytest.mark.parametrize("output_kind", OUTPUTS)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_inpainting_loss_is_finite_under_autocast(dtype, output_kind):
    """Every term and the gradient, for every mask with every image, with and without features."""
    size = 64  # the bundled photos' crop: pool1 features on a 32×32 grid
    masks = make_masks([mask for mask, _ in PAIRS], size)
    images = make_images([image for _, image in PAIRS], size)
    g = torch.Generator().manual_seed(1)
    output = {
        "random": torch.rand(images.shape, generator=g),
        "target": images,
        "zeros": torch.zeros_like(images),
    }[output_kind]
    # the network's output is in the autocast dtype, the target in fp32
    output = output.to(dtype).requires_grad_()
    for features in (None, TinyFeatures(gain=6.0)):
        with torch.autocast("cpu", dtype=dtype):
            total, terms = InpaintingLoss(vgg=features)(output, images, masks)
        expected = {"valid", "hole", "tv"} | ({"perceptual", "style"} if features else set())
        assert set(terms) == expected
        for name, value in terms.items():
            assert value.dim() == 0 and torch.isfinite(value), f"loss term {name} is {value}"
        output.grad = None
        total.backward()
        bad = [PAIRS[i] for i in range(len(PAIRS)) if not torch.isfinite(output.grad[i]).all()]
        assert not bad, f"non-finite gradient for (mask, image) {bad}"


def test_style_term_does_not_overflow_in_fp16():
    """Features past fp16's range when summed: the fp16 result matches the fp32 one."""
    image, mask = make_images(["white"], 64), make_masks(["blob"], 64)
    output = torch.rand(image.shape, generator=torch.Generator().manual_seed(1))
    loss = InpaintingLoss(vgg=TinyFeatures(gain=6.0))
    reference = loss(output, image, mask)[1]["style"]
    with torch.autocast("cpu", dtype=torch.float16):
        style = loss(output.half(), image, mask)[1]["style"]
    assert reference > 0
    torch.testing.assert_close(style.float(), reference, rtol=1e-2, atol=0)


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_hinge_losses_are_finite_under_autocast(dtype):
    """Patch scores near the top of fp16's range: the means must not overflow while summing."""
    real = torch.full((2, 64, 8, 8), -3e4, dtype=dtype, requires_grad=True)  # the worst scores
    fake = torch.full((2, 64, 8, 8), 3e4, dtype=dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        d_loss = hinge_discriminator_loss(real, fake)
        g_loss = hinge_generator_loss(fake)
    assert d_loss.item() == pytest.approx(2 * (1 + 3e4), rel=1e-2)
    assert g_loss.item() == pytest.approx(-3e4, rel=1e-2)
    (d_loss + g_loss).backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()


# ---------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_metrics_under_autocast_equal_fp32(dtype):
    """Validation runs under autocast too: the scores must be the fp32 ones, and in range."""
    masks = make_masks([mask for mask, _ in PAIRS], 32)
    images = make_images([image for _, image in PAIRS], 32)
    noise = 0.01 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    output = (images + noise).to(dtype)  # a near-perfect network output in the autocast dtype
    composite = (images * masks + output.clamp(0, 1) * (1 - masks)).requires_grad_()
    reference = per_image_scores(composite, images, masks)
    with torch.autocast("cpu", dtype=dtype):
        scores = per_image_scores(composite, images, masks)
    l1, psnr, ssim, colour = scores.unbind(1)
    assert torch.isfinite(l1).all() and torch.isfinite(ssim).all() and torch.isfinite(colour).all()
    out_of_range = [PAIRS[i] for i in range(len(PAIRS)) if not -1 <= ssim[i] <= 1]
    assert not out_of_range, f"SSIM outside [-1, 1] for (mask, image) {out_of_range}"
    # PSNR is +inf exactly where nothing differs (an all-valid mask), never NaN
    perfect = composite.detach().eq(images).flatten(1).all(1)
    assert perfect.tolist() == [mask == "all_valid" for mask, _ in PAIRS]
    assert torch.equal(psnr.isinf(), perfect) and psnr.gt(0).all()
    torch.testing.assert_close(scores, reference, rtol=1e-5, atol=1e-5)
    # hole-L1 is 0 without holes, with a finite slope (its divisor is clamped)
    with torch.autocast("cpu", dtype=dtype):
        hole_l1(composite, images, masks).sum().backward()
    assert torch.isfinite(composite.grad).all()


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_metric_means_are_finite_under_autocast(dtype):
    """Without a perfect composite (whose PSNR is +inf by definition), every mean is finite."""
    pairs = [(mask, image) for mask, image in PAIRS if mask != "all_valid"]
    masks = make_masks([mask for mask, _ in pairs], 32)
    images = make_images([image for _, image in pairs], 32)
    metric = InpaintingMetrics()
    with torch.autocast("cpu", dtype=dtype):
        output = torch.full_like(images, 0.25).to(dtype)
        metric.update(images * masks + output * (1 - masks), images, masks)
    values = metric.compute()
    assert set(NAMES) <= set(values)
    for name, value in values.items():
        assert torch.isfinite(value), f"{name} is {value}"
    assert -1 <= values["ssim"] <= 1


# ----------------------------------------------------------------------------- anomaly detection


def test_anomaly_detection_is_off_by_default_in_every_trainer(tmp_path):
    for trainer in ("cpu", "gpu"):
        cfg = compose_config(tmp_path, [f"trainer={trainer}"])
        assert cfg.trainer.detect_anomaly is False


def test_anomaly_detection_switches_on_from_the_config(tmp_path):
    cfg = compose_config(tmp_path, ["trainer.detect_anomaly=true"])
    trainer = instantiate(cfg.trainer, logger=False, default_root_dir=str(tmp_path))
    assert trainer._detect_anomaly is True
    off = instantiate(
        compose_config(tmp_path, []).trainer, logger=False, default_root_dir=str(tmp_path)
    )
    assert off._detect_anomaly is False
