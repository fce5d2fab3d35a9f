"""The inpainting job through run(cfg): every option composes, each layer trains, resume is exact."""

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from tasks import run
from tests.hydra_config import compose_config, options

FAST = [
    "task=inpaint",
    "logger=none",
    "trainer.max_epochs=1",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.samples_per_epoch=8",
    "data.max_val_crops=8",
    "task.eval_masks_per_bin=2",
    "net.depth=3",
    "net.base_width=8",
]

NEEDS_ROOT = {("data", "folder"), ("mask", "folder")}


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in ("net", "layer", "mask", "data", "trainer", "logger", "task", "experiment")
        for o in options(g)
    ],
)
def test_every_option_composes_and_instantiates(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if (group, option) in NEEDS_ROOT:
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "a.png")
        overrides.append(f"{group}.root={tmp_path}")
    cfg = compose_config(tmp_path, overrides)
    if group == "trainer" and cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        return  # composes; instantiating needs the GPU it names
    if group in ("net", "mask", "data", "logger", "trainer") and cfg[group].get("_target_"):
        assert instantiate(cfg[group]) is not None


@pytest.mark.parametrize("layer", ["partial", "gated", "vanilla"])
def test_each_layer_trains_and_writes_its_run(tmp_path, layer):
    value = run(compose_config(tmp_path, [*FAST, f"layer={layer}"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert value == metrics["val/hole_l1"] and metrics["train/steps"] == 2
    assert {"val/psnr", "val/ssim", "val/hole_l1/hole_50_60"} <= set(metrics)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "samples").glob("epoch_*.png"))


def test_deepfill_gan_trains(tmp_path):
    overrides = [o for o in FAST if not o.startswith("net.")] + [
        "experiment=deepfill",
        "net.width=4",
        "task.gan.discriminator.width=8",
    ]
    run(compose_config(tmp_path, overrides))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"train/d_loss", "train/g_adv"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k != "val/psnr")


def test_resume_continues_from_the_saved_step(tmp_path):
    straight = run(compose_config(tmp_path / "a", [*FAST, "trainer.max_epochs=2"]))
    run(compose_config(tmp_path / "b", FAST))
    ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 2
    resumed = run(
        compose_config(tmp_path / "c", [*FAST, "trainer.max_epochs=2", f"ckpt_path={ckpt}"])
    )
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["train/steps"] == 4
    assert resumed == pytest.approx(straight, rel=1e-5)
