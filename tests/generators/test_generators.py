import re

import pytest
import torch
from PIL import Image

from masking.generators import (
    HOLE_RATIO_BINS,
    Boxes,
    FolderMasks,
    FreeFormStrokes,
    IrregularStrokes,
    MixedMasks,
    bin_name,
    evaluation_masks,
    worker_generator,
)

GENERATORS = {
    "free_form": lambda **kw: FreeFormStrokes(**kw),
    "thin": lambda **kw: IrregularStrokes("thin", **kw),
    "medium": lambda **kw: IrregularStrokes("medium", **kw),
    "thick": lambda **kw: IrregularStrokes("thick", **kw),
    "boxes": lambda **kw: Boxes(**kw),
    "mixed": lambda **kw: MixedMasks(
        {"thin": IrregularStrokes("thin"), "boxes": Boxes()},
        probabilities={"thin": 3, "boxes": 1},
        **kw,
    ),
}


def draw(gen, batch=6, size=64, seed=0, **kwargs):
    return gen(batch, size, size, generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("name", sorted(GENERATORS))
class TestEveryGenerator:
    def test_shape_dtype_and_binary_values(self, name):
        masks = draw(GENERATORS[name](), batch=5, size=48)
        assert masks.shape == (5, 1, 48, 48) and masks.dtype == torch.float32
        assert set(masks.unique().tolist()) <= {0.0, 1.0}

    def test_same_seed_same_masks_and_other_seed_other_masks(self, name):
        gen = GENERATORS[name]()
        assert torch.equal(draw(gen, seed=3), draw(gen, seed=3))
        assert not torch.equal(draw(gen, seed=3), draw(gen, seed=4))

    def test_one_mask_per_image(self, name):
        masks = draw(GENERATORS[name](), batch=6)
        distinct = {tuple(m.flatten().tolist()) for m in masks}
        assert len(distinct) == 6

    def test_hole_ratio_range_is_respected(self, name):
        masks = draw(GENERATORS[name](hole_ratio=(0.1, 0.3), max_tries=200), batch=8)
        ratios = 1 - masks.mean((1, 2, 3))
        assert ((ratios >= 0.1) & (ratios <= 0.3)).all(), ratios

    def test_ramp_starts_easier(self, name):
        gen = GENERATORS[name](ramp_start=0.3)
        early = 1 - draw(gen, batch=24, progress=0.0).mean()
        late = 1 - draw(gen, batch=24, progress=1.0).mean()
        assert early < late


def test_free_form_flips_happen():
    # DeepFill's turning angles make every stroke drift the same way horizontally, so without the
    # left-right flip (computed and dropped in the original code) the average hole map leans to one side
    def lean(gen):
        holes = 1 - draw(gen, batch=200, size=32, seed=0).mean((0, 1, 2))
        left, right = holes[:16].sum(), holes[16:].sum()
        return float(abs(left - right) / (left + right))

    assert lean(FreeFormStrokes(flip=True)) * 3 < lean(FreeFormStrokes(flip=False))


def test_presets_differ_in_thickness():
    thin = 1 - draw(IrregularStrokes("thin"), batch=16, size=128).mean()
    thick = 1 - draw(IrregularStrokes("thick"), batch=16, size=128).mean()
    assert thin < thick


def test_masks_can_be_drawn_on_a_device_argument():
    masks = draw(IrregularStrokes("medium"), device="cpu")
    assert masks.device.type == "cpu"


def test_worker_generators_differ_by_worker_and_rank():
    class Draws(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return torch.rand(4, generator=worker_generator(7))

    loader = torch.utils.data.DataLoader(Draws(), batch_size=1, num_workers=2)
    first, second = (batch[0] for batch in loader)
    assert not torch.equal(first, second)
    main = torch.rand(4, generator=worker_generator(7))
    assert not torch.equal(main, first) and not torch.equal(main, second)
    assert torch.equal(main, torch.rand(4, generator=worker_generator(7)))
    assert not torch.equal(main, torch.rand(4, generator=worker_generator(7, rank=1)))


class TestFolderMasks:
    def write(self, folder, name, holes_white):
        array = torch.zeros(20, 30, dtype=torch.uint8)
        array[5:10, 5:20] = 255  # a white rectangle
        Image.fromarray(array.numpy()).save(folder / name)

    def test_white_is_valid_by_default_and_holes_are_white_flips_it(self, tmp_path):
        self.write(tmp_path, "a.png", False)
        valid_white = FolderMasks(tmp_path)(1, 20, 30, generator=torch.Generator())
        holes_white = FolderMasks(tmp_path, holes_are_white=True)(
            1, 20, 30, generator=torch.Generator()
        )
        assert valid_white[0, 0, 7, 10] == 1 and valid_white[0, 0, 0, 0] == 0
        assert torch.equal(holes_white, 1 - valid_white)

    def test_resized_to_the_requested_size(self, tmp_path):
        self.write(tmp_path, "a.png", False)
        masks = FolderMasks(tmp_path)(2, 40, 60, generator=torch.Generator())
        assert masks.shape == (2, 1, 40, 60)
        assert set(masks.unique().tolist()) == {0.0, 1.0}

    def test_bad_folders(self, tmp_path):
        with pytest.raises(ValueError, match="root must be an existing folder"):
            FolderMasks(tmp_path / "missing")
        with pytest.raises(ValueError, match="holds no mask images"):
            FolderMasks(tmp_path)
        (tmp_path / "broken.png").write_bytes(b"not a png")
        with pytest.raises(ValueError, match=r"broken\.png is not a readable image"):
            FolderMasks(tmp_path)(1, 8, 8, generator=torch.Generator())


class TestEvaluationMasks:
    def test_bins_are_filled_and_deterministic(self, tmp_path):
        masks = evaluation_masks(32, 2, seed=1)
        assert list(masks) == [bin_name(lo, hi) for lo, hi in HOLE_RATIO_BINS]
        for (lo, hi), (name, batch) in zip(HOLE_RATIO_BINS, masks.items()):
            ratios = 1 - batch.mean((1, 2, 3))
            assert batch.shape == (2, 1, 32, 32)
            assert ((ratios >= lo) & (ratios < hi)).all(), (name, ratios)
        again = evaluation_masks(32, 2, seed=1)
        assert all(torch.equal(masks[k], again[k]) for k in masks)

    def test_cached_once_and_read_back(self, tmp_path):
        first = evaluation_masks(32, 1, seed=2, cache_dir=tmp_path)
        files = list(tmp_path.glob("*.pt"))
        assert len(files) == 1 and not list(tmp_path.glob(".*.tmp"))
        mtime = files[0].stat().st_mtime_ns
        second = evaluation_masks(32, 1, seed=2, cache_dir=tmp_path)
        assert files[0].stat().st_mtime_ns == mtime
        assert all(torch.equal(first[k], second[k]) for k in first)

    def test_bin_names(self):
        assert bin_name(0.01, 0.1) == "hole_01_10" and bin_name(0.5, 0.6) == "hole_50_60"


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: IrregularStrokes("chunky"), "preset must be one of"),
        (lambda: Boxes(side=(0.5, 0.2)), "side must satisfy 0.0 <= min <= max <= 1.0"),
        (lambda: Boxes(hole_ratio=(0.3,)), "hole_ratio must be a pair"),
        (lambda: FreeFormStrokes(strokes=(3, 1)), "strokes must be ints with 0 <= min <= max"),
        (lambda: FreeFormStrokes(ramp_start=0), "ramp_start must be in (0, 1]"),
        (lambda: MixedMasks({}), "generators must name at least one"),
        (lambda: MixedMasks({"a": Boxes()}, probabilities={"b": 1}), "unknown generators ['b']"),
    ],
)
def test_bad_arguments(make, text):
    with pytest.raises(ValueError, match=re.escape(text)):
        make()


def test_bad_call_arguments():
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        Boxes()(1, 8, 8, generator=0)
    with pytest.raises(ValueError, match="height must be a positive int, got 0"):
        Boxes()(1, 0, 8, generator=torch.Generator())
