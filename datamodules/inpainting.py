"""Images for inpainting: an image folder or the bundled photos, split by file, cropped and flipped.

Masks are not made here: the task draws them on the batch's device from a seeded generator.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from masking.checks import check_int
from masking.generators import keyed_generator

from ._sharding import ShardedSampler, ShardSampler, process_shard
from .images import list_images, read_image, readable_images
from .photos import BUNDLED_PHOTOS, HELD_OUT_PHOTOS, load_bundled_photo, resize_square

log = logging.getLogger(__name__)


def _fit_min_side(image: Tensor, min_side: int) -> Tensor:
    """Upscale (antialiased bilinear) so the shorter side is at least ``min_side``."""
    h, w = image.shape[1:]
    if min(h, w) >= min_side:
        return image
    scale = min_side / min(h, w)
    size = (max(min_side, math.ceil(h * scale)), max(min_side, math.ceil(w * scale)))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0].clamp(
        0, 1
    )


class _Source:
    """Images by index, loaded by ``load`` and optionally kept in memory."""

    def __init__(self, items: list, load: Callable[[object], Tensor], min_side: int, cache: bool):
        self.items, self.load, self.min_side, self.cache = items, load, min_side, cache
        self._images: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tensor:
        if index in self._images:
            return self._images[index]
        image = _fit_min_side(self.load(self.items[index]), self.min_side)
        if self.cache:
            self._images[index] = image
        return image


# Colour augmentation ranges (per training image): a hue rotation, a saturation factor, a
# brightness shift, one of the six channel orders, and a random tint for grey photos.
HUE = math.pi  # radians either way: any hue
SATURATION = (0.5, 1.5)
BRIGHTNESS = 0.1
TINT = 0.5  # a grey photo's channel gains are drawn from 1 ± TINT (then their mean set to 1)
PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def tint_gains(u: Tensor) -> Tensor:
    """A grey photo's channel gains from three uniform draws ``u``: 1 ± TINT, their mean set to 1."""
    gains = 1 + TINT * (2 * u - 1)
    return gains / gains.mean()


