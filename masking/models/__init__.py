"""Plain ``nn.Module`` networks built from ``masking.layers``."""

from .pconv_unet import PConvUNet

__all__ = ["PConvUNet"]
