import doctest
import re

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

import datamodules.digits
from datamodules.digits import DigitsDataModule, load_digits_tensors


@pytest.fixture(scope="module")
def digits():
    return load_digits_tensors()


def make(**kwargs):
    dm = DigitsDataModule(**kwargs)
    dm.setup()
    return dm


def epoch(loader):
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)


class TestSplit:
    def test_sizes_add_up_and_do_not_overlap(self):
        dm = make()
        train, val = dm.train_indices, dm.val_indices
        assert len(train) + len(val) == 1797
        assert len(set(train.tolist()) | set(val.tolist())) == 1797
        assert abs(len(val) - 0.2 * 1797) <= 10

    def test_every_class_is_split_by_the_fraction(self, digits):
        labels = digits[1]
        dm = make(val_fraction=0.3)
        val_counts = torch.bincount(labels[dm.val_indices], minlength=10)
        all_counts = torch.bincount(labels, minlength=10)
        assert (val_counts >= 1).all()
        assert ((val_counts - 0.3 * all_counts).abs() <= 0.5).all()

    def test_tiny_fraction_still_holds_out_every_class(self, digits):
        dm = make(val_fraction=1e-4, batch_size=8)
        assert torch.bincount(digits[1][dm.val_indices], minlength=10).tolist() == [1] * 10

    def test_seeded(self):
        a, b, c = make(seed=1), make(seed=1), make(seed=2)
        assert torch.equal(a.val_indices, b.val_indices)
        assert not torch.equal(a.val_indices, c.val_indices)

    def test_loaders_serve_the_split(self, digits):
        images, labels = digits
        dm = make(size=8, channels=1, shift=0)
        val_images, val_labels = epoch(dm.val_dataloader())
        assert torch.equal(val_labels, labels[dm.val_indices])
        torch.testing.assert_close(val_images * dm.std + dm.mean, images[dm.val_indices])
        assert len(dm.train_dataloader()) == len(dm.train_indices) // 64  # last batch dropped
        assert dm.test_dataloader().dataset is dm.val_dataloader().dataset


class TestBatches:
    def test_shapes_dtypes_and_normalisation(self):
        dm = make()
        images, labels = next(iter(dm.train_dataloader()))
        assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
        assert labels.shape == (64,) and labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() <= 9
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
        low, high = -dm.mean / dm.std, (1 - dm.mean) / dm.std
        assert images.min() >= low - 1e-5 and images.max() <= high + 1e-5

    def test_statistics_come_from_the_train_split_only(self, digits):
        images, _ = digits
        dm = make(size=16)
        upsampled = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
        train = upsampled[dm.train_indices].double()
        assert dm.mean == pytest.approx(float(train.mean()), rel=1e-9)
        assert dm.std == pytest.approx(float(train.std()), rel=1e-9)
        assert dm.mean != pytest.approx(float(upsampled.double().mean()), rel=1e-6)
        val_images, _ = epoch(dm.val_dataloader())
        torch.testing.assert_close(
            val_images[:, 0], (upsampled[dm.val_indices, 0] - dm.mean) / dm.std
        )

    def test_one_channel(self):
        dm = make(channels=1, size=16)
        assert next(iter(dm.val_dataloader()))[0].shape == (64, 1, 16, 16)
        assert dm.example_input(3).shape == (3, 1, 16, 16)

    def test_example_input(self):
        dm = DigitsDataModule(size=16)
        x = dm.example_input(500)  # sets up on demand, cycles the 359 validation images
        assert x.shape == (500, 3, 16, 16) and x.dtype == torch.float32
        assert torch.equal(x[359], x[0]) and torch.equal(
            x[0], next(iter(dm.val_dataloader()))[0][0]
        )

    def test_validation_is_in_order_and_unaugmented(self):
        dm = make(size=16)
        first, second = epoch(dm.val_dataloader()), epoch(dm.val_dataloader())
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])

    def test_hydra_builds_it(self):
        cfg = OmegaConf.create({"_target_": "datamodules.digits.DigitsDataModule", "size": 16})
        dm = instantiate(cfg)
        assert dm.size == 16 and dm.num_classes == 10


