"""Granularities: parsing, mask shapes, scores, expansion and which entries survive."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from masking.pruning import Granularity, parse_granularity
from masking.pruning.granularity import (
    BlockGranularity,
    ChannelGranularity,
    NMGranularity,
    WeightGranularity,
    nm_view,
)
from masking.pruning.groups import Member

ALL = ["weight", "channel", "block4x4", "block3x5", "2:4", "1:4"]
SHAPES = [(16, 32), (8, 12, 3, 3), (12, 8, 5), (10, 12, 3, 3)]  # linear, conv, conv1d, edge tiles


def weights(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class TestParse:
    @pytest.mark.parametrize(
        ("text", "cls", "name"),
        [
            ("weight", WeightGranularity, "weight"),
            ("unstructured", WeightGranularity, "weight"),
            ("element", WeightGranularity, "weight"),
            ("channel", ChannelGranularity, "channel"),
            ("Structured", ChannelGranularity, "channel"),
            ("filter", ChannelGranularity, "channel"),
            ("block16x16", BlockGranularity, "block16x16"),
            ("block:4x8", BlockGranularity, "block4x8"),
            (" 2:4 ", NMGranularity, "2:4"),
            ("1:8", NMGranularity, "1:8"),
        ],
    )
    def test_every_spelling_gives_its_class_and_its_name(self, text, cls, name):
        granularity = parse_granularity(text)
        assert type(granularity) is cls and isinstance(granularity, Granularity)
        assert str(granularity) == name
        assert parse_granularity(name) == granularity  # the name parses back to the same object

    def test_fields_and_fixed_sparsity(self):
        assert parse_granularity("block16x16").block == (16, 16)
        assert parse_granularity("block4x8").block == (4, 8)
        two_four = parse_granularity("2:4")
        assert (two_four.n, two_four.m, two_four.fixed_sparsity) == (2, 4, 0.5)
        assert parse_granularity("1:4").fixed_sparsity == 0.75
        assert all(parse_granularity(g).fixed_sparsity is None for g in ALL[:4])

    def test_an_object_is_passed_through(self):
        granularity = BlockGranularity(2, 8)
        assert parse_granularity(granularity) is granularity

    @pytest.mark.parametrize("text", ["row", "block0x4", "block4", "4:2", "2:2", "0:4", ""])
    def test_bad_names_are_one_line_errors_naming_the_value(self, text):
        with pytest.raises(ValueError, match="granularity must be") as info:
            parse_granularity(text)
        assert repr(text) in str(info.value) and "\n" not in str(info.value)

    @pytest.mark.parametrize(
        ("make", "message"),
        [
            (lambda: BlockGranularity(0, 4), "block rows must be an int >= 1, got 0"),
            (lambda: BlockGranularity(4, 2.5), "block cols must be an int >= 1, got 2.5"),
            (lambda: NMGranularity(4, 4), "1 <= n < m, got n=4, m=4"),
            (lambda: NMGranularity(True, 4), "1 <= n < m"),
        ],
    )
    def test_bad_constructor_arguments(self, make, message):
        with pytest.raises(ValueError, match=message):
            make()

    def test_objects_are_values(self):
        assert parse_granularity("weight") == parse_granularity("unstructured")
        assert len({parse_granularity(g) for g in [*ALL, "weight", "2:4"]}) == len(ALL)
        assert all(
            pickle.loads(pickle.dumps(parse_granularity(g))) == parse_granularity(g) for g in ALL
        )


class TestWhatTheApplicationReads:
    @pytest.mark.parametrize("name", ALL)
    def test_only_channels_are_structured_and_counted_in_channels(self, name):
        granularity = parse_granularity(name)
        assert granularity.structured is (name == "channel")
        assert granularity.sparsity_kind == ("channel" if name == "channel" else "param")

    def test_default_allocation(self):
        assert {g: parse_granularity(g).default_allocation for g in ALL} == {
            "weight": "global",
            "channel": "layer",
            "block4x4": "global",
            "block3x5": "global",
            "2:4": "layer",
            "1:4": "layer",
        }


class TestShapes:
    @pytest.mark.parametrize("name", ALL)
    @pytest.mark.parametrize("shape", SHAPES)
    def test_scores_have_the_mask_shape_and_expand_onto_the_weight(self, name, shape):
        granularity = parse_granularity(name)
        weight = weights(shape)
        scores = granularity.scores(weight)
        assert tuple(scores.shape) == granularity.mask_shape(shape)
        assert scores.dtype == torch.float32 and (scores >= 0).all()
        expanded = granularity.expand(torch.ones(scores.shape), shape)
        assert torch.broadcast_shapes(expanded.shape, weight.shape) == weight.shape

    @pytest.mark.parametrize("shape", SHAPES)
    def test_block_scores_are_tile_norms_and_tiles_partition_the_weight(self, shape):
        block = BlockGranularity(4, 5)
        weight = weights(shape)
        gemm = weight.reshape(shape[0], -1)
        scores = block.scores(weight)
        assert scores[0, 0] == pytest.approx(float(gemm[:4, :5].norm()), rel=1e-6)
        assert scores[-1, -1] == pytest.approx(
            float(gemm[(scores.shape[0] - 1) * 4 :, (scores.shape[1] - 1) * 5 :].norm()), rel=1e-6
        )
        sizes = block.entry_sizes(shape)
        assert sizes.shape == scores.shape and int(sizes.sum()) == weight.numel()
        # each tile's expansion covers exactly its weights
        tile = torch.zeros(scores.shape)
        tile[-1, -1] = 1
        assert int(block.expand(tile, shape).sum()) == int(sizes[-1, -1])

    def test_channel_expansion_runs_along_the_given_dimension(self):
        channel = ChannelGranularity()
        mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
        assert channel.expand(mask, (4, 3, 3, 3)).shape == (4, 1, 1, 1)
        assert channel.expand(mask, (3, 4, 2, 2), dim=1).shape == (1, 4, 1, 1)
        weight = weights((4, 6))
        expected = weight.square().sum(1).sqrt()
        torch.testing.assert_close(channel.scores(weight), expected)

    def test_group_scores_sum_the_energy_of_every_member(self):
        channel = ChannelGranularity()
        conv, linear = weights((4, 3, 3, 3)), weights((5, 8), seed=1)
        members = [
            (Member("conv", "weight", 0, (0, 1, 2, 3), (0, 1, 2, 3)), conv),
            (Member("fc", "weight", 1, (1, 3, 5, 7), (0, 1, 2, 3)), linear),
            (Member("bn", "weight", 0, (0, 1, 2, 3), (0, 1, 2, 3)), torch.full((4,), 100.0)),
        ]
        energy = conv.flatten(1).square().sum(1) + linear[:, 1::2].square().sum(0)
        torch.testing.assert_close(channel.group_scores(4, members), energy.sqrt())
        # a group without multi-dimensional members falls back to its one-dimensional ones
        torch.testing.assert_close(channel.group_scores(4, members[2:]), torch.full((4,), 100.0))

    def test_only_n_m_refuses_weights_and_names_why(self):
        assert NMGranularity(2, 4).misfit((8, 6, 3, 3)) == (
            "input channels are not a multiple of 4 for 2:4"
        )
        assert NMGranularity(2, 4).misfit((8, 12)) is None
        assert all(parse_granularity(g).misfit((8, 6, 3, 3)) is None for g in ALL[:4])


class TestSelect:
    @pytest.mark.parametrize("name", ["weight", "channel"])
    @pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
    def test_layer_allocation_keeps_the_top_k_of_every_mask(self, name, sparsity):
        granularity = parse_granularity(name)
        scores = [weights(s).abs() for s in ((32,), (7,), (5, 6))]
        keeps = granularity.select(scores, sparsity, allocation="layer")
        for score, keep in zip(scores, keeps):
            n = score.numel()
            assert keep.shape == score.shape and keep.dtype == torch.bool
            assert int(keep.sum()) == max(1, n - round(sparsity * n))
            if not keep.all():
                assert score[keep].min() > score[~keep].max()

    @pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.7])
    def test_global_allocation_reaches_the_exact_count_below_one_threshold(self, sparsity):
        scores = [weights((40,)).abs(), 2 * weights((60,), seed=1).abs()]
        keeps = WeightGranularity().select(scores, sparsity, allocation="global")
        assert sum(int((~k).sum()) for k in keeps) == round(sparsity * 100)
        kept = torch.cat([s[k] for s, k in zip(scores, keeps)])
        dropped = torch.cat([s[~k] for s, k in zip(scores, keeps)])
        assert kept.min() > dropped.max()
        assert (~keeps[0]).float().mean() > (~keeps[1]).float().mean()  # smaller scores lose more

    @pytest.mark.parametrize("name", ["weight", "block2x2"])
    def test_every_mask_keeps_its_best_entry(self, name):
        scores = [torch.rand(10) * 1e-6, torch.rand(10) + 1]
        sizes = [torch.ones(10), torch.ones(10)] if name == "block2x2" else None
        keeps = parse_granularity(name).select(scores, 0.6, allocation="global", sizes=sizes)
        assert int(keeps[0].sum()) == 1 and bool(keeps[0][scores[0].argmax()])
        assert int(keeps[1].sum()) == 8  # 12 of 20 dropped below the threshold, one given back

    def test_channel_global_allocation_compares_layers_by_their_shape(self):
        channel = ChannelGranularity()
        scores = [weights((16,)).abs(), weights((24,), seed=1).abs()]
        scaled = [scores[0] * 1000, scores[1]]  # a wider fan-in: larger norms, same ranking
        first = channel.select(scores, 0.5, allocation="global")
        second = channel.select(scaled, 0.5, allocation="global")
        assert all(torch.equal(a, b) for a, b in zip(first, second))
        weight = WeightGranularity().select(scaled, 0.5, allocation="global")
        assert weight[0].all()  # without the normalisation the larger layer keeps everything

    @pytest.mark.parametrize("allocation", ["layer", "global"])
    def test_round_to_keeps_multiples_or_everything(self, allocation):
        scores = [weights((n,), seed=n).abs() for n in (6, 16, 24, 40)]
        keeps = ChannelGranularity().select(scores, 0.6, allocation=allocation, round_to=8)
        for score, keep in zip(scores, keeps):
            kept = int(keep.sum())
            assert kept % 8 == 0 or kept == score.numel()
        # round_to is a channel notion: weight masks ignore it
        (keep,) = WeightGranularity().select(scores[1:2], 0.6, allocation="layer", round_to=8)
        assert int(keep.sum()) == 6

    @pytest.mark.parametrize("allocation", ["layer", "global"])
    @pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.75])
    def test_blocks_drop_the_weights_closest_to_the_target(self, allocation, sparsity):
        block = BlockGranularity(4, 5)
        shapes = [(10, 12, 3, 3), (16, 30)]
        scores = [block.scores(weights(s, seed=i)) for i, s in enumerate(shapes)]
        sizes = [block.entry_sizes(s) for s in shapes]
        keeps = block.select(scores, sparsity, allocation=allocation, sizes=sizes)
        groups = [[0, 1]] if allocation == "global" else [[0], [1]]
        for group in groups:
            total = sum(float(sizes[i].sum()) for i in group)
            dropped = sum(float(sizes[i][~keeps[i]].sum()) for i in group)
            largest = max(float(sizes[i].max()) for i in group)
            assert abs(dropped - sparsity * total) <= largest / 2
            ranked = torch.cat([scores[i][keeps[i]] for i in group])
            assert ranked.min() > torch.cat([scores[i][~keeps[i]] for i in group]).max()

    @pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (2, 8)])
    @pytest.mark.parametrize("shape", [(8, 16, 3, 3), (6, 24)])
    def test_n_m_keeps_exactly_n_of_every_m_input_channels(self, n, m, shape):
        granularity = NMGranularity(n, m)
        weight = weights(shape)
        (keep,) = granularity.select(
            [granularity.scores(weight)], granularity.fixed_sparsity, allocation="global"
        )
        groups = nm_view(keep).reshape(shape[0], -1, m)  # runs of m consecutive input channels
        assert (groups.sum(-1) == n).all()
        magnitude = nm_view(weight.abs()).reshape(shape[0], -1, m)
        kept_min = magnitude.masked_fill(~groups, math.inf).amin(-1)
        dropped_max = magnitude.masked_fill(groups, -math.inf).amax(-1)
        assert (kept_min > dropped_max).all()  # the n largest of every group survive
        assert 1 - keep.float().mean() == pytest.approx(granularity.fixed_sparsity)

    def test_n_m_below_its_sparsity_keeps_more_never_fewer_than_n(self):
        granularity = NMGranularity(1, 4)
        score = granularity.scores(weights((4, 8)))
        kept = {
            s: int(granularity.select([score], s, allocation="layer")[0].sum()) // 8
            for s in (0.0, 0.25, 0.5, 0.75)
        }
        assert kept == {0.0: 4, 0.25: 3, 0.5: 2, 0.75: 1}

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"allocation": "uniform"}, "allocation must be one of global, layer, got 'uniform'"),
            ({"allocation": "layer", "round_to": 0}, "round_to must be an int >= 1, got 0"),
            ({"allocation": "layer", "sizes": [None, None]}, r"one entry per importance \(1\)"),
        ],
    )
    def test_bad_arguments(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            WeightGranularity().select([torch.rand(4)], 0.5, **kwargs)
        with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
            WeightGranularity().select([torch.rand(4)], 1.0, allocation="layer")