class RandomCrops(Dataset):
    """Random crops of random images with the device-side augmentation decided here, per sample key.

    A key (handed out by ``EpochSampler``) seeds the choice of image, the scale, the CPU crop of
    ``size`` and the parameters of the device-side augmentation (``[top, left, flip, key,
    permutation, hue, saturation, brightness, gain_r, gain_g, gain_b]``), so the whole augmentation
    is reproducible: independent of the DataLoader workers and of the number of processes,
    different each epoch, the same after a resume. The key rides along (the task seeds each
    image's mask with it).

    ``scale``: ``(lo, hi)`` bounds of the resolution the crop is seen at, as a fraction of the
    photo's own (drawn log-uniformly; a region of ``size / scale`` pixels is resized to ``size``,
    antialiased), so the network meets the scales at which a photo is inpainted whole; ``None``
    keeps the native resolution. ``colour``: draw the colour augmentation (else its parameters are
    the identity). ``mosaic``: the probability that a crop is a 2 x 2 mosaic (split at a random
    point) of regions from four photos drawn at random, so that a handful of photos does not teach
    the network their layouts (the colour augmentation is the first photo's).
    """

    def __init__(
        self,
        source: _Source,
        size: int,
        crop: int,
        seed: int,
        *,
        scale: tuple[float, float] | None = None,
        colour: bool = False,
        mosaic: float = 0.0,
    ) -> None:
        self.source, self.size, self.crop, self.seed = source, size, crop, seed
        self.scale, self.colour, self.mosaic = scale, colour, mosaic
        self._grey: dict[int, bool] = {}

    def __len__(self) -> int:
        return len(self.source)

    def is_grey(self, index: int) -> bool:
        if index not in self._grey:
            image = self.source[index]
            self._grey[index] = bool(
                torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
            )
        return self._grey[index]

    def _region(
        self, image: Tensor, g: torch.Generator, height: int | None = None, width: int | None = None
    ) -> Tensor:
        """A ``height`` x ``width`` (default ``size`` square) region of ``image`` at a random
        position, seen at a resolution drawn from ``scale`` (a larger region resized) as far as
        the image allows."""
        height, width = height or self.size, width or self.size
        h, w = image.shape[1:]
        rows, cols = height, width
        if self.scale is not None:
            lo, hi = (math.log(v) for v in self.scale)
            scale = math.exp(lo + (hi - lo) * float(torch.rand((), generator=g)))
            factor = max(1.0, min(1 / scale, h / height, w / width))
            rows, cols = min(h, round(height * factor)), min(w, round(width * factor))
        top = int(torch.randint(h - rows + 1, (), generator=g))
        left = int(torch.randint(w - cols + 1, (), generator=g))
        region = image[:, top : top + rows, left : left + cols]
        if (rows, cols) != (height, width):
            region = F.interpolate(
                region[None], size=(height, width), mode="bilinear", antialias=True
            )[0].clamp(0, 1)
        return region.contiguous()

    def _mosaic(self, index: int, g: torch.Generator) -> Tensor:
        """A 2 x 2 mosaic split at a random point in the middle half: the top-left quarter from
        photo ``index``, the others from photos drawn at random (each at its own scale; a grey
        one tinted here when the colour augmentation is on, which tints only the first photo)."""
        low, high = self.size // 4, self.size - self.size // 4
        row, col = (int(torch.randint(low, high + 1, (), generator=g)) for _ in range(2))
        out = torch.empty(3, self.size, self.size)
        bands = (slice(0, row), slice(row, self.size)), (slice(0, col), slice(col, self.size))
        for k, (rows, cols) in enumerate(itertools.product(*bands)):
            photo = index if k == 0 else int(torch.randint(len(self.source), (), generator=g))
            height, width = rows.stop - rows.start, cols.stop - cols.start
            piece = self._region(self.source[photo], g, height, width)
            if k and self.colour and self.is_grey(photo):
                gains = tint_gains(torch.rand(3, generator=g))
                piece = (piece * gains[:, None, None]).clamp(0, 1)
            out[:, rows, cols] = piece
        return out

    def _colour(self, index: int, g: torch.Generator) -> Tensor:
        if not self.colour:
            return torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
        u = torch.rand(6, generator=g, dtype=torch.float64)
        permutation = float(torch.randint(len(PERMUTATIONS), (), generator=g))
        gains = torch.ones(3, dtype=torch.float64)
        if self.is_grey(index):
            gains = tint_gains(u[3:])
        hue = HUE * (2 * u[0] - 1)
        saturation = SATURATION[0] + (SATURATION[1] - SATURATION[0]) * u[1]
        brightness = BRIGHTNESS * (2 * u[2] - 1)
        return torch.cat(
            [
                torch.stack(
                    [torch.tensor(permutation, dtype=torch.float64), hue, saturation, brightness]
                ),
                gains,
            ]
        )

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        g = keyed_generator(self.seed, key)
        index = int(torch.randint(len(self.source), (), generator=g))
        if self.mosaic and float(torch.rand((), generator=g)) < self.mosaic:
            region = self._mosaic(index, g)
        else:
            region = self._region(self.source[index], g)
        slack = self.size - self.crop
        params = torch.cat(
            [
                torch.randint(slack + 1, (2,), generator=g).double(),
                torch.randint(2, (1,), generator=g).double(),
                torch.tensor([float(key)], dtype=torch.float64),
                self._colour(index, g),
            ]
        )
        return region, params


