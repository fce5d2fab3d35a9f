"""Images for inpainting: an image folder or the bundled photos, split by file, cropped and flipped.

Masks are not made here: the task draws them on the batch's device from a seeded generator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
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
from .photos import BUNDLED_PHOTOS, load_bundled_photo

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


class RandomCrops(Dataset):
    """Random crops of random images with the device-side crop and flip decided here, per sample key.

    A key (handed out by ``EpochSampler``) seeds the choice of image, the CPU crop of ``size`` and the
    parameters ``[top, left, flip]`` of the final ``crop`` on the device, so the whole augmentation is
    reproducible: independent of the DataLoader workers and of the number of processes, different
    each epoch, the same after a resume. The key itself rides along as the fourth parameter (the
    task seeds each image's mask with it).
    """

    def __init__(self, source: _Source, size: int, crop: int, seed: int) -> None:
        self.source, self.size, self.crop, self.seed = source, size, crop, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        g = keyed_generator(self.seed, key)
        image = self.source[int(torch.randint(len(self.source), (), generator=g))]
        h, w = image.shape[1:]
        top = int(torch.randint(h - self.size + 1, (), generator=g))
        left = int(torch.randint(w - self.size + 1, (), generator=g))
        slack = self.size - self.crop
        params = torch.cat(
            [
                torch.randint(slack + 1, (2,), generator=g),
                torch.randint(2, (1,), generator=g),
                torch.tensor([int(key)]),
            ]
        )
        return image[:, top : top + self.size, left : left + self.size].contiguous(), params


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
    """Deterministic validation crops: the centre crop of each image, or tiles covering it."""

    def __init__(self, source: _Source, size: int, mode: str, max_crops: int | None) -> None:
        self.source, self.size = source, size
        self.crops: list[tuple[int, int, int]] = []
        for index in range(len(source)):
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
        return len(self.crops)

    def __getitem__(self, i: int) -> Tensor:
        index, top, left = self.crops[i]
        return self.source[index][:, top : top + self.size, left : left + self.size].contiguous()


class InpaintingDataModule(LightningDataModule):
    """Training and validation images for inpainting, from a folder or the bundled photos.

    Args:
        root: a folder of jpg/png/webp/bmp/tiff images (searched recursively); ``None`` uses the
            photos bundled with scikit-image, so nothing is downloaded.
        crop_size: side of the square crops the network sees.
        batch_size: images per batch.
        samples_per_epoch: random training crops per epoch.
        val_fraction: share of the files held out for validation (split by file, seeded).
        val_crops: ``"tiled"`` (tiles covering each validation image) or ``"center"``.
        max_val_crops: cap on validation crops, spread over all validation images.
        split_seed: seed of the train/val split and of the training crops.
        num_workers, pin_memory: DataLoader settings.
        strict: fail on an unreadable file instead of skipping it with a warning.
        cache: keep decoded images in memory (default: only for the bundled photos).

    Images are read as RGB floats in [0, 1] whatever their mode (grey, palette, RGBA with the alpha
    dropped, 16-bit), with their EXIF orientation applied. Files without an image suffix are
    ignored; files that do not decode (corrupt, truncated, not images) are skipped with one warning
    that counts them, or raise ``ImageReadError`` naming the file when ``strict``. An image whose
    shorter side is below the crop (``crop_size`` + 1/8 for training) is upscaled (bilinear) until
    it fits, so a folder of small images still trains; it is never rejected.

    Training batches get a random ``crop_size`` crop and a horizontal flip on the batch's device
    (kornia), from crops 1/8 larger made on the CPU; all of it decided per sample key by a seeded
    generator, so a resumed or re-run training sees the same images.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        crop_size: int = 64,
        batch_size: int = 16,
        samples_per_epoch: int = 1024,
        val_fraction: float = 0.2,
        val_crops: str = "tiled",
        max_val_crops: int | None = 64,
        split_seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        strict: bool = False,
        cache: bool | None = None,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("crop_size", crop_size, 8),
            ("batch_size", batch_size, 1),
            ("samples_per_epoch", samples_per_epoch, 1),
            ("num_workers", num_workers, 0),
        ):
            check_int(name, value, minimum)
        if max_val_crops is not None:
            check_int("max_val_crops", max_val_crops, 1)
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
        if val_crops not in ("tiled", "center"):
            raise ValueError(f"val_crops must be 'tiled' or 'center', got {val_crops!r}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {strict!r}")
        self.root = None if root is None else Path(root)
        self.crop_size, self.batch_size = crop_size, batch_size
        self.samples_per_epoch, self.val_fraction = samples_per_epoch, val_fraction
        self.val_crops, self.max_val_crops, self.split_seed = val_crops, max_val_crops, split_seed
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
        if len(items) < 2:
            raise ValueError(
                f"need at least 2 images to split into train and val, found {len(items)}"
            )
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = min(len(items) - 1, max(1, round(self.val_fraction * len(items))))
        self.val_items = [items[i] for i in order[:n_val].tolist()]
        self.train_items = [items[i] for i in order[n_val:].tolist()]
        margin = self.crop_size + self.crop_size // 8
        self._train = RandomCrops(
            _Source(self.train_items, load, margin, self.cache),
            margin,
            self.crop_size,
            self.split_seed,
        )
        self._val = FixedCrops(
            _Source(self.val_items, load, self.crop_size, self.cache),
            self.crop_size,
            self.val_crops,
            self.max_val_crops,
        )
        log.info(
            "%d training and %d validation images (%d validation crops of %d px)",
            len(self.train_items),
            len(self.val_items),
            len(self._val),
            self.crop_size,
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
        """Crop to ``crop_size`` and flip horizontally on the batch's device (kornia), with the
        per-image ``[top, left, flip]`` the dataset drew."""
        from kornia.geometry.transform import crop_by_indices, hflip

        images, params = batch
        top = params[:, 0].to(images.device, torch.float32)
        left = params[:, 1].to(images.device, torch.float32)
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
        flip = params[:, 2].to(images.device).bool().view(-1, 1, 1, 1)
        return torch.where(flip, hflip(crops), crops)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches become ``(images, keys)`` (cropped and flipped on the device);
        validation batches stay images."""
        if isinstance(batch, tuple | list) and len(batch) == 2:
            return self.augment(batch), batch[1][:, 3]
        return batch
