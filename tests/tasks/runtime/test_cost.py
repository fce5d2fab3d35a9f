import doctest
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import tasks.runtime.cost
from masking.models import PConvUNet, ResNet
from tasks.runtime.cost import count_macs, count_params, latency_table, measure_latency


class _Mask(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.scores = nn.Parameter(torch.ones(shape))
        self.register_buffer("mask", torch.ones(shape))

    def forward(self, weight):
        return weight * self.mask


class TestCountParams:
    def test_counts_every_parameter_and_the_zeros(self):
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
        total = 8 * 27 + 8 + 8 + 8 + 16 + 2
        assert count_params(net) == {"params": total, "nonzero_params": total - 8}  # BN bias
        with torch.no_grad():
            net[0].weight[:4] = 0
            net[2].weight.zero_()
        assert count_params(net) == {"params": total, "nonzero_params": total - 8 - 4 * 27 - 16}

    def test_shared_parameters_count_once(self):
        layer = nn.Linear(4, 4, bias=False)
        assert count_params(nn.Sequential(layer, layer))["params"] == 16

    def test_parametrized_weights_count_as_masked(self):
        layer = nn.Linear(4, 3)
        parametrize.register_parametrization(layer, "weight", _Mask((3, 4)))
        assert count_params(layer) == {"params": 15, "nonzero_params": 15}  # scores not counted
        layer.parametrizations.weight[0].mask[1] = 0
        assert count_params(layer) == {"params": 15, "nonzero_params": 11}
        assert layer.training

    def test_not_a_module(self):
        with pytest.raises(TypeError, match=r"^model must be a torch.nn.Module, got Tensor$"):
            count_params(torch.zeros(3))


class TestCountMacs:
    def test_conv(self):
        assert count_macs(nn.Conv2d(3, 8, 3, padding=1), torch.rand(1, 3, 8, 8)) == 8 * 27 * 64

    def test_strided_grouped_conv_scales_with_batch(self):
        conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)
        assert count_macs(conv, torch.rand(3, 4, 8, 8)) == 3 * 8 * (2 * 9) * 16

    def test_linear(self):
        assert count_macs(nn.Linear(16, 5), torch.rand(4, 16)) == 4 * 16 * 5

    @pytest.mark.parametrize("batch_first", [True, False])
    def test_multihead_attention_counts_on_its_fused_path_as_on_its_plain_one(self, batch_first):
        # eval mode without gradients takes nn.MultiheadAttention's fused kernel, which
        # FlopCounterMode alone counts as zero: a ViT's attention would vanish from its MACs
        attention = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        q, kv = torch.rand(3, 5, 16), torch.rand(3, 7, 16)
        if not batch_first:
            q, kv = q.transpose(0, 1), kv.transpose(0, 1)
        expected = 3 * (5 * 16 * 16 + 2 * 7 * 16 * 16 + 2 * 5 * 7 * 16 + 5 * 16 * 16)
        assert count_macs(attention, (q, kv, kv)) == expected

    def test_attention_on_cpu_counts_its_two_products(self):
        class Attend(nn.Module):
            def forward(self, q, k, v):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)

        q, k = torch.rand(2, 4, 6, 8), torch.rand(2, 4, 9, 8)
        assert count_macs(Attend(), (q, k, k)) == 2 * 2 * 4 * 6 * 9 * 8

    def test_resnet_and_training_flag_restored(self):
        net = ResNet(depths=(1,), widths=(4,), num_classes=3)
        macs = count_macs(net, torch.rand(2, 3, 8, 8))
        per_image = 64 * (3 * 9 * 4 + 2 * 4 * 9 * 4) + 4 * 3
        assert macs == 2 * per_image
        assert net.training and net.stem[1].training

    def test_batch_norm_statistics_are_untouched(self):
        net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        count_macs(net, torch.rand(2, 3, 4, 4) + 5)
        assert torch.equal(net[1].running_mean, torch.zeros(4))

    def test_partial_conv_unet_counts_its_convolutions(self):
        x, mask = torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32)
        partial = count_macs(PConvUNet(depth=3, base_width=8), (x, mask))
        plain = count_macs(
            PConvUNet("vanilla", depth=3, base_width=8, mask_as_input=False), (x, mask)
        )
        assert partial == plain > 0

    def test_bad_inputs(self):
        with pytest.raises(
            TypeError, match=r"^example_inputs must be a tensor or a non-empty tuple"
        ):
            count_macs(nn.Linear(2, 2), ())
        with pytest.raises(TypeError, match=r"^example_inputs must be a tensor"):
            count_macs(nn.Linear(2, 2), {"x": torch.rand(1, 2)})


class TestLatency:
    def test_sane_numbers_and_state_restored(self):
        net = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5))
        threads = torch.get_num_threads()
        result = measure_latency(net, torch.rand(5, 16), repeats=7, warmup=1, threads=1)
        assert set(result) == {"median_ms", "p10_ms", "p90_ms", "repeats", "batch"}
        assert result["repeats"] == 7 and result["batch"] == 5
        assert 0 < result["p10_ms"] <= result["median_ms"] <= result["p90_ms"] < 1e4
        assert net.training and torch.get_num_threads() == threads

    def test_uses_eval_mode_and_no_autograd(self):
        seen = []

        class Probe(nn.Module):
            def forward(self, x, y):
                seen.append((self.training, torch.is_inference_mode_enabled()))
                return x + y

        measure_latency(Probe(), (torch.rand(2), torch.rand(2)), repeats=2, warmup=1)
        assert seen == [(False, True)] * 3

    def test_table(self):
        table = latency_table(
            nn.Linear(8, 2), lambda b: torch.rand(b, 8), batches=(1, 4), repeats=2, warmup=0
        )
        assert list(table) == ["batch_1", "batch_4"]
        assert [row["batch"] for row in table.values()] == [1, 4]

    def test_table_with_tuple_inputs(self):
        net = PConvUNet(depth=2, base_width=4)
        table = latency_table(
            net,
            lambda b: (torch.rand(b, 3, 8, 8), torch.ones(b, 1, 8, 8)),
            batches=[2],
            repeats=1,
            warmup=0,
        )
        assert table["batch_2"]["median_ms"] > 0

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"repeats": 0}, "repeats must be an int >= 1, got 0"),
            ({"warmup": -1}, "warmup must be an int >= 0, got -1"),
            ({"threads": 0}, "threads must be an int >= 1, got 0"),
        ],
    )
    def test_bad_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            measure_latency(nn.Linear(2, 2), torch.rand(1, 2), **kwargs)

    def test_bad_table_arguments(self):
        with pytest.raises(ValueError, match=r"^batches must be a non-empty sequence of ints >= 1"):
            latency_table(nn.Linear(2, 2), lambda b: torch.rand(b, 2), batches=(1, 0))
        with pytest.raises(TypeError, match=r"^make_input must be callable, got Tensor$"):
            latency_table(nn.Linear(2, 2), torch.rand(1, 2))

    def test_needs_a_batched_tensor(self):
        with pytest.raises(ValueError, match=r"^example_inputs must include a tensor"):
            measure_latency(nn.Identity(), torch.tensor(1.0))


def test_docstring_examples():
    module = tasks.runtime.cost
    result = doctest.testmod(module, globs={"torch": torch, **vars(module)})
    assert result.attempted > 0 and result.failed == 0
