"""Data: image folders and the photos the install brings (the embedded default, no
download), and scikit-learn's digits for the pruning job."""

from .digits import DigitsDataModule
from .images import IMAGE_SUFFIXES, ImageReadError, list_images, read_image, readable_images
from .inpainting import InpaintingDataModule
from .photos import BUNDLED_PHOTOS, HELD_OUT_PHOTOS, load_bundled_photo

__all__ = [
    "BUNDLED_PHOTOS",
    "HELD_OUT_PHOTOS",
    "IMAGE_SUFFIXES",
    "DigitsDataModule",
    "ImageReadError",
    "InpaintingDataModule",
    "list_images",
    "load_bundled_photo",
    "read_image",
    "readable_images",
]
