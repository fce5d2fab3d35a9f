import pytest
import torch

from datamodules import BUNDLED_PHOTOS, load_bundled_photo


@pytest.mark.parametrize("name", BUNDLED_PHOTOS)
def test_every_bundled_photo_loads_as_rgb(name):
    image = load_bundled_photo(name, size=32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.01


def test_full_size_keeps_aspect():
    assert load_bundled_photo("coffee").shape == (3, 400, 600)


def test_unknown_photo():
    with pytest.raises(ValueError, match="name must be one of"):
        load_bundled_photo("lena")
