"""LPIPS and FID run only from weights already on disk: off (with one log line) when they are
missing, an error when required, and computed through the task when present."""

import json
import logging

import pytest
import torch
import torchvision

from tasks import run
from tasks.modules.metrics import PerceptualMetrics, fid_weights_file, lpips_weights_file
from tests.helpers.jobs import INPAINT_FAST
from tests.hydra_config import compose_config


@pytest.fixture
def hub(tmp_path):
    """An empty torch.hub cache for the test, restored afterwards."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def fake_squeezenet_weights() -> None:
    """Random SqueezeNet 1.1 weights where torchvision caches the real ones (5 MB): the LPIPS
    machinery runs for real, only its backbone is untrained."""
    path = lpips_weights_file("squeeze")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)


def test_missing_weights_turn_the_metrics_off_with_one_line(hub, caplog):
    with caplog.at_level(logging.INFO, logger="tasks.modules.metrics"):
        metrics = PerceptualMetrics()
    assert not metrics.enabled and metrics.compute() == {}
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("LPIPS is not computed: no weights at") for line in lines)
    assert any(line.startswith("FID is not computed") for line in lines)


def test_required_metrics_without_weights_fail_naming_the_file(hub):
    with pytest.raises(FileNotFoundError, match=r"metrics.lpips=true but no weights at .*alexnet"):
        PerceptualMetrics(lpips=True, fid=False)
    with pytest.raises(FileNotFoundError, match=r"metrics.fid=true but"):
        PerceptualMetrics(lpips=False, fid=True)
    with pytest.raises(ValueError, match=r"metrics\.lpips_net must be one of"):
        PerceptualMetrics(lpips_net="resnet")
    with pytest.raises(ValueError, match=r"metrics\.fid must be true, false or auto"):
        PerceptualMetrics(fid="yes")


def test_fid_looks_for_torch_fidelitys_inception_weights(hub):
    assert fid_weights_file().name == "weights-inception-2015-12-05-6726825d.pth"
    assert fid_weights_file().parent == hub / "checkpoints"


def test_lpips_from_local_weights(hub):
    fake_squeezenet_weights()
    metrics = PerceptualMetrics(lpips=True, lpips_net="squeeze", fid=False)
    images = torch.rand(4, 3, 32, 32)
    metrics.update(images, images)
    assert metrics.compute()["lpips"].abs() < 1e-6  # identical images
    metrics.reset()
    metrics.update(torch.rand(4, 3, 32, 32), images)
    assert metrics.compute()["lpips"] > 0


def test_the_task_logs_lpips_when_its_weights_are_local(hub, tmp_path):
    fake_squeezenet_weights()
    overrides = [*INPAINT_FAST, "task.metrics.lpips=true", "task.metrics.lpips_net=squeeze"]
    run(compose_config(tmp_path / "run", overrides))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/lpips"] >= 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert not any("lpips" in key for key in checkpoint["state_dict"])  # kept out of checkpoints
