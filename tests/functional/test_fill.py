"""fill_holes: the classical fill that the default inpainting network refines."""

from __future__ import annotations

import pytest
import torch

from masking.functional import fill_holes, hole_distance
from tests.oracle import blob_mask, ring_fill_loop


def _masks(batch: int, size: int, ratio: float) -> torch.Tensor:
    mask = blob_mask(batch, size, ratio)
    mask[..., 0, 0] = 1  # at least one known pixel per image
    return mask


@pytest.mark.parametrize("radius", [1, 3])
def test_matches_the_pixel_by_pixel_rule(radius):
    image = torch.rand(2, 3, 14, 17, generator=torch.Generator().manual_seed(0))
    mask = _masks(2, 17, 0.5)[..., :14, :]
    got = fill_holes(image, mask, radius=radius)
    for i in range(2):
        want = ring_fill_loop(image[i], mask[i, 0], radius).float()
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-6)


def test_known_pixels_are_kept_bit_for_bit_and_the_holes_never_read():
    image, mask = torch.rand(3, 3, 32, 32), _masks(3, 32, 0.4)
    filled = fill_holes(image, mask)
    assert torch.equal(filled[mask.expand_as(image) > 0.5], image[mask.expand_as(image) > 0.5])
    poisoned = image.masked_fill(mask == 0, float("nan"))
    assert torch.equal(fill_holes(poisoned, mask), filled)


def test_a_fill_is_a_weighted_mean_of_known_colours():
    # each channel stays within the range of the known values, and a flat image stays flat
    image, mask = torch.rand(2, 3, 24, 24), _masks(2, 24, 0.6)
    filled = fill_holes(image, mask)
    for i in range(2):
        known = image[i][:, mask[i, 0] > 0.5]
        low, high = known.min(1).values[:, None, None], known.max(1).values[:, None, None]
        assert (filled[i] >= low - 1e-6).all() and (filled[i] <= high + 1e-6).all()
    flat = torch.full((1, 3, 24, 24), 0.3)
    torch.testing.assert_close(fill_holes(flat, mask[:1]), flat)


def test_batch_items_are_filled_independently_and_dtype_is_kept():
    image, mask = torch.rand(3, 3, 20, 20), _masks(3, 20, 0.5)
    together = fill_holes(image, mask)
    for i in range(3):
        torch.testing.assert_close(
            together[i : i + 1], fill_holes(image[i : i + 1], mask[i : i + 1])
        )
    assert fill_holes(image.half(), mask).dtype == torch.float16


def test_rings_are_chessboard_distances_and_a_mask_without_known_pixels_gives_zeros():
    mask = torch.ones(1, 1, 9, 9)
    mask[..., 2:7, 2:7] = 0
    rings, last = hole_distance(mask)
    assert (
        last == 3 and rings[0, 0, 4, 4] == 3 and rings[0, 0, 2, 2] == 1 and rings[0, 0, 0, 0] == 0
    )
    image = torch.rand(2, 3, 9, 9)
    masks = torch.stack([mask[0], torch.zeros(1, 9, 9)])
    filled = fill_holes(image, masks)
    assert torch.equal(filled[1], torch.zeros(3, 9, 9)) and torch.isfinite(filled).all()


def test_on_real_photos_it_fills_about_as_well_as_opencv_telea():
    # the property the default inpainting network relies on: a classical fill to refine that
    # carries the boundary's colours in (measured: 0.1062 vs Telea's 0.1053 bin-averaged hole-L1
    # on the held-out photos, 72 masks; here one mask per bin and photo)
    cv2 = pytest.importorskip("cv2")
    from datamodules import HELD_OUT_PHOTOS, load_bundled_photo
    from masking.generators import evaluation_masks

    ours = telea = 0.0
    masks = evaluation_masks(128, 1, seed=0)
    for name in HELD_OUT_PHOTOS:
        image = load_bundled_photo(name, size=128)
        for bin_masks in masks.values():
            mask = bin_masks[:1]
            holes = mask[0, 0] < 0.5
            ours += float((fill_holes(image[None], mask)[0] - image).abs()[:, holes].mean())
            array = (image.permute(1, 2, 0) * 255).round().byte().numpy()
            filled = cv2.inpaint(array, holes.numpy().astype("uint8"), 3, cv2.INPAINT_TELEA)
            reference = torch.from_numpy(filled).permute(2, 0, 1).float() / 255
            telea += float((reference - image).abs()[:, holes].mean())
    assert ours < 1.05 * telea, (ours, telea)


@pytest.mark.parametrize(
    ("args", "kwargs", "text"),
    [
        ((torch.zeros(1, 3, 8, 8, dtype=torch.long), torch.ones(1, 1, 8, 8)), {}, "image must be"),
        ((torch.zeros(3, 8, 8), torch.ones(1, 1, 8, 8)), {}, "image must be (B, C, H, W)"),
        ((torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)), {}, "mask (B, 1, H, W)"),
        ((torch.zeros(2, 3, 8, 8), torch.ones(1, 1, 8, 8)), {}, "does not match image"),
        ((torch.zeros(1, 3, 8, 8), torch.ones(1, 1, 8, 8)), {"radius": 0}, "radius must be"),
        (("image", torch.ones(1, 1, 8, 8)), {}, "image must be a torch.Tensor"),
    ],
)
def test_bad_input_is_one_line(args, kwargs, text):
    with pytest.raises((TypeError, ValueError)) as info:
        fill_holes(*args, **kwargs)
    assert text in str(info.value) and "\n" not in str(info.value)
