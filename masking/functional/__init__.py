"""Pure tensor functions: the masked ops with their input checks."""

from .fill import fill_holes, hole_distance
from .gated_conv import ACTIVATIONS, gated_conv2d, resolve_activation
from .mask_product import PackedMask, mask_product, pack_mask
from .masked_conv import masked_conv2d
from .masked_linear import masked_linear
from .partial_conv import partial_conv2d, update_mask2d

__all__ = [
    "ACTIVATIONS",
    "PackedMask",
    "fill_holes",
    "gated_conv2d",
    "hole_distance",
    "mask_product",
    "masked_conv2d",
    "masked_linear",
    "pack_mask",
    "partial_conv2d",
    "resolve_activation",
    "update_mask2d",
]
