"""Pruning an inpainting network through run(cfg): PSNR before/after, export, cache, checkpoints."""

from __future__ import annotations

import pytest
import torch

from masking.pruning.export import load_pruned
from tasks import run
from tasks.runtime.checkpoints import load_inpainting_network
from tests.helpers.jobs import prune_inpaint_fast, read_json
from tests.hydra_config import compose_config


def test_unstructured_run_reports_psnr_and_exports(tmp_path):
    run_dir = tmp_path / "a"
    value = run(compose_config(run_dir, prune_inpaint_fast(tmp_path, "pruning.sparsity=0.6")))
    metrics, report = read_json(run_dir / "metrics.json"), read_json(run_dir / "prune_report.json")
    assert value == metrics["final/psnr"]
    assert report["scores"] == ["psnr", "hole_l1"]
    stages = {"dense", "masked_before_finetune", "masked_after_finetune", "final"}
    assert set(report["psnr"]) == stages and set(report["by_bin"]) == stages
    # baking is exact: the final network inpaints the fixed evaluation set like the masked one
    assert report["psnr"]["final"] == pytest.approx(report["psnr"]["masked_after_finetune"])
    assert abs(report["achieved_sparsity"] - 0.6) <= 0.005
    assert report["final"]["nonzero_params"] < 0.5 * report["dense"]["params"]
    assert "| PSNR (dB) | hole L1 |" in (run_dir / "prune_report.md").read_text()
    assert (run_dir / "compare.png").stat().st_size > 0
    model = load_pruned(run_dir / "export")
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    assert nonzero == report["final"]["nonzero_params"]
    # the dense model trained here is cached as an inpainting checkpoint task=predict can load
    (cache,) = (tmp_path / "cache").glob("dense-PConvUNet-*.pt")
    assert (
        load_inpainting_network(cache)(torch.rand(1, 3, 32, 32), torch.ones(1, 1, 32, 32))
        .isfinite()
        .all()
    )
    # ... and task.pretrained takes it: same dense PSNR, nothing retrained
    run(compose_config(tmp_path / "b", prune_inpaint_fast(tmp_path, f"task.pretrained={cache}")))
    assert read_json(tmp_path / "b" / "metrics.json")["dense/psnr"] == metrics["dense/psnr"]
    assert "trained here" not in read_json(tmp_path / "b" / "prune_report.json")["pretrained"]


def test_channel_pruning_of_a_joint_mask_unet_compacts(tmp_path):
    overrides = prune_inpaint_fast(
        tmp_path,
        "net.multi_channel_decoder=false",
        "pruning=hard_concrete",
        "pruning.granularity=channel",
        "pruning.sparsity=0.5",
    )
    run(compose_config(tmp_path, overrides))
    report = read_json(tmp_path / "prune_report.json")
    assert report["finalize"] == "compact"
    assert report["mac_reduction"] > 2.0
    assert report["psnr"]["final"] == pytest.approx(
        report["psnr"]["masked_after_finetune"], abs=1e-3
    )
    model = load_pruned(tmp_path / "export")
    assert sum(p.numel() for p in model.parameters()) == report["final"]["params"]


def test_channel_pruning_of_per_channel_decoder_masks_is_refused_with_the_fix(tmp_path):
    overrides = prune_inpaint_fast(tmp_path, "pruning.granularity=channel")
    with pytest.raises(ValueError, match=r"net\.multi_channel_decoder=false"):
        run(compose_config(tmp_path, overrides))


def test_an_inpainting_checkpoint_given_to_the_classification_job_points_to_prune_inpaint(
    tmp_path,
):
    checkpoint = tmp_path / "inpaint.ckpt"
    torch.save({"state_dict": {}, "net_spec": {"_target_": "masking.models.PConvUNet"}}, checkpoint)
    overrides = ["task=prune", "logger=none", f"task.pretrained={checkpoint}"]
    with pytest.raises(ValueError, match="task=prune_inpaint"):
        run(compose_config(tmp_path, overrides))


def test_a_classifier_checkpoint_is_not_an_inpainting_checkpoint(tmp_path):
    weights = tmp_path / "classifier.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    with pytest.raises(ValueError, match=r"task\.pretrained .* is not an inpainting checkpoint"):
        run(compose_config(tmp_path, prune_inpaint_fast(tmp_path, f"task.pretrained={weights}")))
