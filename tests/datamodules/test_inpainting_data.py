import logging

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import BUNDLED_PHOTOS, HELD_OUT_PHOTOS, InpaintingDataModule, load_bundled_photo
from datamodules.images import ImageReadError, list_images, read_image, readable_images
from datamodules.inpainting import EpochSampler


def save(path, array, mode=None, **kwargs):
    Image.fromarray(array, mode=mode).save(path, **kwargs)
    return path


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        save(tmp_path / f"img{i}.png", rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    return tmp_path


class TestReadImage:
    def test_modes_become_rgb_floats(self, tmp_path):
        grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
        paths = {
            "L": save(tmp_path / "l.png", grey),
            "LA": save(tmp_path / "la.png", np.stack([grey, grey], -1)),
            "RGBA": save(tmp_path / "rgba.png", np.zeros((12, 10, 4), np.uint8) + 100),
            "P": tmp_path / "p.png",
            "I;16": tmp_path / "i16.png",
        }
        Image.fromarray(grey).convert("P").save(paths["P"])
        Image.fromarray(grey.astype(np.uint16) * 257).save(paths["I;16"])
        for mode, path in paths.items():
            image = read_image(path)
            assert image.shape == (3, 12, 10) and image.dtype == torch.float32, mode
            assert image.min() >= 0 and image.max() <= 1, mode
        torch.testing.assert_close(
            read_image(paths["I;16"]), read_image(paths["L"]), atol=1e-3, rtol=0
        )

    def test_exif_orientation_is_applied(self, tmp_path):
        image = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
        exif = image.getexif()
        exif[0x0112] = 6  # rotate 90° when shown
        image.save(tmp_path / "rotated.jpg", exif=exif)
        assert read_image(tmp_path / "rotated.jpg").shape == (3, 30, 10)

    def test_unreadable_files(self, tmp_path, caplog):
        (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
        (tmp_path / "notes.txt").write_text("not an image")
        save(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
        files = list_images(tmp_path)
        assert [p.name for p in files] == ["broken.png", "good.png"]
        with caplog.at_level(logging.WARNING):
            assert [p.name for p in readable_images(files, strict=False)] == ["good.png"]
        assert "skipped 1 unreadable image file(s) of 2: broken.png" in caplog.text
        with pytest.raises(ImageReadError, match=r"broken\.png is not a readable image"):
            readable_images(files, strict=True)
        with pytest.raises(ImageReadError, match=r"broken\.png is not a readable image"):
            read_image(tmp_path / "broken.png")

    def test_missing_or_empty_folder(self, tmp_path):
        with pytest.raises(ValueError, match="root must be an existing folder"):
            list_images(tmp_path / "nope")
        with pytest.raises(ValueError, match="holds no images"):
            list_images(tmp_path)


class TestInpaintingDataModule:
    def test_bundled_photos_split_by_file(self):
        dm = InpaintingDataModule(crop_size=32, val_source="split")
        dm.setup()
        assert len(dm.val_items) == 3 and len(dm.train_items) == 12
        assert not set(dm.val_items) & set(dm.train_items)
        again = InpaintingDataModule(crop_size=32, val_source="split")
        again.setup()
        assert again.val_items == dm.val_items
        other = InpaintingDataModule(crop_size=32, val_source="split", split_seed=1)
        other.setup()
        assert other.val_items != dm.val_items

    def test_bundled_photos_validate_on_held_out_photos_whole(self):
        dm = InpaintingDataModule(crop_size=32, val_crops="whole", val_size=64, val_repeats=6)
        dm.setup()
        assert dm.train_items == list(BUNDLED_PHOTOS) and dm.val_items == list(HELD_OUT_PHOTOS)
        assert not set(BUNDLED_PHOTOS) & set(HELD_OUT_PHOTOS)
        val = torch.cat(list(dm.val_dataloader()))
        assert val.shape == (6 * len(HELD_OUT_PHOTOS), 3, 64, 64)
        for i, name in enumerate(HELD_OUT_PHOTOS):  # the whole photo, six times in a row
            whole = load_bundled_photo(name, size=64)
            assert all(torch.allclose(v, whole, atol=1e-6) for v in val[6 * i : 6 * i + 6])

    def test_training_crops_are_reproducible_and_new_each_epoch(self, folder):
        dm = InpaintingDataModule(folder, crop_size=16, batch_size=4, samples_per_epoch=8)
        dm.setup()
        first = torch.cat([images for images, _ in dm.train_dataloader()])
        assert first.shape == (8, 3, 18, 18)  # 1/8 larger than the crop, for the device crop
        loader = dm.train_dataloader()
        epoch0 = torch.cat([images for images, _ in loader])
        epoch1 = torch.cat([images for images, _ in loader])
        assert torch.equal(epoch0, first) and not torch.equal(epoch0, epoch1)

    def test_workers_do_not_change_the_crops(self, folder):
        batches = []
        for workers in (0, 2):
            dm = InpaintingDataModule(
                folder, crop_size=16, batch_size=4, samples_per_epoch=8, num_workers=workers
            )
            dm.setup()
            batches.append(torch.cat([dm.augment(batch) for batch in dm.train_dataloader()]))
        assert torch.equal(*batches)

    def test_device_augmentation_crops_and_flips(self, folder):
        dm = InpaintingDataModule(folder, crop_size=16, batch_size=8, samples_per_epoch=8)
        dm.setup()
        images, params = next(iter(dm.train_dataloader()))
        out, keys = dm.on_after_batch_transfer((images, params), 0)
        assert out.shape == (8, 3, 16, 16)
        assert keys.tolist() == list(range(8))  # the sample keys ride along for the masks
        for o, image, (top, left, flip) in zip(out, images, params[:, :3].long().tolist()):
            window = image[:, top : top + 16, left : left + 16]
            assert torch.allclose(o, window.flip(-1) if flip else window, atol=1e-6)
        assert 0 < params[:, 2].sum() < 8  # some flipped, some not

    def test_colour_augmentation(self, tmp_path):
        """Colours change per image and reproducibly; a grey photo comes out tinted; no colour
        parameter ever leaves [0, 1]; without it the crops keep their colours."""
        rng = np.random.default_rng(0)
        grey = rng.integers(0, 255, (40, 40), dtype=np.uint8)
        save(tmp_path / "grey.png", np.stack([grey] * 3, -1))
        save(tmp_path / "colour.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        outs = []
        for colour in (True, True, False):
            dm = InpaintingDataModule(
                tmp_path,
                crop_size=16,
                batch_size=16,
                samples_per_epoch=16,
                val_fraction=0.5,
                val_source="split",
                colour=colour,
            )
            dm.setup()
            outs.append(dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)[0])
        coloured, again, plain = outs
        assert torch.equal(coloured, again) and coloured.min() >= 0 and coloured.max() <= 1
        assert (coloured - plain).abs().mean() > 0.05
        spread = coloured.amax(1) - coloured.amin(1)  # 0 for a grey pixel
        is_grey = (plain.amax(1) - plain.amin(1)).amax((1, 2)) == 0
        assert is_grey.any() and spread[is_grey].mean() > 0.02  # the grey photo was tinted

    def test_scale_augmentation_sees_the_photo_smaller(self, tmp_path):
        """With scale 0.25 a crop covers a region four times its side, resized: a horizontal
        ramp of 1/255 per pixel becomes one of about 4/255 per pixel."""
        ramp = np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (200, 1, 3))
        for name in ("a.png", "b.png"):
            save(tmp_path / name, ramp)
        steps = {}
        for scale in (None, (0.25, 0.25)):
            dm = InpaintingDataModule(
                tmp_path,
                crop_size=16,
                batch_size=4,
                samples_per_epoch=4,
                val_source="split",
                scale=scale,
            )
            dm.setup()
            images, _ = next(iter(dm.train_dataloader()))
            assert images.shape == (4, 3, 18, 18)
            steps[scale] = float((images[..., 1:] - images[..., :-1]).abs().mean() * 255)
        assert steps[None] == pytest.approx(1, abs=0.01)
        assert steps[(0.25, 0.25)] == pytest.approx(4, rel=0.1)

    def test_mosaic_tiles_four_photos_in_quarters(self, tmp_path):
        """With mosaic 1 a crop of flat photos shows up to four of their levels, in the quarters
        of a split in the crop's middle half, the same again for the same keys; with mosaic 0 a
        crop is one photo."""
        for i in range(6):
            save(tmp_path / f"{i}.png", np.full((40, 40, 3), 40 * i, np.uint8))
        batches = {}
        for mosaic in (0.0, 1.0, 1.0):
            dm = InpaintingDataModule(
                tmp_path,
                crop_size=16,
                batch_size=32,
                samples_per_epoch=32,
                val_fraction=0.1,
                val_source="split",
                mosaic=mosaic,
            )
            dm.setup()
            batches.setdefault(mosaic, []).append(next(iter(dm.train_dataloader()))[0])
        assert all(len(torch.unique(crop)) == 1 for crop in batches[0.0][0])
        mosaics = batches[1.0][0]
        assert torch.equal(mosaics, batches[1.0][1])
        levels = [len(torch.unique(crop)) for crop in mosaics]
        assert max(levels) <= 4 and sum(n > 1 for n in levels) > len(levels) // 2
        for crop in mosaics[:, 0]:  # 18 px: the split row and column lie in [4, 14]
            rows = (crop[1:] != crop[:-1]).any(1).nonzero().flatten() + 1
            cols = (crop[:, 1:] != crop[:, :-1]).any(0).nonzero().flatten() + 1
            assert len(rows) <= 1 and len(cols) <= 1
            assert all(4 <= int(v) <= 14 for v in (*rows, *cols))
        with pytest.raises(ValueError, match=r"mosaic must be a probability in \[0, 1\], got 2"):
            InpaintingDataModule(mosaic=2)

    def test_validation_crops_are_fixed(self, folder):
        dm = InpaintingDataModule(folder, crop_size=16, val_fraction=0.34)
        dm.setup()
        val = torch.cat(list(dm.val_dataloader()))
        assert val.shape == (len(dm.val_items) * 2 * 3, 3, 16, 16)  # 40x56 px: 2x3 tiles each
        assert torch.equal(val, torch.cat(list(dm.val_dataloader())))
        centre = InpaintingDataModule(folder, crop_size=16, val_fraction=0.34, val_crops="center")
        centre.setup()
        assert len(centre.val_dataloader().dataset) == len(centre.val_items)

    def test_small_images_are_upscaled(self, tmp_path):
        for i in range(3):
            save(tmp_path / f"{i}.png", np.full((10, 12, 3), 60 * i, np.uint8))
        dm = InpaintingDataModule(tmp_path, crop_size=32, samples_per_epoch=4, batch_size=2)
        dm.setup()
        assert next(iter(dm.train_dataloader()))[0].shape == (2, 3, 36, 36)

    def test_bad_arguments(self, tmp_path):
        with pytest.raises(ValueError, match="crop_size must be an int >= 8, got 4"):
            InpaintingDataModule(crop_size=4)
        with pytest.raises(ValueError, match="val_crops must be 'tiled', 'center' or 'whole'"):
            InpaintingDataModule(val_crops="random")
        with pytest.raises(ValueError, match="val_source must be 'split' or 'held_out', got 'x'"):
            InpaintingDataModule(val_source="x")
        with pytest.raises(ValueError, match="with a root folder use val_source='split'"):
            InpaintingDataModule(tmp_path, val_source="held_out")
        with pytest.raises(ValueError, match=r"scale must be null or \[lo, hi\] with 0 < lo"):
            InpaintingDataModule(scale=[0.5, 2])
        with pytest.raises(ValueError, match="val_repeats must be an int >= 1, got 0"):
            InpaintingDataModule(val_repeats=0)
        with pytest.raises(TypeError, match="colour must be a bool, got 'yes'"):
            InpaintingDataModule(colour="yes")
        assert InpaintingDataModule(tmp_path).val_source == "split"  # a folder splits by default
        save(tmp_path / "only.png", np.zeros((20, 20, 3), np.uint8))
        with pytest.raises(ValueError, match="need at least 2 images"):
            InpaintingDataModule(tmp_path).setup()


def test_epoch_sampler_hands_out_new_keys():
    sampler = EpochSampler(3, start_epoch=2)
    assert list(sampler) == [6, 7, 8] and list(sampler) == [9, 10, 11] and len(sampler) == 3
