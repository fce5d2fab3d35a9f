"""Data-parallel runs: each rank gets its own share of the data and masks, a 2-process run matches a
1-process run with the same global batch, and the job starts (and cleans up after) its own ranks."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from datamodules import DigitsDataModule, InpaintingDataModule
from datamodules._sharding import ShardSampler
from datamodules.digits import EpochShuffleSampler
from datamodules.inpainting import EpochSampler
from masking.generators import FreeFormStrokes, sample_generator
from tasks.runtime.processes import launched_from_outside, processes_per_node
from tests.hydra_config import compose_config, finished_run


def batches(sampler, size):
    keys = list(sampler)
    return [keys[i : i + size] for i in range(0, len(keys) - size + 1, size)]


@pytest.mark.parametrize(
    "make",
    [
        lambda rank, world: EpochSampler(40, start_epoch=3, rank=rank, world_size=world),
        lambda rank, world: EpochShuffleSampler(
            40, seed=5, start_epoch=1, rank=rank, world_size=world
        ),
    ],
    ids=["inpainting", "digits"],
)
def test_ranks_split_each_global_batch(make):
    single = batches(make(0, 1), 8)
    shares = [batches(make(rank, 2), 4) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(single)  # every rank takes as many steps
    for step, keys in enumerate(single):
        first, second = shares[0][step], shares[1][step]
        assert not set(first) & set(second)  # different data on each rank
        assert sorted(first + second) == sorted(keys)  # together: the single-process batch


def test_uneven_epochs_keep_every_rank_at_the_same_length():
    lengths = [len(EpochSampler(41, rank=r, world_size=3)) for r in range(3)]
    assert lengths == [13, 13, 13]
    assert len(list(EpochSampler(41, rank=2, world_size=3))) == 13


def test_validation_is_split_without_dropping_or_repeating():
    dm = InpaintingDataModule(crop_size=32, max_val_crops=7)
    dm.setup()
    shares = [list(ShardSampler(len(dm._val), rank, 3)) for rank in range(3)]
    assert sorted(key for share in shares for key in share) == list(range(7))
    assert shares[1] == [1, 4]  # rank r of W holds r, r + W, ...


def test_masks_follow_the_sample_key_not_the_process():
    masks = FreeFormStrokes()

    def draw(key):
        return masks(1, 32, 32, generator=sample_generator(0, key))

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))
    assert not torch.equal(draw(5), masks(1, 32, 32, generator=sample_generator(1, 5)))


def test_outside_the_trainer_every_process_sees_all_the_data():
    dm = DigitsDataModule(size=8, batch_size=16)
    dm.setup()
    assert len(dm.val_dataloader().dataset) == len(dm.val_indices)
    assert len(list(dm.val_dataloader().sampler)) == len(dm.val_indices)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer=cpu"], 1),
        (["trainer=ddp_cpu"], 2),
        (["trainer=ddp_cpu", "trainer.devices=3"], 3),
        (["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], 1),  # Lightning starts those
        (["trainer=cpu", "trainer.devices=4"], 1),  # no distributed strategy named
    ],
)
def test_processes_per_node(tmp_path, overrides, expected):
    assert processes_per_node(compose_config(tmp_path, overrides).trainer) == expected


def test_gpu_device_lists_count_processes():
    assert (
        processes_per_node(
            OmegaConf.create({"strategy": "ddp", "accelerator": "gpu", "devices": "0,1"})
        )
        == 2
    )
    assert (
        processes_per_node(
            OmegaConf.create({"strategy": "ddp", "accelerator": "gpu", "devices": [0, 2, 3]})
        )
        == 3
    )
    fsdp = {"_target_": "pytorch_lightning.strategies.FSDPStrategy"}
    assert (
        processes_per_node(OmegaConf.create({"strategy": fsdp, "accelerator": "gpu", "devices": 2}))
        == 2
    )


def test_ranks_started_by_a_cluster_are_not_started_again(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not launched_from_outside()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_from_outside()


# -- 2-process runs ----------------------------------------------------------------------------

INPAINT = [
    "logger=none",
    "net.depth=3",
    "net.base_width=8",
    "data.crop_size=32",
    "data.samples_per_epoch=32",
    "data.max_val_crops=12",
    "data.val_size=64",
    "data.val_repeats=6",
    "task.eval_masks_per_bin=2",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
]


@pytest.mark.slow
def test_two_process_inpainting_matches_one_process_with_the_same_global_batch(tmp_path):
    # without BatchNorm (whose statistics are per process on CPU) the two runs see the same images,
    # masks and averaged gradients: the same model up to the order of floating-point sums
    common = [*INPAINT, "net.batch_norm=false"]
    single = finished_run(tmp_path / "one", *common, "data.batch_size=8")
    double = finished_run(tmp_path / "two", *common, "trainer=ddp_cpu", "data.batch_size=4")
    assert single["train/steps"] == double["train/steps"] == 8
    assert single.keys() == double.keys()
    for key, value in single.items():
        assert double[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    # one set of files, written by rank 0; the samples and checkpoints are there
    assert (tmp_path / "two" / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "two" / "samples").glob("epoch_*.png"))


@pytest.mark.slow
def test_two_process_pruning_matches_one_process_within_noise(tmp_path):
    common = [
        "task=prune",
        "logger=none",
        "net.width=16",
        "data.size=16",
        "task.dense_epochs=3",
        "task.finetune_epochs=2",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "task.latency.batches=[1,4]",
        "trainer.enable_progress_bar=false",
        "trainer.deterministic=true",
        "pruning=magnitude",
        "pruning.sparsity=0.5",
    ]
    single = finished_run(
        tmp_path / "one", *common, "data.batch_size=64", f"task.cache_dir={tmp_path / 'c1'}"
    )
    double = finished_run(
        tmp_path / "two",
        *common,
        "trainer=ddp_cpu",
        "data.batch_size=32",
        f"task.cache_dir={tmp_path / 'c2'}",
    )
    # BatchNorm statistics are per process on CPU, so the models differ slightly; 359 validation
    # digits, one is 0.28 points
    for key in ("dense/acc", "final/acc"):
        assert double[key] == pytest.approx(single[key], abs=2.5), key
    assert double["final/sparsity"] == single["final/sparsity"]
    assert double["final/nonzero_params"] == single["final/nonzero_params"]
    report = json.loads((tmp_path / "two" / "prune_report.json").read_text())
    assert report["accuracy"]["final"] == double["final/acc"]
    assert len(list((tmp_path / "c2").glob("dense-*.pt"))) == 1  # the dense model, cached once


@pytest.mark.slow
def test_two_process_inpainting_pruning_runs(tmp_path):
    metrics = finished_run(
        tmp_path / "run",
        "task=prune_inpaint",
        "trainer=ddp_cpu",
        *[o for o in INPAINT if not o.startswith(("trainer.max_epochs", "trainer.check_val"))],
        "data.batch_size=4",
        "task.dense_steps=4",
        "task.finetune_steps=4",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "task.latency.batches=[1]",
        f"task.cache_dir={tmp_path / 'cache'}",
    )
    assert metrics["final/sparsity"] == pytest.approx(0.5, abs=0.005)
    assert (tmp_path / "run" / "compare.png").is_file()


def test_a_bad_device_count_is_named(tmp_path):
    cfg = compose_config(tmp_path, ["trainer=ddp_cpu", "trainer.devices=two"])
    with pytest.raises(
        ValueError, match=r"trainer\.devices must be a positive number .* got 'two'"
    ):
        processes_per_node(cfg.trainer)
