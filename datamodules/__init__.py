"""Data: the photos bundled with scikit-image (the embedded default, no download) and, later, image
folders and classification sets."""

from .photos import BUNDLED_PHOTOS, load_bundled_photo

__all__ = ["BUNDLED_PHOTOS", "load_bundled_photo"]
