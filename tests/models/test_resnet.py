import doctest
import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import masking.models.resnet
from masking.models import ResNet, resnet18_cifar
from tests.compiled import assert_compiles_like_eager
from tests.helpers.models import n_params


class TestResNet:
    def test_resnet18_has_the_published_parameter_count(self):
        assert n_params(resnet18_cifar()) == 11_173_962
        assert n_params(resnet18_cifar(num_classes=100)) == 11_173_962 + 512 * 90 + 90

    def test_width_scales_the_stages(self):
        net = resnet18_cifar(width=8, in_channels=1, num_classes=4)
        assert net.widths == (8, 16, 32, 64)
        assert net.stem[0].in_channels == 1
        assert [stage[-1].conv2.out_channels for stage in net.stages] == [8, 16, 32, 64]
        assert (net.fc.in_features, net.fc.out_features) == (64, 4)

    @pytest.mark.parametrize("hw", [(32, 32), (8, 8), (28, 36), (1, 1)])
    def test_output_shape(self, hw):
        net = ResNet(depths=(1, 2, 1), widths=(4, 8, 16), num_classes=7)
        assert net(torch.rand(3, 3, *hw)).shape == (3, 7)

    def test_stages_halve_the_resolution_after_the_first(self):
        net = resnet18_cifar(width=4)
        x = net.stem(torch.rand(1, 3, 32, 32))
        sizes = []
        for stage in net.stages:
            x = stage(x)
            sizes.append(x.shape[-1])
        assert sizes == [32, 16, 8, 4]

    def test_shortcut_is_a_projection_only_where_the_shape_changes(self):
        net = resnet18_cifar(width=4)
        projections = [
            isinstance(block.shortcut, torch.nn.Sequential)
            for stage in net.stages
            for block in stage
        ]
        assert projections == [False, False, True, False, True, False, True, False]
        shortcut = net.stages[1][0].shortcut
        assert shortcut[0].kernel_size == (1, 1) and shortcut[0].stride == (2, 2)
        assert isinstance(shortcut[1], torch.nn.BatchNorm2d)

    def test_no_max_pool_and_a_stride_one_stem(self):
        net = resnet18_cifar(width=4)
        assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
        assert net.stem[0].kernel_size == (3, 3) and net.stem[0].stride == (1, 1)

    def test_every_parameter_gets_a_gradient(self):
        net = resnet18_cifar(width=4)
        torch.nn.functional.cross_entropy(
            net(torch.rand(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3])
        ).backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
        assert missing == []

    def test_a_few_steps_fit_a_small_batch(self):
        net = ResNet(depths=(1, 1), widths=(8, 16), num_classes=3)
        x, y = torch.randn(12, 3, 8, 8), torch.arange(12) % 3
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for _ in range(30):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert (net.eval()(x).argmax(1) == y).all()

    def test_no_in_place_activations(self):
        # pruning tools trace the graph; in-place ops on tensors shared with the shortcut break it
        relus = [m for m in resnet18_cifar(width=4).modules() if isinstance(m, torch.nn.ReLU)]
        assert relus and not any(m.inplace for m in relus)

    def test_hydra_builds_it_from_yaml_lists(self):
        cfg = OmegaConf.create(
            {
                "_target_": "masking.models.ResNet",
                "depths": [1, 1],
                "widths": [4, 8],
                "num_classes": 3,
                "in_channels": 1,
            }
        )
        net = instantiate(cfg)
        assert net.depths == (1, 1) and net.widths == (4, 8)
        assert net(torch.rand(2, 1, 8, 8)).shape == (2, 3)
        cfg = OmegaConf.create({"_target_": "masking.models.resnet18_cifar", "width": 4})
        assert instantiate(cfg).widths == (4, 8, 16, 32)

    def test_torch_pruning_removes_channels_and_the_network_still_runs(self):
        tp = pytest.importorskip("torch_pruning")
        net = resnet18_cifar(width=8).eval()
        x = torch.rand(2, 3, 16, 16)
        before = n_params(net)
        pruner = tp.pruner.MagnitudePruner(
            net,
            x,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.5,
            ignored_layers=[net.fc],
        )
        pruner.step()
        assert n_params(net) < 0.4 * before
        assert net(x).shape == (2, 10)

    def test_compiles(self):
        net = ResNet(depths=(1,), widths=(4,), num_classes=2).eval()
        x = torch.rand(2, 3, 8, 8)
        torch.testing.assert_close(torch.compile(net, backend="eager")(x), net(x))

    def test_compiles_fullgraph_for_training(self):
        net = resnet18_cifar(width=4, num_classes=3)
        x = torch.rand(2, 3, 16, 16, requires_grad=True)
        assert_compiles_like_eager(net, [x], backend="aot_eager")

    def test_docstring_examples(self):
        result = doctest.testmod(
            masking.models.resnet, globs={"torch": torch, **vars(masking.models.resnet)}
        )
        assert result.attempted > 0 and result.failed == 0


class TestBadArguments:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"depths": ()}, "depths must be a non-empty sequence of ints >= 1, got []"),
            ({"depths": (2, 0)}, "depths must be a non-empty sequence of ints >= 1, got [2, 0]"),
            ({"depths": 2}, "depths must be a non-empty sequence of ints >= 1, got 2"),
            ({"depths": "22"}, "depths must be a non-empty sequence"),
            ({"widths": (64, 128.0, 256, 512)}, "widths must be a non-empty sequence"),
            ({"widths": (64, 128)}, "widths must have one entry per stage (4), got [64, 128]"),
            ({"num_classes": 0}, "num_classes must be an int >= 1, got 0"),
            ({"in_channels": True}, "in_channels must be an int >= 1, got True"),
        ],
    )
    def test_constructor(self, kwargs, message):
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            ResNet(**kwargs)

    def test_width(self):
        with pytest.raises(ValueError, match=r"^width must be an int >= 1, got 0$"):
            resnet18_cifar(width=0)

    @pytest.mark.parametrize("shape", [(2, 1, 32, 32), (3, 32, 32)])
    def test_input_shape(self, shape):
        with pytest.raises(ValueError, match=r"^x must be \(B, 3, H, W\), got"):
            resnet18_cifar(width=4)(torch.rand(*shape))
