"""SlimMultiheadAttention is a drop-in for nn.MultiheadAttention: same weights, same outputs, same
mask conventions, and any number of heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from masking.layers import SlimMultiheadAttention
from masking.layers.attention import EXPLICIT_SCORES_UP_TO


def copy_of(mha: nn.MultiheadAttention) -> SlimMultiheadAttention:
    slim = SlimMultiheadAttention.like(mha, num_heads=mha.num_heads)
    slim.load_state_dict(mha.state_dict())
    return slim.train(mha.training)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("masks", ["none", "bool", "float", "padding", "causal"])
@pytest.mark.parametrize("length", [5, EXPLICIT_SCORES_UP_TO + 16])  # both score paths on a CPU
def test_same_outputs_as_multihead_attention(batch_first, need_weights, masks, length):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    slim = copy_of(mha)
    batch = 3
    x = torch.randn(batch, length, 16) if batch_first else torch.randn(length, batch, 16)
    kwargs: dict = {"need_weights": need_weights}
    if masks == "bool":
        kwargs["attn_mask"] = torch.rand(length, length) < 0.3
        kwargs["attn_mask"].fill_diagonal_(False)
    elif masks == "float":
        kwargs["attn_mask"] = torch.randn(batch * 4, length, length)
    elif masks == "padding":
        kwargs["key_padding_mask"] = torch.arange(length) >= torch.tensor([[length], [3], [4]])
    elif masks == "causal":
        kwargs["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(length)
        kwargs["is_causal"] = True
    expected, expected_weights = mha(x, x, x, **kwargs)
    output, weights = slim(x, x, x, **kwargs)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    if need_weights:
        torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)
    else:
        assert weights is None and expected_weights is None


@pytest.mark.parametrize("source", [7, EXPLICIT_SCORES_UP_TO + 16])
def test_cross_attention_and_separate_tensors_match_multihead_attention(source):
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    slim = copy_of(mha)
    query, memory = torch.randn(3, 5, 16), torch.randn(3, source, 16)
    for args in ((query, memory, memory), (query, query.clone(), query.clone())):
        expected, _ = mha(*args, need_weights=False)
        got, _ = slim(*args, need_weights=False)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_per_head_weights_and_unbatched_inputs():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2).eval()
    slim = copy_of(mha)
    query, memory = torch.randn(4, 8), torch.randn(6, 8)  # unbatched, cross-attention
    expected = mha(query, memory, memory, average_attn_weights=False)
    got = slim(query, memory, memory, average_attn_weights=False)
    assert got[1].shape == (2, 4, 6)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fewer_heads_than_the_width_allows_and_trains():
    slim = SlimMultiheadAttention(32, 1, 8, batch_first=True)
    assert slim.in_proj_weight.shape == (24, 32) and slim.out_proj.weight.shape == (32, 8)
    x = torch.randn(2, 5, 32, requires_grad=True)
    out, _ = slim(x, x, x, need_weights=False)
    assert out.shape == (2, 5, 32)
    out.sum().backward()
    assert slim.in_proj_weight.grad is not None and x.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 0}, "num_heads must be an int >= 1, got 0"),
        ({"head_dim": 2.5}, "head_dim must be an int >= 1, got 2.5"),
        ({"embed_dim": True}, "embed_dim must be an int >= 1, got True"),
    ],
)
def test_bad_sizes(kwargs, message):
    args = {"embed_dim": 8, "num_heads": 2, "head_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        SlimMultiheadAttention(**args)