class TestTrainingOrderAndAugmentation:
    def test_same_seed_same_batches_across_epochs(self):
        a, b = make(size=16, seed=3), make(size=16, seed=3)
        loader_a, loader_b = a.train_dataloader(), b.train_dataloader()
        for _ in range(2):
            xa, ya = epoch(loader_a)
            xb, yb = epoch(loader_b)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)

    def test_different_seed_different_batches(self):
        _, ya = epoch(make(size=16, seed=3).train_dataloader())
        _, yb = epoch(make(size=16, seed=4).train_dataloader())
        assert not torch.equal(ya, yb)

    def test_each_epoch_reshuffles_and_shifts_anew(self):
        loader = make(size=16).train_dataloader()
        (_, y0), (_, y1) = epoch(loader), epoch(loader)
        assert not torch.equal(y0, y1)
        ds, n = loader.dataset, len(loader.dataset)
        # keys k and n + k are the same image in epochs 0 and 1
        assert any(not torch.equal(ds[k][0], ds[n + k][0]) for k in range(20))
        assert all(torch.equal(ds[k][0], ds[k][0]) for k in range(20))

    def test_shift_is_a_translation_with_background_fill(self):
        dm = make(size=16, shift=2)
        ds = dm.train_dataloader().dataset
        padded = F.pad(ds.images[:, 0], (2, 2, 2, 2), value=-dm.mean / dm.std)
        shifts = []
        for key in range(60):
            shifted = ds[key][0][0]
            matches = {
                (dy, dx)
                for dy in range(-2, 3)
                for dx in range(-2, 3)
                if torch.equal(padded[key, 2 - dy : 18 - dy, 2 - dx : 18 - dx], shifted)
            }
            assert matches, f"key {key} is not a translation of its image by <= 2 px"
            shifts.append(matches)
        # both axes move: some images match only translations with dx != 0, some only dy != 0
        assert any(all(dx != 0 for _, dx in m) for m in shifts)
        assert any(all(dy != 0 for dy, _ in m) for m in shifts)

    def test_shift_zero_is_no_augmentation(self):
        ds = make(size=16, shift=0).train_dataloader().dataset
        n = len(ds)
        for k in range(10):
            assert torch.equal(ds[k][0], ds.images[k].expand(3, -1, -1))
            assert torch.equal(ds[n + k][0], ds[k][0])

    def test_resume_continues_with_the_next_epoch(self):
        dm = make(size=16)
        loader = dm.train_dataloader()
        epoch(loader)
        expected = epoch(loader)
        resumed = DigitsDataModule(size=16)
        resumed.setup()
        resumed.load_state_dict({"train_epoch": 1})
        got = epoch(resumed.train_dataloader())
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert dm.state_dict() == {"train_epoch": 2}


def test_docstring_examples():
    module = datamodules.digits
    result = doctest.testmod(module, globs={"torch": torch, **vars(module)})
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 1.5}, "val_fraction must be in (0, 1), got 1.5"),
        ({"val_fraction": 0}, "val_fraction must be in (0, 1), got 0"),
        ({"size": 4}, "size must be an int >= 8, got 4"),
        ({"size": 32.0}, "size must be an int >= 8, got 32.0"),
        ({"channels": 2}, "channels must be 1 or 3, got 2"),
        ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
        ({"shift": -1}, "shift must be an int >= 0, got -1"),
        ({"shift": 16, "size": 16}, "shift must be < size (16), got 16"),
        ({"seed": -1}, "seed must be an int >= 0, got -1"),
        ({"num_workers": -1}, "num_workers must be an int >= 0, got -1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        DigitsDataModule(**kwargs)


def test_batch_larger_than_the_train_split():
    with pytest.raises(
        ValueError, match=r"^batch_size must be <= the 1438 training images, got 5000$"
    ):
        make(batch_size=5000)


def test_example_input_batch():
    with pytest.raises(ValueError, match=r"^batch must be an int >= 1, got 0$"):
        DigitsDataModule().example_input(0)
