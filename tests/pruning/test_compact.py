from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm
from torch import Tensor, nn
from torch.nn.utils import parametrize

from masking.layers import GatedConv2d, PartialConv2d
from masking.models import GatedGenerator, PConvUNet
from masking.pruning.compact import CompactionError, check_equivalent, compact
from masking.pruning.graph import Member, channel_groups
from tests.helpers.pruning import masked_copy, random_keep, randomise_norms
from tests.oracle import blob_mask


def inpainting_inputs(size: int = 32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, size, size, generator=g), blob_mask(1, size, 0.4)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class SingleMaskPartialNet(nn.Module):
    """Partial convolutions with one-channel masks, whose renormalisation ignores channel counts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = PartialConv2d(3, 8, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(8)
        self.conv2 = PartialConv2d(8, 12, 3, stride=2, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(12)
        self.conv3 = PartialConv2d(12, 3, 3, padding=1)

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        x, mask = self.conv1(image * mask, mask)
        x, mask = self.conv2(torch.relu(self.norm1(x)), mask)
        x, _ = self.conv3(torch.relu(self.norm2(x)), mask)
        return x


class MixedLayersNet(nn.Module):
    """Per-channel PReLU, a transposed convolution (weight rows are input channels), a flatten
    into a linear layer and a linear → linear group."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.act = nn.PReLU(8)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.norm = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(6 * 2 * 2, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.norm(self.up(self.act(self.conv(x)))))
        return self.head(torch.relu(self.hidden(self.pool(x).flatten(1))))


def narrow_classifier(vgg: nn.Module) -> nn.Module:
    """VGG with its classifier's 4096-wide hidden layers made 64 wide: same flatten → linear
    coupling (each conv channel owns 7 × 7 input features), 1/15 of the parameters, a faster test."""
    vgg.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 64),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(64, 64),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(64, 10),
    )
    return vgg


