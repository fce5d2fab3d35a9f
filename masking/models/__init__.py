"""Plain ``nn.Module`` networks built from ``masking.layers``."""

from .deepfill import GatedGenerator, PatchDiscriminator
from .pconv_unet import PConvUNet
from .resnet import BasicBlock, ResNet, resnet18_cifar
from .vit import vit_small

__all__ = [
    "BasicBlock",
    "GatedGenerator",
    "PConvUNet",
    "PatchDiscriminator",
    "ResNet",
    "resnet18_cifar",
    "vit_small",
]