class EpochSampler(ShardedSampler):
    """``samples`` new keys per pass: epoch e yields e·samples ... (e + 1)·samples - 1 (this
    process's share of them in a distributed run)."""

    def __init__(
        self, samples: int, start_epoch: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(rank, world_size)
        self.samples, self.epoch = samples, start_epoch

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.samples
        self.epoch += 1
        return iter(self.shard(list(range(start, start + self.samples))))

    def __len__(self) -> int:
        return self.shard_length(self.samples)


class FixedCrops(Dataset):
    """Deterministic validation images: each image's centre crop, tiles covering it, or the whole
    image (shorter side resized to ``size``, centre square), each repeated ``repeats`` times in a
    row (every repetition meets the next evaluation mask, so a few whole photos see every bin)."""

    def __init__(
        self, source: _Source, size: int, mode: str, max_crops: int | None, repeats: int = 1
    ) -> None:
        self.source, self.size, self.mode, self.repeats = source, size, mode, repeats
        self.crops: list[tuple[int, int, int]] = []
        self._whole: dict[int, Tensor] = {}
        for index in range(len(source)):
            if mode == "whole":
                self.crops.append((index, 0, 0))
                continue
            h, w = source[index].shape[1:]
            if mode == "center":
                self.crops.append((index, (h - size) // 2, (w - size) // 2))
            else:
                rows, cols = h // size, w // size
                top0, left0 = (h - rows * size) // 2, (w - cols * size) // 2
                self.crops += [
                    (index, top0 + r * size, left0 + c * size)
                    for r in range(rows)
                    for c in range(cols)
                ]
        if max_crops is not None and len(self.crops) > max_crops:
            step = len(self.crops) / max_crops  # spread the kept tiles over every image
            self.crops = [self.crops[int(i * step)] for i in range(max_crops)]

    def __len__(self) -> int:
        return len(self.crops) * self.repeats

    def __getitem__(self, i: int) -> Tensor:
        index, top, left = self.crops[i // self.repeats]
        if self.mode == "whole":
            if index not in self._whole:
                self._whole[index] = resize_square(self.source[index], self.size)
            return self._whole[index]
        return self.source[index][:, top : top + self.size, left : left + self.size].contiguous()


class InpaintingDataModule(LightningDataModule):
    """Training and validation images for inpainting, from a folder or the bundled photos.

    Args:
        root: a folder of jpg/png/webp/bmp/tiff images (searched recursively); ``None`` uses the
            photos the install brings, so nothing is downloaded.
        crop_size: side of the square crops the network sees.
        batch_size: images per batch.
        samples_per_epoch: random training crops per epoch.
        val_source: ``"split"``: a seeded ``val_fraction`` of the files is held out for
            validation; ``"held_out"`` (the bundled photos only): training takes every
            ``BUNDLED_PHOTOS`` photo and validation the ``HELD_OUT_PHOTOS``, photos from other
            packages that training never sees. Default: ``"held_out"`` without ``root``, else
            ``"split"``.
        val_fraction: share of the files held out for validation (``val_source="split"``).
        val_crops: ``"tiled"`` (tiles covering each validation image), ``"center"``, or
            ``"whole"`` (the shorter side resized to ``val_size``, the centre square: the photo
            as ``task=predict`` sees it at that size).
        val_size: side of the validation images (default: ``crop_size``).
        val_repeats: each validation image is evaluated this many times, with as many different
            evaluation masks (6 or more: a few whole photos meet every hole-ratio bin).
        max_val_crops: cap on validation crops, spread over all validation images.
        split_seed: seed of the train/val split and of the training crops.
        num_workers, pin_memory: DataLoader settings.
        strict: fail on an unreadable file instead of skipping it with a warning.
        cache: keep decoded images in memory (default: only for the bundled photos).
        scale: ``(lo, hi)``: each training crop is seen at a resolution drawn log-uniformly
            between these fractions of the photo's own (a region of ``crop_size / scale`` pixels,
            resized), so the network meets the scales that whole photos are inpainted at;
            ``None``: the native resolution only.
        colour: colour augmentation on the device (kornia): any hue rotation, saturation
            × 0.5–1.5, brightness ± 0.1, a random channel order, and grey photos tinted by random
            channel gains, so no colour (and no greyness) becomes the network's prior.
        mosaic: the probability that a training crop is a 2 x 2 mosaic of regions from four
            photos drawn at random (split at a random point in the middle half), so that a few
            photos do not teach the network their layouts.

    Images are read as RGB floats in [0, 1] whatever their mode (grey, palette, RGBA with the alpha
    dropped, 16-bit), with their EXIF orientation applied. Files without an image suffix are
    ignored; files that do not decode (corrupt, truncated, not images) are skipped with one warning
    that counts them, or raise ``ImageReadError`` naming the file when ``strict``. An image whose
    shorter side is below the crop (``crop_size`` + 1/8 for training) is upscaled (bilinear) until
    it fits, so a folder of small images still trains; it is never rejected.

    Training batches get a random ``crop_size`` crop, a horizontal flip and the colour
    augmentation on the batch's device (kornia), from crops 1/8 larger made (and rescaled) on the
    CPU; all of it decided per sample key by a seeded generator, so a resumed or re-run training
    sees the same images.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        crop_size: int = 64,
        batch_size: int = 16,
        samples_per_epoch: int = 1024,
        val_source: str | None = None,
        val_fraction: float = 0.2,
        val_crops: str = "tiled",
        val_size: int | None = None,
        val_repeats: int = 1,
        max_val_crops: int | None = 64,
        split_seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        strict: bool = False,
        cache: bool | None = None,
        scale: tuple[float, float] | list[float] | None = None,
        colour: bool = False,
        mosaic: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("crop_size", crop_size, 8),
            ("batch_size", batch_size, 1),
            ("samples_per_epoch", samples_per_epoch, 1),
            ("num_workers", num_workers, 0),
            ("val_repeats", val_repeats, 1),
        ):
            check_int(name, value, minimum)
        if max_val_crops is not None:
            check_int("max_val_crops", max_val_crops, 1)
        if val_size is not None:
            check_int("val_size", val_size, 8)
        val_source = val_source or ("held_out" if root is None else "split")
        if val_source not in ("split", "held_out"):
            raise ValueError(f"val_source must be 'split' or 'held_out', got {val_source!r}")
        if val_source == "held_out" and root is not None:
            raise ValueError(
                "val_source 'held_out' validates on the bundled held-out photos; with a root "
                "folder use val_source='split'"
            )
        if scale is not None:
            if (
                isinstance(scale, str)
                or not isinstance(scale, Sequence)
                or len(scale) != 2
                or any(isinstance(v, bool) or not isinstance(v, int | float) for v in scale)
                or not 0 < scale[0] <= scale[1] <= 1
            ):
                raise ValueError(
                    f"scale must be null or [lo, hi] with 0 < lo <= hi <= 1, got {scale!r}"
                )
            scale = (float(scale[0]), float(scale[1]))
        if not isinstance(colour, bool):
            raise TypeError(f"colour must be a bool, got {colour!r}")
        if isinstance(mosaic, bool) or not isinstance(mosaic, int | float) or not 0 <= mosaic <= 1:
            raise ValueError(f"mosaic must be a probability in [0, 1], got {mosaic!r}")
        if batch_size > samples_per_epoch:
            # with drop_last the epoch would hold no batch at all, and training would do nothing
            raise ValueError(
                f"batch_size must be <= samples_per_epoch ({samples_per_epoch}), got {batch_size}"
            )
        if (
            isinstance(val_fraction, bool)
            or not isinstance(val_fraction, int | float)
            or not 0 < val_fraction < 1
        ):
            raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
        if val_crops not in ("tiled", "center", "whole"):
            raise ValueError(f"val_crops must be 'tiled', 'center' or 'whole', got {val_crops!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {strict!r}")
        self.root = None if root is None else Path(root)
        self.crop_size, self.batch_size = crop_size, batch_size
        self.samples_per_epoch, self.val_fraction = samples_per_epoch, val_fraction
        self.val_crops, self.max_val_crops, self.split_seed = val_crops, max_val_crops, split_seed
        self.val_source, self.val_size = val_source, crop_size if val_size is None else val_size
        self.val_repeats, self.scale, self.colour = val_repeats, scale, colour
        self.mosaic = float(mosaic)
        self.num_workers, self.pin_memory, self.strict = num_workers, pin_memory, strict
        self.cache = (root is None) if cache is None else bool(cache)
        self.train_items: list = []
        self.val_items: list = []
        self._start_epoch = 0
        self._sampler: EpochSampler | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_items:
            return
        if self.root is None:
            items: list = list(BUNDLED_PHOTOS)
            load: Callable = load_bundled_photo
        else:
            items = readable_images(list_images(self.root), strict=self.strict)
            load = read_image
        if self.val_source == "held_out":
            self.train_items, self.val_items = items, list(HELD_OUT_PHOTOS)
        else:
            if len(items) < 2:
                raise ValueError(
                    f"need at least 2 images to split into train and val, found {len(items)}"
                )
            generator = torch.Generator().manual_seed(self.split_seed)
            order = torch.randperm(len(items), generator=generator)
            n_val = min(len(items) - 1, max(1, round(self.val_fraction * len(items))))
            self.val_items = [items[i] for i in order[:n_val].tolist()]
            self.train_items = [items[i] for i in order[n_val:].tolist()]
        margin = self.crop_size + self.crop_size // 8
        self._train = RandomCrops(
            _Source(self.train_items, load, margin, self.cache),
            margin,
            self.crop_size,
            self.split_seed,
            scale=self.scale,
            colour=self.colour,
            mosaic=self.mosaic,
        )
        self._val = FixedCrops(
            _Source(self.val_items, load, self.val_size, self.cache),
            self.val_size,
            self.val_crops,
            self.max_val_crops,
            self.val_repeats,
        )
        log.info(
            "%d training and %d validation images (%d validation images of %d px)",
            len(self.train_items),
            len(self.val_items),
            len(self._val),
            self.val_size,
        )

    def train_dataloader(self) -> DataLoader:
        """Random crops, ``(images, params)`` batches (``params``: top, left, flip, key per image);
        in a distributed run each process gets its share of every epoch's keys."""
        rank, world = process_shard(self)
        if self.samples_per_epoch // world < self.batch_size:
            raise ValueError(
                f"samples_per_epoch ({self.samples_per_epoch}) split over {world} processes leaves "
                f"fewer than batch_size ({self.batch_size}) per process"
            )
        self._sampler = EpochSampler(
            self.samples_per_epoch, start_epoch=self._start_epoch, rank=rank, world_size=world
        )
        return DataLoader(
            self._train,
            batch_size=self.batch_size,
            sampler=self._sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """The validation crops in order; in a distributed run process ``r`` of ``W`` takes crops
        ``r, r + W, ...`` (the task recovers each crop's index, and so its evaluation mask)."""
        rank, world = process_shard(self)
        return DataLoader(
            self._val,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(self._val), rank, world),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def state_dict(self) -> dict:
        """Saved in checkpoints: the next training epoch's keys continue after a resume (Lightning
        restores this before it asks for the dataloader, but after its own epoch counter is read)."""
        epoch = self._sampler.epoch if self._sampler is not None else self._start_epoch
        return {"train_epoch": epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self._start_epoch = int(state_dict.get("train_epoch", 0))

    def augment(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Crop to ``crop_size``, flip horizontally and change the colours on the batch's device
        (kornia), with the per-image parameters the dataset drew."""
        from kornia.enhance import adjust_brightness, adjust_hue, adjust_saturation
        from kornia.geometry.transform import crop_by_indices, hflip

        images, params = batch
        params = params.to(images.device, torch.float32)
        top, left = params[:, 0], params[:, 1]
        c = self.crop_size - 1
        boxes = torch.stack(
            [
                torch.stack([left, top], 1),
                torch.stack([left + c, top], 1),
                torch.stack([left + c, top + c], 1),
                torch.stack([left, top + c], 1),
            ],
            1,
        )
        crops = crop_by_indices(images, boxes, size=(self.crop_size, self.crop_size))
        flip = params[:, 2].bool().view(-1, 1, 1, 1)
        crops = torch.where(flip, hflip(crops), crops)
        if params.shape[1] <= 4 or not self.colour:
            return crops
        gains = params[:, 8:11].view(-1, 3, 1, 1).to(crops.dtype)
        crops = (crops * gains).clamp(0, 1)
        order = torch.tensor(PERMUTATIONS, device=crops.device)[params[:, 4].long()]
        crops = torch.gather(crops, 1, order.view(-1, 3, 1, 1).expand_as(crops))
        crops = adjust_hue(crops, params[:, 5].to(crops.dtype))
        crops = adjust_saturation(crops, params[:, 6].to(crops.dtype))
        return adjust_brightness(crops, params[:, 7].to(crops.dtype)).clamp(0, 1)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches become ``(images, keys)`` (augmented on the device); validation
        batches stay images."""
        if isinstance(batch, tuple | list) and len(batch) == 2:
            return self.augment(batch), batch[1][:, 3].long()
        return batch
