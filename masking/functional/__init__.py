"""Pure tensor functions: the masked ops with their input checks."""

from .gated_conv import ACTIVATIONS, gated_conv2d, resolve_activation
from .mask_product import mask_product
from .partial_conv import partial_conv2d, update_mask2d

__all__ = [
    "ACTIVATIONS",
    "gated_conv2d",
    "mask_product",
    "partial_conv2d",
    "resolve_activation",
    "update_mask2d",
]
