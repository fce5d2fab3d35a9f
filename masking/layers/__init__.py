"""``nn.Module`` layers over ``masking.functional``, one concept a file, and their factory."""

from .attention import SlimMultiheadAttention
from .create_conv import CONV_LAYERS, create_conv2d
from .gated_conv import GatedConv2d
from .partial_conv import PartialConv2d
from .vanilla_conv import VanillaConv2d

__all__ = [
    "CONV_LAYERS",
    "GatedConv2d",
    "PartialConv2d",
    "SlimMultiheadAttention",
    "VanillaConv2d",
    "create_conv2d",
]
