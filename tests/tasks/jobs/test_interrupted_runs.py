"""A killed training run resumes from its last checkpoint to the metrics of an uninterrupted run,
and a kill never leaves a truncated file under a final name."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.hydra_config import REPO

# enough epochs that a run is still training well after its first checkpoint (an epoch of this
# tiny net takes about 50 ms on a fast machine)
EPOCHS = 40


def command(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "run.py",
        "logger=none",
        "net.depth=3",
        "net.base_width=8",
        "data.crop_size=32",
        "data.batch_size=8",
        "data.samples_per_epoch=48",
        "data.max_val_crops=12",
        "data.val_size=64",
        "data.val_repeats=6",
        "task.eval_masks_per_bin=2",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.check_val_every_n_epoch=1",
        "trainer.deterministic=true",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def finished(run_dir: Path, *extra: str) -> dict[str, float]:
    result = subprocess.run(
        command(run_dir, *extra), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def assert_nothing_truncated(run_dir: Path) -> None:
    """Every file under its final name reads back whole."""
    for path in run_dir.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue  # the hidden ones are temporary files of an interrupted write
        if path.suffix in (".ckpt", ".pt"):
            torch.load(path, map_location="cpu", weights_only=False)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()


def _default_sigint() -> None:
    """In the child before exec: a test suite started as a background job (``pytest &`` in a
    script) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so the
    SIGINT case would test nothing. Restore the default disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_after_first_checkpoint(run_dir: Path, signum: int) -> str:
    """Kill the run once it has a checkpoint; its stderr."""
    stderr = run_dir.with_name("stderr.txt")
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            command(run_dir),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            preexec_fn=_default_sigint,
        )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    try:
        while not last.exists():
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        time.sleep(0.2)  # into the next epoch: steps that the resumed run must redo
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signum)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert code != 0  # Lightning alone exits 0 on SIGTERM
    assert not (run_dir / "metrics.json").exists()  # a killed run reports nothing
    return stderr.read_text()


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGKILL,
        pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
    ],
    ids=["SIGKILL", "SIGTERM", "SIGINT"],
)
def test_killed_run_resumes_to_the_uninterrupted_metrics(tmp_path, signum):
    reference = finished(tmp_path / "reference")
    run_dir = tmp_path / "killed"
    stderr = kill_after_first_checkpoint(run_dir, signum)
    if signum != signal.SIGKILL:  # a catchable signal says how to go on
        assert f"resume it with ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in stderr
    assert_nothing_truncated(run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] < EPOCHS - 1  # killed mid-way
    resumed = finished(run_dir, f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    assert_nothing_truncated(run_dir)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert resumed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
