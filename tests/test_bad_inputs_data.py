"""Bad input at the data and file boundaries: image folders, mask files and generators, task=predict,
pretrained state_dicts and config overrides. Each fails with a typed one-line error that names the
argument or file; the odd-but-valid inputs after the catalogue load correctly instead.

The core ops (mask and image tensors) have their own catalogue in tests/test_bad_inputs.py.
"""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf.errors import MissingMandatoryValue
from PIL import Image
from torch import nn

from datamodules import ImageReadError, InpaintingDataModule, read_image
from masking.generators import Boxes, FolderMasks, FreeFormStrokes, IrregularStrokes, MixedMasks
from masking.generators.folder import load_mask_file
from masking.models import PConvUNet
from tasks.jobs.predict import run_predict
from tasks.modules.inference import inpaint
from tasks.runtime.checkpoints import load_inpainting_network, load_weights, state_dict_from_file
from tests.helpers.models import SMALL_UNET, inpaint_checkpoint
from tests.hydra_config import compose_config

# a small network that builds in milliseconds, so checkpoints can be written per test
SPEC = SMALL_UNET


# ---------------------------------------------------------------- files written by the tests


def rgb(path, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def corrupt(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 8)
    return path


def text_file(path):
    path.write_text("not an image, whatever the suffix says")
    return path


def truncated(path):
    """A real image cut in half: its header reads, its pixel data ends early."""
    data = rgb(path, 48, 48).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def grey_mask(path, h=16, w=16, hole=(slice(4, 8), slice(4, 8)), value=0):
    array = np.full((h, w), 255, np.uint8)
    array[hole] = value
    Image.fromarray(array).save(path)
    return path


def folder(p, *names, good=0):
    """``p/data`` with ``good`` readable images and the named bad or foreign files."""
    root = p / "data"
    root.mkdir(exist_ok=True)
    for i in range(good):
        rgb(root / f"good{i}.png", seed=i)
    for name in names:
        if name.endswith((".txt", ".csv")):
            (root / name).write_text("not an image")
        elif name.startswith("cut"):
            truncated(root / name)
        else:
            corrupt(root / name)
    return root


def datamodule(p, *names, good=0, **kwargs):
    dm = InpaintingDataModule(folder(p, *names, good=good), crop_size=16, **kwargs)
    dm.setup()
    return dm


NOT_GIVEN = "not given"  # stands for ckpt_path=null


def predict(
    p, *, ckpt=None, input_path=None, masks=None, output=None, holes_are_white=False, **options
):
    """task=predict on one 16×16 image and its mask, any argument replaced."""
    if ckpt is None:
        ckpt = inpaint_checkpoint(p / "net.ckpt")
    return run_predict(
        ckpt_path=None if ckpt is NOT_GIVEN else ckpt,
        input_path=rgb(p / "x.png", 16, 16) if input_path is None else input_path,
        masks_path=grey_mask(p / "m.png") if masks is None else masks,
        output_dir=p / "out" if output is None else output,
        holes_are_white=holes_are_white,
        device="cpu",
        run_dir=p / "run",
        **options,
    )


def folder_of(p, name):
    (p / name).mkdir(exist_ok=True)
    return p / name


def saved(path, obj):
    torch.save(obj, path)
    return path


def conv_bn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


STATE = conv_bn().state_dict()

# ---------------------------------------------------------------- the catalogue

CASES = [
    # (description, call(tmp_path), error type, text the message must contain; {tmp} is tmp_path)
    # image folders
    (
        "data folder does not exist",
        lambda p: InpaintingDataModule(p / "missing").setup(),
        ValueError,
        "root must be an existing folder of images, got '{tmp}/missing'",
    ),
    (
        "data root is a file",
        lambda p: InpaintingDataModule(rgb(p / "one.png")).setup(),
        ValueError,
        "root must be an existing folder of images, got '{tmp}/one.png'",
    ),
    ("empty data folder", lambda p: datamodule(p), ValueError, "root '{tmp}/data' holds no images"),
    (
        "data folder of non-image files only",
        lambda p: datamodule(p, "notes.txt", "labels.csv"),
        ValueError,
        "root '{tmp}/data' holds no images (.jpg",
    ),
    (
        "no image in the folder decodes",
        lambda p: datamodule(p, "broken.png", "empty.jpg"),
        ValueError,
        "none of the 2 image files under '{tmp}/data' could be read",
    ),
    (
        "strict: corrupt png",
        lambda p: datamodule(p, "broken.png", good=2, strict=True),
        ImageReadError,
        "broken.png is not a readable image",
    ),
    (
        "strict: truncated jpeg",
        lambda p: datamodule(p, "cut.jpg", good=2, strict=True),
        ImageReadError,
        "cut.jpg is not a readable image (OSError: image file is truncated",
    ),
    (
        "strict: truncated png",
        lambda p: datamodule(p, "cut.png", good=2, strict=True),
        ImageReadError,
        "set strict=false to skip such files",
    ),
    (
        "one readable image cannot be split",
        lambda p: datamodule(p, "broken.png", good=1),
        ValueError,
        "need at least 2 images to split into train and val, found 1",
    ),
    (
        "read_image of a missing file",
        lambda p: read_image(p / "gone.png"),
        ImageReadError,
        "gone.png is not a readable image (FileNotFoundError",
    ),
    (
        "read_image of a text file",
        lambda p: read_image(text_file(p / "notes.png")),
        ImageReadError,
        "notes.png is not a readable image (UnidentifiedImageError",
    ),
    # datamodule arguments
    (
        "max_val_crops zero",
        lambda p: InpaintingDataModule(max_val_crops=0),
        ValueError,
        "max_val_crops must be an int >= 1, got 0",
    ),
    (
        "batch larger than an epoch",
        lambda p: InpaintingDataModule(batch_size=16, samples_per_epoch=8),
        ValueError,
        "batch_size must be <= samples_per_epoch (8), got 16",
    ),
    (
        "val_fraction one",
        lambda p: InpaintingDataModule(val_fraction=1),
        ValueError,
        "val_fraction must be a number in (0, 1), got 1",
    ),
    (
        "val_fraction a string",
        lambda p: InpaintingDataModule(val_fraction="0.2"),
        ValueError,
        "val_fraction must be a number in (0, 1), got '0.2'",
    ),
    (
        "crop_size a float",
        lambda p: InpaintingDataModule(crop_size=64.0),
        ValueError,
        "crop_size must be an int >= 8, got 64.0",
    ),
    (
        "strict a string",
        lambda p: InpaintingDataModule(strict="false"),
        TypeError,
        "strict must be a bool, got 'false'",
    ),
    # mask files
    (
        "mask file missing",
        lambda p: load_mask_file(p / "gone.png"),
        ValueError,
        "mask file {tmp}/gone.png does not exist",
    ),
    (
        "mask file corrupt",
        lambda p: load_mask_file(corrupt(p / "m.png")),
        ValueError,
        "m.png is not a readable image",
    ),
    (
        "mask file truncated",
        lambda p: load_mask_file(truncated(p / "m.png")),
        ValueError,
        "m.png is not a readable image (OSError: image file is truncated",
    ),
    (
        "mask threshold above one",
        lambda p: load_mask_file(grey_mask(p / "m.png"), threshold=1.5),
        ValueError,
        "threshold must be a grey level in [0, 1), got 1.5",
    ),
    (
        "mask threshold of 255-scale",
        lambda p: FolderMasks(folder(p, good=1), threshold=128),
        ValueError,
        "threshold must be a grey level in [0, 1), got 128",
    ),
    (
        "holes_are_white a string",
        lambda p: load_mask_file(grey_mask(p / "m.png"), holes_are_white="false"),
        TypeError,
        "holes_are_white must be a bool, got 'false'",
    ),
    (
        "mask folder does not exist",
        lambda p: FolderMasks(p / "missing"),
        ValueError,
        "root must be an existing folder of mask images, got '{tmp}/missing'",
    ),
    (
        "mask folder of non-image files only",
        lambda p: FolderMasks(folder(p, "notes.txt")),
        ValueError,
        "root '{tmp}/data' holds no mask images",
    ),
    (
        "mask of another size than its image (predict)",
        lambda p: predict(p, masks=grey_mask(p / "m.png", 12, 16)),
        ValueError,
        "m.png is 16×12 px but image",
    ),
    # mask generators
    (
        "negative box side",
        lambda p: Boxes(side=(-0.1, 0.3)),
        ValueError,
        "side must satisfy 0.0 <= min <= max <= 1.0, got (-0.1, 0.3)",
    ),
    (
        "negative box count",
        lambda p: Boxes(boxes=(-1, 2)),
        ValueError,
        "boxes must be ints with 0 <= min <= max, got (-1, 2)",
    ),
    (
        "negative stroke width",
        lambda p: FreeFormStrokes(width=(-5.0, 10.0)),
        ValueError,
        "width must satisfy 0 < min <= max < inf, got (-5.0, 10.0)",
    ),
    (
        "infinite stroke width",
        lambda p: FreeFormStrokes(width=(5.0, float("inf"))),
        ValueError,
        "width must satisfy 0 < min <= max < inf",
    ),
    (
        "negative max_width",
        lambda p: IrregularStrokes("thin", max_width=-1),
        ValueError,
        "max_width must be a finite positive number, got -1",
    ),
    (
        "NaN max_length",
        lambda p: IrregularStrokes("thin", max_length=float("nan")),
        ValueError,
        "max_length must be a finite positive number, got nan",
    ),
    (
        "mean_angle not a number",
        lambda p: FreeFormStrokes(mean_angle="wide"),
        ValueError,
        "mean_angle must be a finite number, got 'wide'",
    ),
    (
        "hole_ratio reversed",
        lambda p: Boxes(hole_ratio=(0.6, 0.2)),
        ValueError,
        "hole_ratio must satisfy 0.0 <= min <= max <= 1.0, got (0.6, 0.2)",
    ),
    (
        "hole_ratio above one",
        lambda p: IrregularStrokes(hole_ratio=(0.2, 1.5)),
        ValueError,
        "hole_ratio must satisfy 0.0 <= min <= max <= 1.0, got (0.2, 1.5)",
    ),
    (
        "hole_ratio below zero",
        lambda p: FreeFormStrokes(hole_ratio=(-0.1, 0.5)),
        ValueError,
        "hole_ratio must satisfy 0.0 <= min <= max <= 1.0, got (-0.1, 0.5)",
    ),
    (
        "hole_ratio a number",
        lambda p: Boxes(hole_ratio=0.3),
        ValueError,
        "hole_ratio must be a pair (min, max), got 0.3",
    ),
    (
        "negative probability",
        lambda p: MixedMasks({"a": Boxes(), "b": Boxes()}, probabilities={"a": 1, "b": -0.5}),
        ValueError,
        "probabilities['b'] must be a finite number >= 0, got -0.5",
    ),
    (
        "NaN probability",
        lambda p: MixedMasks({"a": Boxes(), "b": Boxes()}, probabilities={"a": float("nan")}),
        ValueError,
        "probabilities['a'] must be a finite number >= 0, got nan",
    ),
    (
        "probabilities summing to zero",
        lambda p: MixedMasks({"a": Boxes(), "b": Boxes()}, probabilities={"a": 0, "b": 0}),
        ValueError,
        "probabilities must have a positive sum, got {'a': 0, 'b': 0}",
    ),
    (
        "probabilities as a list",
        lambda p: MixedMasks({"a": Boxes()}, probabilities=[1.0]),
        TypeError,
        "probabilities must be a mapping {name: weight}, got list",
    ),
    (
        "generators as a list",
        lambda p: MixedMasks([Boxes()]),
        TypeError,
        "generators must be a mapping {name: MaskGenerator}, got list",
    ),
    (
        "numpy generator",
        lambda p: Boxes()(1, 8, 8, generator=np.random.default_rng(0)),
        TypeError,
        "generator must be a torch.Generator (seeded by the caller), got Generator",
    ),
    (
        "no generator",
        lambda p: MixedMasks({"a": Boxes()})(1, 8, 8, generator=None),
        TypeError,
        "generator must be a torch.Generator (seeded by the caller), got NoneType",
    ),
    (
        "ramp_start a bool",
        lambda p: Boxes(ramp_start=True),
        ValueError,
        "ramp_start must be in (0, 1], got True",
    ),
    # task=predict
    (
        "plain classifier state_dict as ckpt_path",
        lambda p: predict(p, ckpt=saved(p / "cls.pt", conv_bn().state_dict())),
        ValueError,
        "ckpt_path '{tmp}/cls.pt' is not an inpainting checkpoint of this project",
    ),
    (
        "a task=prune style checkpoint as ckpt_path",
        lambda p: predict(p, ckpt=saved(p / "p.ckpt", {"state_dict": STATE, "epoch": 3})),
        ValueError,
        "use a checkpoint written by task=inpaint",
    ),
    (
        "a text file as ckpt_path",
        lambda p: load_inpainting_network(text_file(p / "notes.ckpt")),
        ValueError,
        "ckpt_path '{tmp}/notes.ckpt' is not a readable checkpoint of tensors (UnpicklingError)",
    ),
    (
        "checkpoint of another architecture",
        lambda p: load_inpainting_network(
            inpaint_checkpoint(p / "n.ckpt", spec={**SPEC, "base_width": 4}, weights_spec=SPEC)
        ),
        ValueError,
        "ckpt_path '{tmp}/n.ckpt': weights do not fit masking.models.PConvUNet",
    ),
    (
        "checkpoint whose net_spec names no class",
        lambda p: load_inpainting_network(
            inpaint_checkpoint(p / "n.ckpt", spec={"_target_": "masking.Nope"})
        ),
        ValueError,
        "ckpt_path '{tmp}/n.ckpt': its net_spec: _target_ 'masking.Nope' is not allowed",
    ),
    (
        "checkpoint without weights",
        lambda p: load_inpainting_network(saved(p / "n.ckpt", {"net_spec": SPEC})),
        ValueError,
        "ckpt_path '{tmp}/n.ckpt' is a damaged inpainting checkpoint",
    ),
    (
        "ckpt_path missing",
        lambda p: load_inpainting_network(p / "gone.ckpt"),
        FileNotFoundError,
        "ckpt_path '{tmp}/gone.ckpt' is not a file",
    ),
    (
        "ckpt_path not given",
        lambda p: predict(p, ckpt=NOT_GIVEN),
        ValueError,
        "ckpt_path is required for task=predict",
    ),
    (
        "input missing",
        lambda p: predict(p, input_path=p / "gone.png"),
        ValueError,
        "input '{tmp}/gone.png' does not exist",
    ),
    (
        "input folder without images",
        lambda p: predict(p, input_path=folder(p, "notes.txt")),
        ValueError,
        "input '{tmp}/data' holds no images",
    ),
    (
        "input image unreadable",
        lambda p: predict(p, input_path=corrupt(p / "x.png")),
        ImageReadError,
        "x.png is not a readable image",
    ),
    (
        "masks missing",
        lambda p: predict(p, masks=p / "nomasks"),
        ValueError,
        "masks '{tmp}/nomasks' is neither a file nor a folder",
    ),
    (
        "output is a file",
        lambda p: predict(p, output=rgb(p / "out.png")),
        NotADirectoryError,
        "output '{tmp}/out.png' is a file, expected a folder",
    ),
    (
        "output inside a file",
        lambda p: predict(p, output=rgb(p / "out.png") / "sub"),
        NotADirectoryError,
        "output folder '{tmp}/out.png/sub' cannot be created (Not a directory)",
    ),
    (
        "output inside the input folder",
        lambda p: predict(p, input_path=folder(p, good=1), output=p / "data" / "inpainted"),
        ValueError,
        "output '{tmp}/data/inpainted' lies inside input '{tmp}/data': choose a folder outside it",
    ),
    (
        "output is the input folder",
        lambda p: predict(p, input_path=folder(p, good=1), output=p / "data"),
        ValueError,
        "(overwrite=true writes there anyway)",
    ),
    (
        "output holds a result already",
        lambda p: predict(p, output=rgb(folder_of(p, "out") / "x.png").parent),
        FileExistsError,
        "output '{tmp}/out' already holds 1 of the results, e.g. x.png: choose a new folder",
    ),
    (
        "two masks for one image",
        lambda p: predict(
            p, masks=grey_mask(grey_mask(folder_of(p, "m") / "x.png").with_suffix(".jpg")).parent
        ),
        ValueError,
        "masks '{tmp}/m' holds 2 masks for x.png (x.jpg, x.png); keep one",
    ),
    (
        "tile not larger than its overlap",
        lambda p: inpaint(
            PConvUNet(depth=3, base_width=8),
            torch.rand(3, 8, 8),
            torch.ones(8, 8),
            tile=8,
            overlap=8,
        ),
        ValueError,
        "tile must be >= 1 and overlap in [0, tile), got 8 and 8",
    ),
    # pretrained state_dicts (task=prune)
    (
        "state_dict missing a key",
        lambda p: load_weights(
            conv_bn(), {k: v for k, v in STATE.items() if k != "0.bias"}, "w.pt"
        ),
        ValueError,
        "task.pretrained: w.pt does not fit net Sequential (1 key problems, e.g. missing 0.bias)",
    ),
    (
        "state_dict with an extra key",
        lambda p: load_weights(conv_bn(), {**STATE, "head.weight": torch.ones(2)}, "w.pt"),
        ValueError,
        "e.g. unexpected head.weight",
    ),
    (
        "state_dict of another width",
        lambda p: load_weights(conv_bn(), {**STATE, "0.weight": torch.ones(5, 3, 3, 3)}, "w.pt"),
        ValueError,
        "0.weight is (5, 3, 3, 3) in the file but (4, 3, 3, 3) in the net",
    ),
    (
        "state_dict value not a tensor",
        lambda p: load_weights(conv_bn(), {**STATE, "0.bias": [0.0] * 4}, "w.pt"),
        ValueError,
        "0.bias holds list, not a tensor",
    ),
    (
        "pretrained file missing",
        lambda p: state_dict_from_file(p / "gone.pt"),
        FileNotFoundError,
        "task.pretrained: no file at {tmp}/gone.pt",
    ),
    (
        "pretrained file is text",
        lambda p: state_dict_from_file(text_file(p / "w.pt")),
        ValueError,
        "w.pt is not a readable torch file of tensors (UnpicklingError)",
    ),
    (
        "pretrained file is a pickled module",
        lambda p: state_dict_from_file(saved(p / "w.pt", conv_bn())),
        ValueError,
        "save net.state_dict(), not the module",
    ),
    (
        "pretrained file holds a list",
        lambda p: state_dict_from_file(saved(p / "w.pt", [torch.ones(2)])),
        ValueError,
        "w.pt holds no state_dict",
    ),
    (
        "pretrained file is an inpainting checkpoint",
        lambda p: state_dict_from_file(inpaint_checkpoint(p / "w.pt")),
        ValueError,
        "is an inpainting checkpoint (task=inpaint); prune it with task=prune_inpaint",
    ),
]


@pytest.mark.parametrize(("description", "call", "error", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(tmp_path, description, call, error, text):
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    assert text.replace("{tmp}", str(tmp_path)) in message, message
    assert "\n" not in message


# Hydra's own messages run over several lines; the first names the misspelt key or option.
CONFIG_TYPOS = [
    (["data.crop_sizee=64"], ConfigCompositionException, "Could not override 'data.crop_sizee'"),
    (["crop_size=64"], ConfigCompositionException, "Could not override 'crop_size'"),
    (["mask.hole_ratioo=[0.1,0.2]"], ConfigCompositionException, "'mask.hole_ratioo'"),
    (["data=photoss"], MissingConfigException, "Could not find 'data/photoss'"),
]


@pytest.mark.parametrize(("overrides", "error", "text"), CONFIG_TYPOS, ids=lambda v: str(v))
def test_config_typo_fails_at_composition(tmp_path, overrides, error, text):
    with pytest.raises(error) as info:
        compose_config(tmp_path, overrides)
    assert text in str(info.value).splitlines()[0]


@pytest.mark.parametrize("group", ["data", "mask"])
def test_folder_options_need_their_root(tmp_path, group):
    """data=folder once inherited the photos' ``root: null`` (a ``???`` merged over a value keeps
    the value), so a forgotten data.root trained on the bundled photos without a word."""
    cfg = compose_config(tmp_path, [f"{group}=folder"])
    with pytest.raises(MissingMandatoryValue) as info:
        instantiate(cfg[group])
    assert f"Missing mandatory value: {group}.root" in str(info.value).splitlines()[0]


# ---------------------------------------------------------------- odd inputs that are not errors


def _save(array, mode=None, **kwargs):
    def write(path):
        Image.fromarray(array, mode=mode).save(path, **kwargs)
        return path

    return write


def _palette(path):
    image = Image.new("P", (4, 3))
    image.putpalette([255, 0, 0, 0, 128, 255] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.save(path)
    return path


def _bilevel(path):
    Image.new("1", (4, 3), 1).save(path)
    return path


@pytest.mark.parametrize(
    ("name", "write", "expected"),
    [
        ("grey", _save(np.full((3, 4), 51, np.uint8)), [0.2, 0.2, 0.2]),
        ("grey_alpha", _save(np.full((3, 4, 2), 51, np.uint8)), [0.2, 0.2, 0.2]),
        # a fully transparent pixel keeps its colour: alpha is dropped, not composited
        ("rgba", _save(np.array([[[255, 102, 51, 0]] * 4] * 3, np.uint8)), [1.0, 0.4, 0.2]),
        ("palette", _palette, [0.0, 128 / 255, 1.0]),
        ("bilevel", _bilevel, [1.0, 1.0, 1.0]),
        ("16_bit", _save(np.full((3, 4), 13107 * 4, np.uint16)), [0.8, 0.8, 0.8]),
        # a dark 16-bit image (every value <= 255) is still on the 0..65535 scale
        ("16_bit_dark", _save(np.full((3, 4), 200, np.uint16)), [200 / 65535] * 3),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_image_modes_load_as_rgb_floats(tmp_path, name, write, expected):
    image = read_image(write(tmp_path / f"{name}.png"))
    assert image.shape == (3, 3, 4) and image.dtype == torch.float32
    torch.testing.assert_close(image[:, 0, 0], torch.tensor(expected), atol=1e-6, rtol=0)


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((10, 30, 3), np.uint8)
    array[:5] = (255, 0, 0)  # red top half, blue bottom half as stored
    array[5:] = (0, 0, 255)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    stored = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB"), np.float32) / 255
    loaded = read_image(tmp_path / "rotated.jpg")
    assert loaded.shape == (3, 30, 10)
    expected = torch.from_numpy(np.rot90(stored, k=-1).copy()).permute(2, 0, 1)
    torch.testing.assert_close(loaded, expected, atol=0, rtol=0)
    assert loaded[0, :, 7:].mean() > 0.9 and loaded[2, :, :3].mean() > 0.9  # red now on the right


def test_bad_files_are_skipped_with_a_count(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datamodules.images"):
        dm = datamodule(
            tmp_path, "broken.png", "cut.jpg", "cut.png", "notes.txt", good=3, batch_size=2
        )
    # the .txt file is not an image file at all: ignored, not counted
    assert "skipped 3 unreadable image file(s) of 6: broken.png, cut.jpg, cut.png" in caplog.text
    assert sorted(p.name for p in dm.train_items + dm.val_items) == [
        "good0.png",
        "good1.png",
        "good2.png",
    ]
    images, _ = next(iter(dm.train_dataloader()))  # the skipped files are never read
    assert images.shape == (2, 3, 18, 18)


def test_images_smaller_than_the_crop_are_upscaled(tmp_path):
    for i, shade in enumerate((0, 128, 255)):
        Image.fromarray(np.full((10, 12, 3), shade, np.uint8)).save(tmp_path / f"{i}.png")
    dm = InpaintingDataModule(tmp_path, crop_size=16, batch_size=2, samples_per_epoch=4)
    dm.setup()
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 18, 18)  # the training margin: crop_size + 1/8
    shades = {round(float(x.mean()) * 255) for x in images}
    assert shades <= {0, 128, 255}
    assert all(float(x.std()) < 1e-6 for x in images)  # upscaled, not padded
    assert next(iter(dm.val_dataloader())).shape[1:] == (3, 16, 16)


def test_mask_semantics_grey_levels_and_holes_are_white(tmp_path):
    path = grey_mask(tmp_path / "m.png", hole=(slice(0, 2), slice(0, 16)), value=100)
    holes = load_mask_file(path)  # white = valid; 100/255 is below the 0.5 threshold: a hole
    assert holes.dtype == torch.bool and holes.shape == (16, 16)
    assert holes[:2].all() and not holes[2:].any()
    assert not load_mask_file(path, threshold=0.3).any()  # 100/255 > 0.3: white, so valid
    assert torch.equal(load_mask_file(path, holes_are_white=True), ~holes)


def test_folder_masks_of_another_size_are_stretched_and_stay_binary(tmp_path):
    grey_mask(tmp_path / "m.png", 8, 8, hole=(slice(0, 4), slice(0, 8)))
    masks = FolderMasks(tmp_path)(2, 32, 20, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (2, 1, 32, 20)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert (masks[:, :, :16] == 0).all() and (masks[:, :, 16:] == 1).all()


def test_probabilities_are_weights_and_zero_never_draws():
    full = Boxes(boxes=(1, 1), side=(1.0, 1.0))  # one box over the whole image
    none = Boxes(boxes=(0, 0))
    mixed = MixedMasks({"full": full, "none": none}, probabilities={"full": 3, "none": 1})
    torch.testing.assert_close(mixed.weights, torch.tensor([0.75, 0.25]))
    only_none = MixedMasks({"full": full, "none": none}, probabilities={"none": 2})
    assert (only_none(8, 8, 8, generator=torch.Generator().manual_seed(0)) == 1).all()


def test_predict_reads_odd_inputs_and_keeps_known_pixels(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "x.png")
    mask = grey_mask(tmp_path / "m.png", value=90)  # grey, not black: still a hole
    assert predict(tmp_path, input_path=tmp_path / "x.png", masks=mask) == {"predict/images": 1.0}
    out = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    assert out.shape == (16, 16, 3)
    valid = np.ones((16, 16), bool)
    valid[4:8, 4:8] = False
    assert np.array_equal(out[valid], rgba[..., :3][valid])


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions; see 'output is a file'")
def test_predict_into_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match=r"output folder '.*locked' is not writable"):
            predict(tmp_path, output=locked)
        with pytest.raises(PermissionError, match=r"output folder '.*sub' cannot be created"):
            predict(tmp_path, output=locked / "sub")
    finally:
        locked.chmod(0o700)


ROOT_LOCKED = Path("/proc/1")  # a procfs folder: not writable even for root


@pytest.mark.skipif(
    os.geteuid() != 0 or not ROOT_LOCKED.is_dir() or os.access(ROOT_LOCKED, os.W_OK),
    reason="the root variant needs Linux procfs; other users run the chmod test above",
)
def test_predict_into_a_folder_that_root_cannot_write(tmp_path):
    with pytest.raises(PermissionError, match=r"output folder '/proc/1' is not writable"):
        predict(tmp_path, output=ROOT_LOCKED)
    with pytest.raises(OSError, match=r"output folder '/proc/1/out' cannot be created"):
        predict(tmp_path, output=ROOT_LOCKED / "out")


def test_prefixed_lightning_state_dict_loads(tmp_path):
    source = conv_bn()
    nn.init.normal_(source[0].weight)
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    path = saved(tmp_path / "w.ckpt", {"state_dict": state, "epoch": 3})
    net = conv_bn()
    load_weights(net, state_dict_from_file(path), str(path))
    assert torch.equal(net[0].weight, source[0].weight)


# ---------------------------------------------------------------- what predict writes, and where


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()
    }


def test_predict_gives_images_sharing_a_stem_one_output_each(tmp_path):
    photos = folder_of(tmp_path, "photos")
    rgb(photos / "a.png", 16, 16, seed=1)
    rgb(photos / "a.jpg", 16, 16, seed=2)
    rgb(folder_of(photos, "sub") / "a.png", 16, 16, seed=3)
    before = snapshot(photos)
    assert predict(tmp_path, input_path=photos) == {"predict/images": 3.0}
    written = sorted(
        str(f.relative_to(tmp_path / "out")) for f in (tmp_path / "out").rglob("*.png")
    )
    assert written == ["a_jpg.png", "a_png.png", "sub/a.png"]
    assert snapshot(photos) == before
    # each output is its own image's: the known pixels match that input
    valid = np.ones((16, 16), bool)
    valid[4:8, 4:8] = False
    for out, source in [("a_png.png", "a.png"), ("sub/a.png", "sub/a.png")]:
        got = np.asarray(Image.open(tmp_path / "out" / out))
        assert np.array_equal(got[valid], np.asarray(Image.open(photos / source))[valid])


def test_predict_matches_masks_by_relative_path_before_stem(tmp_path):
    photos = folder_of(tmp_path, "photos")
    rgb(photos / "a.png", 16, 16)
    rgb(folder_of(photos, "sub") / "a.png", 16, 16)
    masks = folder_of(tmp_path, "masks")
    grey_mask(masks / "a.png", hole=(slice(0, 4), slice(0, 4)))
    grey_mask(folder_of(masks, "sub") / "a.png", hole=(slice(8, 16), slice(8, 16)))
    predict(tmp_path, input_path=photos, masks=masks)
    top = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    sub = np.asarray(Image.open(tmp_path / "out" / "sub" / "a.png"))
    source = np.asarray(Image.open(photos / "sub" / "a.png"))
    assert np.array_equal(top[8:, 8:], np.asarray(Image.open(photos / "a.png"))[8:, 8:])
    assert np.array_equal(sub[:8, :8], source[:8, :8])  # its own mask: the top-left is known
    assert not np.array_equal(sub[8:, 8:], source[8:, 8:])  # and the bottom-right filled


def test_predict_keeps_the_input_and_existing_outputs_byte_for_byte(tmp_path):
    photos = folder(tmp_path, good=2)
    mask = grey_mask(tmp_path / "m.png", 24, 32)
    before = snapshot(photos)
    with pytest.raises(ValueError, match="lies inside input"):
        predict(tmp_path, input_path=photos, masks=mask, output=photos)
    assert snapshot(photos) == before
    out = folder_of(tmp_path, "out")
    rgb(out / "good0.png", seed=9)
    kept = snapshot(out)
    with pytest.raises(FileExistsError, match="already holds 1 of the results"):
        predict(tmp_path, input_path=photos, masks=mask, output=out)
    assert snapshot(out) == kept  # not even the other image was written
    predict(tmp_path, input_path=photos, masks=mask, output=out, overwrite=True)
    assert snapshot(out)["good0.png"] != kept["good0.png"] and (out / "good1.png").is_file()
    assert snapshot(photos) == before


def test_a_mask_of_zeros_and_ones_reads_one_as_valid(tmp_path):
    array = np.ones((16, 16), np.uint8)  # a bool mask saved as 8-bit: 1 = valid
    array[4:8, 4:8] = 0
    Image.fromarray(array).save(tmp_path / "m.png")
    with pytest.warns(UserWarning, match=r"m.png holds only the values 0 and 1: read 1 as white"):
        holes = load_mask_file(tmp_path / "m.png")
    assert holes.sum() == 16 and holes[4:8, 4:8].all()


def test_predict_warns_about_a_mask_without_valid_pixels(tmp_path, caplog):
    black = grey_mask(tmp_path / "m.png", hole=(slice(None), slice(None)))
    with caplog.at_level(logging.WARNING, logger="tasks.jobs.predict"):
        predict(tmp_path, masks=black)
    (record,) = [r for r in caplog.records if "has no valid pixel" in r.getMessage()]
    assert "is the mask inverted?" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_predict_does_not_inpaint_the_masks_of_a_masks_folder_inside_its_input(tmp_path):
    photos = folder_of(tmp_path, "photos")
    rgb(photos / "a.png", 16, 16)
    grey_mask(folder_of(photos, "masks") / "a.png")
    assert predict(tmp_path, input_path=photos, masks=photos / "masks") == {"predict/images": 1.0}
    assert [p.name for p in (tmp_path / "out").rglob("*.png")] == ["a.png"]
