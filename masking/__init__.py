"""Masks as a deep-learning primitive: one mask-product core under inpainting and pruning.

Convention everywhere: ``mask`` 1 = valid / keep, 0 = hole / drop.
"""

from .checks import set_value_checks
from .functional import (
    PackedMask,
    fill_holes,
    gated_conv2d,
    mask_product,
    masked_conv2d,
    masked_linear,
    pack_mask,
    partial_conv2d,
    update_mask2d,
)
from .layers import CONV_LAYERS, GatedConv2d, PartialConv2d, VanillaConv2d, create_conv2d

__version__ = "0.1.0"

__all__ = [
    "CONV_LAYERS",
    "GatedConv2d",
    "PackedMask",
    "PartialConv2d",
    "VanillaConv2d",
    "create_conv2d",
    "fill_holes",
    "gated_conv2d",
    "mask_product",
    "masked_conv2d",
    "masked_linear",
    "pack_mask",
    "partial_conv2d",
    "set_value_checks",
    "update_mask2d",
]
