"""Plain ``nn.Module`` networks built from ``masking.layers``."""

from .deepfill import GatedGenerator, PatchDiscriminator
from .pconv_unet import PConvUNet

__all__ = ["GatedGenerator", "PConvUNet", "PatchDiscriminator"]
