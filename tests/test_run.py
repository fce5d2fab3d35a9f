"""The job entry: configs compose, `run(cfg)` runs and writes its files, typos fail at start."""

import json

import pytest

from tasks import run
from tests.hydra_config import CONF, compose_config, error_line, finished_run, run_cli


def test_task_options_exist():
    assert (CONF / "task" / "demo.yaml").is_file() and (CONF / "task" / "inpaint.yaml").is_file()


def test_demo_writes_metrics_and_picture(tmp_path):
    cfg = compose_config(
        tmp_path, ["task=demo", "task.size=64", "task.holes=3", "task.image=coffee"]
    )
    value = run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert value == metrics["demo/psnr_hole"]
    assert metrics["demo/hole_ratio"] > 0
    # filling from the neighbours beats painting the holes with the mean colour
    assert metrics["demo/psnr_hole"] > metrics["demo/psnr_hole_mean_fill"]
    assert (tmp_path / "inpainting.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".*.tmp"))


def test_demo_is_deterministic(tmp_path):
    first = run(compose_config(tmp_path / "a", ["task=demo", "task.size=48"]))
    second = run(compose_config(tmp_path / "b", ["task=demo", "task.size=48"]))
    assert first == second


def test_bad_task_value_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"task\.kernel_size must be odd, got 4"):
        run(compose_config(tmp_path, ["task=demo", "task.kernel_size=4", "task.size=32"]))


def test_cli_rejects_unknown_keys(tmp_path):
    result = run_cli("task=demo", "task.imagee=coffee", f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode != 0
    assert "imagee" in result.stderr


def test_default_job_is_inpainting_training(tmp_path):
    assert compose_config(tmp_path).task.name == "inpaint"


def test_cli_runs_a_short_default_job(tmp_path):
    fast = [
        "logger=none",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "data.samples_per_epoch=32",
        "data.max_val_crops=8",
        "data.val_size=64",
        "data.val_repeats=6",
        "task.eval_masks_per_bin=2",
    ]
    metrics = finished_run(tmp_path, *fast, timeout=300)
    assert metrics["train/steps"] == 2 and "val/hole_l1" in metrics


def test_cli_reports_bad_values_in_one_line(tmp_path):
    result = run_cli("task=demo", "task.kernel_size=4", f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "task.kernel_size must be odd, got 4" in line
    # the run's log keeps it too
    assert "task.kernel_size must be odd" in (tmp_path / "run.log").read_text()


def test_a_bad_value_in_a_built_object_is_reported_as_its_cause(tmp_path):
    # Hydra wraps a constructor's error in "Error in call to target ..."; the job record and the
    # one-line error keep the cause, with the config key that built the object
    result = run_cli("data.crop_size=7", "logger=none", f"hydra.run.dir={tmp_path}", timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "crop_size must be an int >= 8, got 7" in line and "Error in call" not in line
    record = json.loads((tmp_path / "job.json").read_text())
    assert record["status"] == "failed"
    assert "crop_size must be an int >= 8, got 7" in record["error"]


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        (["task=prune", "pruning=bogus"], "Could not find 'pruning/bogus' (the options are hard_"),
        (
            ["experiment=bogus"],
            "Could not find 'experiment/bogus' (the options are deepfill, prune_vit, q",
        ),
        (["data.crop_sizee=64"], "Could not override 'data.crop_sizee': no such key (to add one"),
        (["seed=[1,2"], "override 'seed=[1,2' does not parse"),
        (["task=predict"], "error: input must be given (add input=... to the command)"),
        (["data=folder", "logger=none"], "data.root must be given (add data.root=... to the"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_command_lines_get_one_error_line(tmp_path, overrides, text):
    result = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    assert text in error_line(result)


def test_a_finished_run_is_recognised_by_its_files(tmp_path):
    from tasks.runtime.job import _finished_run

    assert _finished_run(tmp_path) is None
    (tmp_path / "job.json").write_text('{"status": "interrupted"}')
    assert _finished_run(tmp_path) is None  # a stopped run may resume in its folder
    (tmp_path / "job.json").write_text('{"status": "completed"}')
    assert _finished_run(tmp_path) == "job.json"
    (tmp_path / "metrics.json").write_text("{}")
    assert _finished_run(tmp_path) == "metrics.json"


def test_a_second_run_in_the_same_folder_is_refused_before_it_writes(tmp_path):
    (tmp_path / "metrics.json").write_text('{"demo/psnr_hole": 30.0}\n')
    (tmp_path / "run.log").write_text("the first run's log\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = run_cli("task=demo", "task.size=32", f"hydra.run.dir={tmp_path}", timeout=300)
    line = error_line(result)
    assert f"hydra.run.dir '{tmp_path}' holds another run's metrics.json" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no .hydra/ either


def test_a_sweep_into_another_sweeps_folder_is_refused(tmp_path):
    (tmp_path / "multirun.yaml").write_text("the first sweep\n")
    result = run_cli("-m", "task=demo", "task.size=32", f"hydra.sweep.dir={tmp_path}", timeout=300)
    assert result.returncode == 1 and "holds another sweep" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun.yaml"]


def test_system_errors_are_one_line_naming_the_file():
    import run as entry

    error = OSError(28, "No space left on device", "/runs/a/checkpoints/last.ckpt")
    assert entry.one_line(error) == "/runs/a/checkpoints/last.ckpt: No space left on device"
    assert isinstance(PermissionError(), entry.USER_ERRORS)