MODELS = {
    "resnet18": lambda: (tvm.resnet18(weights=None, num_classes=10), torch.rand(1, 3, 32, 32)),
    "resnet50": lambda: (tvm.resnet50(weights=None, num_classes=10), torch.rand(1, 3, 32, 32)),
    "mobilenet_v2": lambda: (
        tvm.mobilenet_v2(weights=None, num_classes=10),
        torch.rand(1, 3, 32, 32),
    ),
    "vgg11_bn": lambda: (narrow_classifier(tvm.vgg11_bn(weights=None)), torch.rand(1, 3, 32, 32)),
    "efficientnet_b0": lambda: (
        tvm.efficientnet_b0(weights=None, num_classes=10),
        torch.rand(1, 3, 32, 32),
    ),
    "pconv_unet_vanilla": lambda: (
        PConvUNet("vanilla", depth=3, base_width=8),
        inpainting_inputs(),
    ),
    "gated_generator": lambda: (GatedGenerator(width=4), inpainting_inputs(16)),
    "single_mask_partial": lambda: (SingleMaskPartialNet(), inpainting_inputs(16)),
    "mixed_layers": lambda: (MixedLayersNet(), torch.rand(1, 3, 8, 8)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_compacted_model_computes_what_the_masked_model_computes(name):
    model, inputs = MODELS[name]()
    model.eval()
    randomise_norms(model)
    groups = channel_groups(model, inputs)
    assert groups
    keep = random_keep(groups)
    masked = masked_copy(model, groups, keep)
    before = n_params(model)

    assert compact(model, inputs, keep) is model

    assert n_params(model) < 0.75 * before
    assert check_equivalent(masked, model, inputs, rtol=1e-4, atol=1e-5) < 1e-3
    assert not model.training


def test_gated_convolution_loses_feature_and_gate_rows_together():
    net = nn.Sequential(GatedConv2d(3, 4, 3, padding=1), _First(), GatedConv2d(4, 2, 3))
    x = torch.rand(1, 3, 8, 8)
    (group,) = channel_groups(net, x)
    assert group.root == "0" and group.size == 4
    weight = next(m for m in group.members if m.param == "weight")
    assert weight == Member("0", "weight", 0, (0, 1, 2, 3, 4, 5, 6, 7), (0, 1, 2, 3) * 2)
    gate = net[0].weight[4:].clone()
    compact(net, x, {"0": torch.tensor([True, False, True, False])})
    assert net[0].weight.shape == (4, 3, 3, 3) and net[0].out_channels == 2
    torch.testing.assert_close(net[0].weight[2:], gate[[0, 2]], rtol=0, atol=0)
    assert net[2].weight.shape == (4, 2, 3, 3) and net[2].in_channels == 2


class _First(nn.Module):
    def forward(self, output: tuple[Tensor, Tensor | None]) -> Tensor:
        return output[0]


class TestChannelGroups:
    def test_conv_bn_conv_is_one_group_numbered_by_the_first_conv(self):
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
        (group,) = channel_groups(net, torch.rand(1, 3, 8, 8))
        assert group.root == "0" and group.size == 8 and group.modules == ("0", "1", "3")
        rows = tuple(range(8))
        assert set(group.members) == {
            Member(name, param, 0, rows, rows)
            for name in ("0", "1")
            for param in ("weight", "bias")
        }

    def test_residual_addition_couples_both_branches(self):
        net = tvm.resnet18(weights=None, num_classes=10)
        groups = {g.root: g for g in channel_groups(net, torch.rand(1, 3, 32, 32))}
        stem = groups["conv1"]
        writers = {m.module for m in stem.members}
        assert {"conv1", "bn1", "layer1.0.bn2", "layer1.1.bn2"} <= writers
        assert "layer2.0.conv1" in stem.modules and "layer2.0.downsample.0" in stem.modules
        assert "layer1.0.conv2" not in groups  # covered by the stem's group, not a root

    def test_groups_that_reach_an_output_are_left_out(self):
        net = tvm.resnet18(weights=None, num_classes=10)
        groups = channel_groups(net, torch.rand(1, 3, 32, 32))
        assert "fc" not in [g.root for g in groups]
        assert all(m.module != "fc" for g in groups for m in g.members)
        unet = PConvUNet("vanilla", depth=3, base_width=8)
        roots = [g.root for g in channel_groups(unet, inpainting_inputs())]
        assert roots == [
            "encoder.0.conv",
            "encoder.1.conv",
            "encoder.2.conv",
            "decoder.0.conv",
            "decoder.1.conv",
        ]

    def test_ignored_modules_by_name_and_by_type(self):
        net = tvm.resnet18(weights=None, num_classes=10)
        x = torch.rand(1, 3, 32, 32)
        everything = channel_groups(net, x)
        by_name = channel_groups(net, x, ignored=["layer1.0.conv1", "layer4"])
        untouched = [
            g.root
            for g in everything
            if not any(m == "layer1.0.conv1" or m.startswith("layer4.") for m in g.modules)
        ]
        assert [g.root for g in by_name] == untouched
        assert "conv1" not in untouched  # the stem's channels feed layer1.0.conv1
        assert "layer1.1.conv1" in untouched
        small = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
        small.append(nn.Conv2d(4, 2, 1))
        assert [g.root for g in channel_groups(small, torch.rand(1, 3, 4, 4))] == ["0", "2"]
        tiny = torch.rand(1, 3, 4, 4)
        assert [g.root for g in channel_groups(small, tiny, ignored=[nn.BatchNorm2d])] == ["2"]
        with pytest.raises(ValueError, match="'layer9'"):
            channel_groups(net, x, ignored=["layer9"])

    def test_channels_not_silenced_by_zero_rows_are_left_out(self):
        # sigmoid(0) = 0.5: zeroing the first conv's rows does not remove the channel's effect
        net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sigmoid(), nn.Conv2d(4, 4, 1), nn.ReLU())
        net.append(nn.Conv2d(4, 2, 1))
        assert [g.root for g in channel_groups(net, torch.rand(1, 3, 4, 4))] == ["2"]
        # a batch norm without affine parameters has no rows to zero
        net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False), nn.Conv2d(4, 2, 1))
        net[1].running_mean.fill_(0.5)
        assert channel_groups(net.eval(), torch.rand(1, 3, 4, 4)) == []

    def test_multi_channel_partial_convolutions_are_left_out(self):
        # their valid-count renormalisation counts input channels: removing zero channels changes it
        unet = PConvUNet("partial", depth=3, base_width=8)
        assert channel_groups(unet, inpainting_inputs()) == []

    def test_parametrized_model_is_analysed_baked(self):
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        x = torch.rand(1, 3, 8, 8)
        expected = channel_groups(net, x)
        parametrize.register_parametrization(net[0], "weight", _Double())
        assert channel_groups(net, x) == expected
        assert parametrize.is_parametrized(net[0])

    def test_state_is_restored(self):
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3)).train()
        net[0].weight.requires_grad_(False)
        stats = net[1].running_mean.clone()
        channel_groups(net, torch.rand(1, 3, 8, 8))
        assert all(m.training for m in net.modules())
        assert not net[0].weight.requires_grad and net[2].weight.requires_grad
        assert torch.equal(net[1].running_mean, stats)


