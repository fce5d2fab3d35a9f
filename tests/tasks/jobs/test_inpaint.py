"""The inpainting job through run(cfg): every option composes, each layer trains, resume is exact."""

import json

import pytest
import torch

from tasks import run
from tasks.modules import InpaintingModule
from tests.helpers.jobs import INPAINT_FAST
from tests.hydra_config import compose_config


@pytest.mark.parametrize("layer", ["partial", "gated", "vanilla"])
def test_each_layer_trains_and_writes_its_run(tmp_path, layer):
    value = run(compose_config(tmp_path, [*INPAINT_FAST, f"layer={layer}"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert value == metrics["val/hole_l1"] and metrics["train/steps"] == 2
    assert {"val/psnr", "val/ssim", "val/hole_l1/hole_50_60"} <= set(metrics)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "samples").glob("epoch_*.png"))
    assert metrics["val/colour_error"] >= 0


def test_the_default_run_validates_on_every_held_out_photo_coarse_to_fine(tmp_path):
    from datamodules import HELD_OUT_PHOTOS, load_bundled_photo, read_image
    from tasks.runtime.checkpoints import load_inpainting_network

    run(compose_config(tmp_path, INPAINT_FAST))
    # the checkpoint records the training crop, so task=predict fills large images coarse to fine
    assert load_inpainting_network(tmp_path / "checkpoints" / "last.ckpt").coarse_side == 32
    (grid,) = (tmp_path / "samples").glob("epoch_*.png")
    grid = read_image(grid)
    size = 64  # INPAINT_FAST's data.val_size
    targets = grid[:, 3 * size :].split(size, dim=2)  # the last row: the targets
    photos = [load_bundled_photo(n, size=size) for n in HELD_OUT_PHOTOS]
    shown = {min(range(3), key=lambda i: (t - photos[i]).abs().mean()) for t in targets}
    assert len(targets) == 8 and shown == {0, 1, 2}  # the samples span the held-out photos


def test_last_checkpoint_is_the_final_epoch_even_when_validation_got_no_better(tmp_path):
    # lr 0: every validation scores the same, so the best checkpoint stays the first one; last.ckpt
    # must still be the end of training (the model benchmarks and task=predict take, and where a
    # resumed run continues), not a copy of the best
    run(compose_config(tmp_path, [*INPAINT_FAST, "trainer.max_epochs=3", "task.optimizer.lr=0"]))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 6
    (best,) = (tmp_path / "checkpoints").glob("best-*.ckpt")
    assert best.name == "best-epoch=000.ckpt"


def test_deepfill_gan_trains(tmp_path):
    overrides = [o for o in INPAINT_FAST if not o.startswith("net.")] + [
        "experiment=deepfill",
        "net.width=4",
        "task.gan.discriminator.width=8",
    ]
    run(compose_config(tmp_path, overrides))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"train/d_loss", "train/g_adv"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k != "val/psnr")


def test_resume_continues_from_the_saved_step(tmp_path, monkeypatch):
    # the resumed run must see exactly the images and masks the uninterrupted run saw in its second
    # epoch: data keys, crop/flip parameters and the mask generator all come back from the checkpoint
    seen = []
    draw = InpaintingModule.training_masks

    def recording(self, images, keys=None):
        masks = draw(self, images, keys)
        seen.append((self.global_step, float(images.sum()), float(masks.sum())))
        return masks

    monkeypatch.setattr(InpaintingModule, "training_masks", recording)
    # stopping after 1 of 2 epochs by asking for 1 epoch would shorten a cosine schedule, whose
    # length comes from max_epochs; an interrupted run keeps its schedule, so use a constant lr
    fast = [*INPAINT_FAST, "task.scheduler=null"]
    straight = run(compose_config(tmp_path / "a", [*fast, "trainer.max_epochs=2"]))
    straight_inputs, seen[:] = list(seen), []
    run(compose_config(tmp_path / "b", fast))
    ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 2
    seen.clear()
    resumed = run(
        compose_config(tmp_path / "c", [*fast, "trainer.max_epochs=2", f"ckpt_path={ckpt}"])
    )
    assert seen == straight_inputs[2:]
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["train/steps"] == 4
    # same inputs and state; the metric itself may differ by floating-point scheduling noise
    assert resumed == pytest.approx(straight, rel=1e-2)


def test_bf16_mixed_precision_trains_without_nan(tmp_path):
    run(
        compose_config(
            tmp_path, [*INPAINT_FAST, "trainer.precision=bf16-mixed", "trainer.max_epochs=2"]
        )
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k != "val/psnr")


def test_wandb_logs_offline_into_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run(compose_config(tmp_path, [*INPAINT_FAST[:1], *INPAINT_FAST[2:], "logger=wandb"]))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1


def test_gan_steps_update_generator_and_discriminator():
    import functools

    import pytorch_lightning as pl

    from masking.generators import Boxes, evaluation_masks
    from masking.models import GatedGenerator, PatchDiscriminator
    from tasks.modules import Adversarial, InpaintingLoss

    gen, disc = GatedGenerator(width=4), PatchDiscriminator(width=4)
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    task = InpaintingModule(
        gen,
        InpaintingLoss(),
        adam,
        Boxes(),
        evaluation_masks(32, 1),
        gan=Adversarial(disc, adam),
    )
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    images = torch.utils.data.DataLoader(torch.rand(8, 3, 32, 32), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(task, train_dataloaders=images)
    changed = {n.split(".")[0] for n, p in task.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"net", "discriminator"}
    assert trainer.global_step == 4  # one generator and one discriminator step per batch
