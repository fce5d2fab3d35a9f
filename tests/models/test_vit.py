"""``vit_small``: a torchvision ViT of any size that fits small images, with named errors."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer

from masking.models import vit_small


def test_builds_a_torchvision_vit_of_the_given_sizes():
    net = vit_small(num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=48, patch_size=8)
    assert isinstance(net, VisionTransformer) and len(net.encoder.layers) == 2
    attention = net.encoder.layers[0].self_attention
    assert (attention.num_heads, attention.embed_dim) == (4, 32)
    assert net.encoder.layers[0].mlp[0].out_features == 48
    assert net(torch.rand(3, 3, 32, 32)).shape == (3, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_size": 5}, r"^image_size must be a multiple of patch_size \(5\), got 32$"),
        ({"num_heads": 5}, r"^hidden_dim must be a multiple of num_heads \(5\), got 192$"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.0}, r"^dropout must be a number in \[0, 1\), got 1.0$"),
    ],
)
def test_bad_sizes_are_one_line_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vit_small(**kwargs)
