"""Handwritten digits bundled with scikit-learn: a classification set that needs no download.

1797 grey 8×8 images (values 0..16) of the digits 0-9, upsampled once to ``size`` and normalised, so
the CIFAR-sized networks the pruning job starts from apply unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from masking.checks import check_int
from masking.generators import keyed_generator

from ._sharding import ShardedSampler, ShardSampler, process_shard

log = logging.getLogger(__name__)

# What a derived generator is for, so the split, the order and the shifts never share a stream.
_SPLIT, _ORDER, _SHIFT = 1, 2, 3


def _generator(seed: int, purpose: int, *counters: int) -> torch.Generator:
    """A generator seeded from ``(seed, purpose, *counters)``."""
    return keyed_generator(seed, purpose, *counters)


def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as float32 images ``(1797, 1, 8, 8)`` in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.as_tensor(digits.target, dtype=torch.int64)


def stratified_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a seeded train/val split that holds ``val_fraction`` of every class out (rounded,
    at least one image per class on each side), both sorted.

    Args:
        labels: ``(N,)`` integer class labels.
        val_fraction: share of each class that goes to validation, in (0, 1).
        seed: seed of the per-class shuffles.

    Returns:
        ``(train_indices, val_indices)``, int64.
    """
    g = _generator(seed, _SPLIT)
    train, val = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        if len(members) < 2:
            raise ValueError(f"class {label} has {len(members)} image(s); a split needs 2")
        members = members[torch.randperm(len(members), generator=g)]
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


class EpochShuffleSampler(ShardedSampler):
    """A fresh seeded permutation of ``size`` items per pass, yielded as keys
    ``epoch · size + index``, so the dataset can tell the epoch from the key.

    Each ``iter()`` starts the next epoch; the order depends only on ``(seed, epoch)``. In a
    distributed run each process yields its share of the permutation.
    """

    def __init__(
        self, size: int, seed: int, start_epoch: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(rank, world_size)
        self.size, self.seed, self.epoch = size, seed, start_epoch

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=_generator(self.seed, _ORDER, self.epoch))
        keys = (order + self.epoch * self.size).tolist()
        self.epoch += 1
        return iter(self.shard(keys))

    def __len__(self) -> int:
        return self.shard_length(self.size)


