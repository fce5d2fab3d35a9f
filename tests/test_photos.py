import pytest
import torch

from datamodules import BUNDLED_PHOTOS, HELD_OUT_PHOTOS, load_bundled_photo
from datamodules.photos import COLOR_PHOTOS


@pytest.mark.parametrize("name", BUNDLED_PHOTOS + HELD_OUT_PHOTOS)
def test_every_photo_loads_as_rgb(name):
    image = load_bundled_photo(name, size=32)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.01
    full = load_bundled_photo(name)
    colourful = (full.amax(0) - full.amin(0)).mean() > 0.02
    assert colourful == (name in COLOR_PHOTOS + HELD_OUT_PHOTOS), name


def test_held_out_photos_are_not_training_photos():
    assert not set(HELD_OUT_PHOTOS) & set(BUNDLED_PHOTOS)
    held_out = {load_bundled_photo(n, size=32) for n in HELD_OUT_PHOTOS}
    for name in BUNDLED_PHOTOS:  # not the same pixels under another name either
        image = load_bundled_photo(name, size=32)
        assert all((image - other).abs().mean() > 0.02 for other in held_out), name


def test_full_size_keeps_aspect():
    assert load_bundled_photo("coffee").shape == (3, 400, 600)


def test_unknown_photo():
    with pytest.raises(ValueError, match="name must be one of"):
        load_bundled_photo("lena")
