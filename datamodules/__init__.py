"""Data: image folders and the photos bundled with scikit-image (the embedded default, no
download); classification sets come with the pruning job."""

from .images import IMAGE_SUFFIXES, ImageReadError, list_images, read_image, readable_images
from .inpainting import InpaintingDataModule
from .photos import BUNDLED_PHOTOS, load_bundled_photo

__all__ = [
    "BUNDLED_PHOTOS",
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "InpaintingDataModule",
    "list_images",
    "load_bundled_photo",
    "read_image",
    "readable_images",
]