class DigitImages(Dataset):
    """``(image, label)`` pairs from cached normalised ``(N, 1, S, S)`` images, repeated to
    ``channels``, optionally shifted by a random translation.

    With ``shift > 0`` items are addressed by the keys of ``EpochShuffleSampler``
    (``epoch · N + index``) and each image is moved by up to ``shift`` pixels along each axis, the
    uncovered border filled with ``fill`` (the background's normalised value); the translation is
    drawn from a generator seeded with ``(seed, key)``, so it differs between epochs and is the same
    on every run and with any number of workers. With ``shift == 0`` a key is the plain index.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        channels: int,
        shift: int = 0,
        fill: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.images, self.labels, self.channels = images, labels, channels
        self.shift, self.fill, self.seed = shift, fill, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        index = int(key) % len(self.images)
        image = self.images[index]
        if self.shift:
            s = self.shift
            dy, dx = torch.randint(
                -s, s + 1, (2,), generator=_generator(self.seed, _SHIFT, key)
            ).tolist()
            size = image.shape[-1]
            padded = F.pad(image, (s, s, s, s), value=self.fill)
            # content moves by (dy, dx): the window starts (dy, dx) before the original position
            image = padded[:, s - dy : s - dy + size, s - dx : s - dx + size]
        return image.expand(self.channels, -1, -1).contiguous(), self.labels[index]


class DigitsDataModule(LightningDataModule):
    """scikit-learn's handwritten digits for classification, upsampled and normalised, split by a
    seeded stratified draw.

    Images are bilinearly upsampled from 8×8 to ``size`` once in ``setup`` and kept in memory,
    normalised with the mean and standard deviation of the training split, and repeated to
    ``channels`` (3 by default, so networks built for RGB apply unchanged). Training batches are
    shuffled by a seeded per-epoch permutation and translated by up to ``shift`` pixels, both
    decided by ``seed`` and the epoch alone; validation (also served as the test set) is in order
    and unaugmented. Batches are ``(images, labels)``: float32 ``(B, channels, size, size)`` and
    int64 ``(B,)``.

    Args:
        size: side of the square images, >= 8.
        channels: 1 (grey) or 3 (grey repeated).
        val_fraction: share of each class held out for validation, in (0, 1).
        seed: seed of the split, the shuffles and the translations.
        batch_size: images per batch; the last incomplete training batch is dropped, so batch norm
            never sees a batch of one.
        shift: largest translation in pixels along each axis (0: no augmentation).
        num_workers, pin_memory: DataLoader settings.

    Example:
        >>> dm = DigitsDataModule(size=16, batch_size=4)
        >>> dm.setup()
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> images.shape, labels.shape
        (torch.Size([4, 3, 16, 16]), torch.Size([4]))
    """

    num_classes = 10

    def __init__(
        self,
        *,
        size: int = 32,
        channels: int = 3,
        val_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 64,
        shift: int = 2,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("size", size, 8),
            ("seed", seed, 0),
            ("batch_size", batch_size, 1),
            ("shift", shift, 0),
            ("num_workers", num_workers, 0),
        ):
            check_int(name, value, minimum)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if isinstance(val_fraction, bool) or not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if shift >= size:
            raise ValueError(f"shift must be < size ({size}), got {shift!r}")
        self.size, self.channels, self.val_fraction, self.seed = size, channels, val_fraction, seed
        self.batch_size, self.shift = batch_size, shift
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.mean = self.std = float("nan")
        self.train_indices = self.val_indices = torch.empty(0, dtype=torch.int64)
        self._train: DigitImages | None = None
        self._val: DigitImages | None = None
        self._start_epoch = 0
        self._sampler: EpochShuffleSampler | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        images, labels = load_digits_tensors()
        if self.size != images.shape[-1]:
            images = F.interpolate(
                images, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        train, val = stratified_split(labels, self.val_fraction, self.seed)
        if self.batch_size > len(train):
            raise ValueError(
                f"batch_size must be <= the {len(train)} training images, got {self.batch_size}"
            )
        train_images = images[train]
        # float64 statistics: a float32 sum over ~1.5M pixels loses digits
        self.mean = float(train_images.double().mean())
        self.std = float(train_images.double().std())
        images = (images - self.mean) / self.std
        fill = -self.mean / self.std  # the normalised background (raw value 0)
        self.train_indices, self.val_indices = train, val
        self._train = DigitImages(
            images[train].contiguous(),
            labels[train],
            channels=self.channels,
            shift=self.shift,
            fill=fill,
            seed=self.seed,
        )
        self._val = DigitImages(images[val].contiguous(), labels[val], channels=self.channels)
        log.info(
            "digits: %d training and %d validation images of %d px (mean %.4f, std %.4f)",
            len(train),
            len(val),
            self.size,
            self.mean,
            self.std,
        )

    def _require_setup(self) -> tuple[DigitImages, DigitImages]:
        if self._train is None or self._val is None:
            self.setup()
        return self._train, self._val  # type: ignore[return-value]  (setup built both)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches; each pass over the loader is the next epoch."""
        train, _ = self._require_setup()
        start = self._sampler.epoch if self._sampler is not None else self._start_epoch
        rank, world = process_shard(self)
        if len(train) // world < self.batch_size:
            raise ValueError(
                f"batch_size must be <= the {len(train) // world} training images of each of "
                f"{world} processes, got {self.batch_size}"
            )
        self._sampler = EpochShuffleSampler(
            len(train), self.seed, start_epoch=start, rank=rank, world_size=world
        )
        return DataLoader(
            train,
            batch_size=self.batch_size,
            sampler=self._sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order, without augmentation (in a distributed run, process
        ``r`` of ``W`` takes images ``r, r + W, ...``)."""
        _, val = self._require_setup()
        rank, world = process_shard(self)
        return DataLoader(
            val,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(val), rank, world),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def test_dataloader(self) -> DataLoader:
        """The validation split (the digits set is too small for a third split)."""
        return self.val_dataloader()

    def example_input(self, batch: int = 1) -> Tensor:
        """``batch`` validation images (repeated if needed), ``(batch, channels, size, size)``, for
        tracing and latency measurements."""
        check_int("batch", batch, 1)
        _, val = self._require_setup()
        index = torch.arange(batch) % len(val)
        return val.images[index].expand(-1, self.channels, -1, -1).contiguous()

    def state_dict(self) -> dict:
        """Saved in checkpoints: a resumed run continues with the next epoch's order and shifts."""
        epoch = self._sampler.epoch if self._sampler is not None else self._start_epoch
        return {"train_epoch": epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self._start_epoch = int(state_dict.get("train_epoch", 0))
        self._sampler = None
