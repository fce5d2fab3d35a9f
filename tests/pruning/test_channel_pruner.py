"""Channel masks through the Pruner: shared per coupled group, compacted exactly, exported."""

from __future__ import annotations

import pytest
import torch

from masking.models import GatedGenerator, PConvUNet, resnet18_cifar
from masking.pruning import Pruner, SparsitySchedule, export_pruned, load_pruned


def inpainting_inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, size, size, generator=gen)
    mask = (torch.rand(2, 1, size, size, generator=gen) > 0.3).float()
    mask[..., 4:12, 4:12] = 0  # a real hole
    return image, mask


NETS = {
    "resnet18_cifar": (
        lambda: resnet18_cifar(width=8),
        lambda: torch.randn(2, 3, 16, 16),
        {"_target_": "masking.models.resnet18_cifar", "width": 8},
    ),
    "pconv_unet_joint_mask": (
        lambda: PConvUNet(depth=3, base_width=8, multi_channel_decoder=False),
        lambda: inpainting_inputs(32),
        {
            "_target_": "masking.models.PConvUNet",
            "depth": 3,
            "base_width": 8,
            "multi_channel_decoder": False,
        },
    ),
    "gated_generator": (
        lambda: GatedGenerator(width=4),
        lambda: inpainting_inputs(16),
        {"_target_": "masking.models.GatedGenerator", "width": 4},
    ),
}


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("method", ["magnitude", "hard_concrete", "movement"])
def test_channel_pruning_compacts_exactly_and_exports(tmp_path, name, method):
    build, inputs, builder = NETS[name]
    net = build()
    example = inputs()
    args = example if isinstance(example, tuple) else (example,)
    pruner = Pruner(
        net,
        method=method,
        granularity="channel",
        sparsity=0.5,
        schedule=SparsitySchedule(0.5, kind="linear", end_step=3),
        example_inputs=example,
        penalty=0.1,
    )
    assert pruner.groups
    # one score vector per group: no float copy of any weight
    for entry in pruner.groups:
        for param in entry.source.parameters():
            assert param.shape == (entry.group.size,)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    for step in range(4):
        pruner.step(step)
        out = net(*args)
        outs = out if isinstance(out, tuple) else (out,)  # the gated generator: coarse, fine
        loss = sum(o.square().mean() for o in outs) + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(pruner.achieved_sparsity() - 0.5) <= 0.05  # small groups: rounding
    params_before = sum(p.numel() for p in net.parameters())
    slim = pruner.compact(example)  # raises if outputs differ from the masked model's
    assert sum(p.numel() for p in slim.parameters()) < 0.6 * params_before
    export_pruned(slim, tmp_path / "export", builder=builder)
    loaded = load_pruned(tmp_path / "export")
    slim.eval()
    with torch.no_grad():
        for a, b in zip(
            *(o if isinstance(o, tuple) else (o,) for o in (loaded(*args), slim(*args)))
        ):
            assert torch.equal(a, b)


def test_round_to_gives_hardware_friendly_widths():
    net = resnet18_cifar(width=16)
    pruner = Pruner(
        net,
        granularity="channel",
        sparsity=0.6,
        example_inputs=torch.randn(2, 3, 16, 16),
        round_to=8,
    )
    pruner.step(0)
    for entry in pruner.groups:
        kept = int(entry.source.keep.sum())
        assert kept % 8 == 0 or kept == entry.group.size


def test_compact_needs_channel_granularity():
    net = resnet18_cifar(width=8)
    pruner = Pruner(net, sparsity=0.5)
    with pytest.raises(ValueError, match="compact removes channels"):
        pruner.compact(torch.randn(1, 3, 16, 16))


def test_one_shot_compact_without_training_steps_reaches_the_target():
    # compact straight after attaching: the target sparsity must be applied before the surviving
    # channels are read (it once compacted nothing here)
    x = torch.randn(2, 3, 16, 16)
    pruner = Pruner(resnet18_cifar(width=8), granularity="channel", sparsity=0.5, example_inputs=x)
    slim = pruner.compact(x)
    widths = [m.out_channels for m in slim.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(widths) <= 32  # every group of the width-8 ResNet (8 to 64 channels) halved
    assert pruner.achieved_sparsity() == pytest.approx(0.5, abs=0.02)