class _Double(nn.Module):
    def forward(self, weight: Tensor) -> Tensor:
        return 2 * weight


class TestCompactErrors:
    @pytest.fixture
    def net(self):
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))

    x = torch.rand(1, 3, 8, 8)

    def test_unknown_root(self, net):
        with pytest.raises(ValueError, match=r"unknown group root 'conv9' \(roots: 0\)"):
            compact(net, self.x, {"conv9": torch.ones(8, dtype=torch.bool)})

    def test_root_of_an_excluded_group(self, net):
        with pytest.raises(ValueError, match=r"'3'.*reach a model output"):
            compact(net, self.x, {"3": torch.ones(4, dtype=torch.bool)})

    @pytest.mark.parametrize("mask", [torch.ones(7, dtype=torch.bool), torch.ones(8)])
    def test_wrong_mask(self, net, mask):
        with pytest.raises(ValueError, match=r"keep\['0'\] must be a bool tensor of shape \(8,\)"):
            compact(net, self.x, {"0": mask})

    def test_all_channels_dropped(self, net):
        with pytest.raises(CompactionError, match="'0' would lose all 8 channels"):
            compact(net, self.x, {"0": torch.zeros(8, dtype=torch.bool)})

    def test_parametrized_model(self, net):
        parametrize.register_parametrization(net[3], "weight", _Double())
        with pytest.raises(CompactionError, match="'3' has parametrizations; bake them first"):
            compact(net, self.x, {"0": torch.ones(8, dtype=torch.bool)})

    def test_model_that_cannot_run(self, net):
        with pytest.raises(CompactionError, match="cannot run Sequential on the example inputs"):
            compact(net, torch.rand(1, 5, 8, 8), {"0": torch.ones(8, dtype=torch.bool)})

    def test_nothing_changes_on_error(self, net):
        state = copy.deepcopy(net.state_dict())
        keep = {"0": torch.tensor([True, False] * 4), "conv9": torch.ones(8, dtype=torch.bool)}
        with pytest.raises(ValueError, match="unknown group root 'conv9'"):
            compact(net, self.x, keep)
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())

    def test_frozen_parameters_stay_frozen(self, net):
        net[0].weight.requires_grad_(False)
        compact(net, self.x, {"0": torch.tensor([True, False] * 4)})
        assert net[0].weight.shape[0] == 4 and not net[0].weight.requires_grad
        assert net[1].running_var.shape == (4,) and net[3].in_channels == 4


class TestCheckEquivalent:
    def test_returns_the_largest_difference(self):
        net = nn.Conv2d(3, 4, 3)
        other = copy.deepcopy(net)
        with torch.no_grad():
            other.bias += 1e-6
        assert check_equivalent(net, other, torch.rand(1, 3, 8, 8)) == pytest.approx(1e-6, rel=0.1)

    def test_raises_naming_the_output_and_the_difference(self):
        net = GatedGenerator(width=2)
        other = copy.deepcopy(net)
        with torch.no_grad():
            other.refine.stages[-1].conv.bias += 0.5
        with pytest.raises(CompactionError, match=r"output 1 differs: max abs difference 0\.\d+"):
            check_equivalent(net, other, inpainting_inputs(16))

    def test_shape_mismatch_and_training_flags(self):
        a, b = nn.Linear(4, 3).train(), nn.Linear(4, 2).train()
        with pytest.raises(CompactionError, match=r"output 0 has shape \(1, 3\) .* \(1, 2\)"):
            check_equivalent(a, b, torch.rand(1, 4))
        assert a.training and b.training
