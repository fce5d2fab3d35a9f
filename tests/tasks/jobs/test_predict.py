"""task=predict: files in, one PNG per input out, known pixels bit-identical, clear errors."""

import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from masking.io import write_atomic
from tasks import run
from tests.helpers.jobs import INPAINT_FAST
from tests.hydra_config import compose_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    run(compose_config(out, INPAINT_FAST))
    return out / "checkpoints" / "last.ckpt"


def photo(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def mask_file(path, h, w, *, white_valid=True):
    m = np.full((h, w), 255, np.uint8)
    m[h // 4 : h // 2, w // 3 : w // 2] = 0
    Image.fromarray(m if white_valid else 255 - m).save(path)
    return path


def predict(tmp_path, checkpoint, input_path, masks, *extra):
    cfg = compose_config(
        tmp_path / "run",
        [
            "task=predict",
            f"ckpt_path={checkpoint}",
            f"input={input_path}",
            f"masks={masks}",
            f"output={tmp_path / 'out'}",
            *extra,
        ],
    )
    return run(cfg)


def test_folder_in_folder_out(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    sizes = {"a": (37, 45), "b": (64, 50)}  # not multiples of the network's 8
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        photo(tmp_path / "in" / f"{stem}.jpg", h, w, seed=i)
        mask_file(tmp_path / "masks" / f"{stem}.png", h, w)
    assert predict(tmp_path, checkpoint, tmp_path / "in", tmp_path / "masks") == 2
    for stem, (h, w) in sizes.items():
        original = np.asarray(Image.open(tmp_path / "in" / f"{stem}.jpg").convert("RGB"))
        result = np.asarray(Image.open(tmp_path / "out" / f"{stem}.png"))
        valid = np.asarray(Image.open(tmp_path / "masks" / f"{stem}.png")) > 127
        assert result.shape == (h, w, 3)
        assert np.array_equal(result[valid], original[valid])
        assert (result[~valid] != original[~valid]).any()


def test_single_file_and_holes_are_white(tmp_path, checkpoint):
    image = photo(tmp_path / "one.png", 40, 40)
    white_holes = mask_file(tmp_path / "m.png", 40, 40, white_valid=False)
    predict(tmp_path, checkpoint, image, white_holes, "holes_are_white=true")
    result = np.asarray(Image.open(tmp_path / "out" / "one.png"))
    valid = np.asarray(Image.open(white_holes)) < 128
    assert np.array_equal(result[valid], np.asarray(Image.open(image))[valid])


@pytest.mark.parametrize(
    ("setup", "error", "text"),
    [
        (
            lambda p: (photo(p / "x.png", 40, 40), mask_file(p / "m.png", 30, 40)),
            ValueError,
            "mask {m} is 40×30 px but image {x} is 40×40 px",
        ),
        (
            lambda p: (photo(p / "x.png", 40, 40), p / "nomasks"),
            ValueError,
            "masks '{m}' is neither a file nor a folder",
        ),
    ],
)
def test_mismatches_are_clear_errors(tmp_path, checkpoint, setup, error, text):
    image, masks = setup(tmp_path)
    message = text.format(m=masks, x=image)
    with pytest.raises(error, match=re.escape(message)):
        predict(tmp_path, checkpoint, image, masks)


def test_missing_mask_for_an_image(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    photo(tmp_path / "in" / "a.png", 16, 16)
    photo(tmp_path / "in" / "b.png", 16, 16)
    mask_file(tmp_path / "masks" / "a.png", 16, 16)
    with pytest.raises(ValueError, match=r"no mask in .* for 1 image\(s\), e\.g\. b\.png"):
        predict(tmp_path, checkpoint, tmp_path / "in", tmp_path / "masks")


def test_checkpoint_of_something_else(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    image = photo(tmp_path / "x.png", 16, 16)
    with pytest.raises(ValueError, match="is not an inpainting checkpoint of this project"):
        predict(tmp_path, tmp_path / "other.ckpt", image, mask_file(tmp_path / "m.png", 16, 16))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_output(tmp_path, checkpoint):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    image = photo(tmp_path / "x.png", 16, 16)
    cfg = compose_config(
        tmp_path / "run",
        [
            "task=predict",
            f"ckpt_path={checkpoint}",
            f"input={image}",
            f"masks={mask_file(tmp_path / 'm.png', 16, 16)}",
            f"output={locked}",
        ],
    )
    with pytest.raises(PermissionError, match="is not writable"):
        run(cfg)


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
