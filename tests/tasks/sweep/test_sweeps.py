"""Sweeps: every job records itself, a multirun ends with its summary table and plots, failed jobs
are rows with their error, joblib runs jobs in parallel, Optuna tunes through run(cfg)'s return
value, wandb runs of a sweep share a group, and submitit_slurm submits and runs (on a stand-in
for SLURM) jobs whose DDP ranks come from the cluster."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from tasks.runtime.trainer import build_logger
from tasks.sweep import Job, main, pareto_front, summarize, varying_overrides
from tests import fake_slurm
from tests.helpers.jobs import prune_fast
from tests.hydra_config import CONF, finished_run, run_cli

TINY_INPAINT = [
    "logger=none",
    "net.depth=3",
    "net.base_width=8",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.max_val_crops=12",
    "data.val_size=64",
    "data.val_repeats=6",
    "task.eval_masks_per_bin=2",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
]


def multirun(tmp_path: Path, *overrides: str, env=None) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path / "sweep"
    result = run_cli("-m", *overrides, f"hydra.sweep.dir={sweep_dir}", env=env, timeout=900)
    return result, sweep_dir


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as f:
        return list(csv.DictReader(f))


# -- the summary on its own -------------------------------------------------------------------------


def test_pareto_front_keeps_the_points_nothing_beats():
    points = [(0.5, 99.0), (0.8, 98.0), (0.8, 97.0), (0.9, 98.5), (0.9, 90.0), (0.95, 80.0)]
    assert pareto_front(points) == [(0.5, 99.0), (0.9, 98.5), (0.95, 80.0)]


def test_only_the_overrides_that_differ_are_columns():
    jobs = [
        Job(Path(str(i)), i, {"layer": layer, "trainer.max_steps": "5"}, "completed")
        for i, layer in enumerate(("partial", "gated"))
    ]
    assert varying_overrides(jobs) == ["layer"]


def test_summary_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 1
    assert (
        capsys.readouterr().err.strip() == f"error: sweep_dir: no folder at {tmp_path / 'nowhere'}"
    )
    with pytest.raises(ValueError, match="holds no job folders"):
        summarize(tmp_path)


def test_a_killed_job_is_a_row_that_says_so(tmp_path):
    for number, record in (("0", {"status": "completed", "overrides": ["seed=1"]}), ("1", None)):
        job = tmp_path / number
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- seed={number}\n")
        if record:
            (job / "job.json").write_text(json.dumps(record))
            (job / "metrics.json").write_text(json.dumps({"val/psnr": 20.0}))
    jobs = summarize(tmp_path)
    assert [job.status for job in jobs] == ["completed", "unfinished"]
    assert "killed or still running" in (tmp_path / "summary.md").read_text()


# -- sweeps through the command line -----------------------------------------------------------


@pytest.mark.slow
def test_inpainting_sweep_writes_the_table_and_the_bin_plot(tmp_path):
    result, sweep_dir = multirun(
        tmp_path, "layer=partial,gated,vanilla", "mask=thin,thick", *TINY_INPAINT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = rows(sweep_dir)
    assert len(table) == 6 and {r["status"] for r in table} == {"completed"}
    assert {(r["layer"], r["mask"]) for r in table} == {
        (layer, mask) for layer in ("partial", "gated", "vanilla") for mask in ("thin", "thick")
    }
    assert all(float(r["val/psnr"]) > 5 and float(r["wall_time_s"]) > 0 for r in table)
    markdown = (sweep_dir / "summary.md").read_text()
    assert "| job | layer | mask | val/psnr |" in markdown
    assert "`" in markdown and "trainer.max_steps=2" in markdown  # the common overrides, once
    assert (sweep_dir / "summary_bins.png").stat().st_size > 10_000
    assert not (sweep_dir / "summary_pareto.png").exists()


@pytest.mark.slow
def test_pruning_sweep_writes_the_pareto_plot(tmp_path):
    result, sweep_dir = multirun(
        tmp_path,
        *prune_fast(tmp_path),
        "pruning=magnitude,movement",
        "pruning.sparsity=0.5,0.8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = rows(sweep_dir)
    assert len(table) == 4 and {r["status"] for r in table} == {"completed"}
    for row in table:
        assert abs(float(row["final/sparsity"]) - float(row["pruning.sparsity"])) <= 0.005
        assert float(row["final/latency_batch_4_ms"]) > 0
    assert (sweep_dir / "summary_pareto.png").stat().st_size > 10_000
    assert len(list((tmp_path / "cache").glob("dense-*.pt"))) == 1  # trained once, then reused


@pytest.mark.slow
def test_a_failed_job_is_a_row_with_its_error_and_the_sweep_goes_on(tmp_path):
    result, sweep_dir = multirun(tmp_path, "task=demo", "task.size=48", "task.kernel_size=4,3")
    assert result.returncode == 1  # after the summary, because a job failed
    assert "1 of 2 jobs did not complete" in result.stderr
    failed, completed = rows(sweep_dir)
    assert failed["status"] == "failed" and "task.kernel_size must be odd" in failed["error"]
    assert completed["status"] == "completed" and float(completed["demo/psnr_hole"]) > 0
    assert (
        "failed: ValueError: task.kernel_size must be odd, got 4"
        in (sweep_dir / "summary.md").read_text()
    )


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel(tmp_path):
    result, sweep_dir = multirun(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "layer=partial,gated",
        *[o for o in TINY_INPAINT if not o.startswith("trainer.max_steps")],
        "trainer.max_steps=40",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((sweep_dir / n / "job.json").read_text()) for n in ("0", "1")]
    assert records[0]["pid"] != records[1]["pid"]
    first, second = sorted(records, key=lambda r: r["start_unix"])
    assert second["start_unix"] < first["end_unix"]  # the second began before the first ended
    assert len(rows(sweep_dir)) == 2


@pytest.mark.slow
def test_optuna_tunes_the_value_that_run_returns(tmp_path):
    result, sweep_dir = multirun(
        tmp_path,
        "hparams_search=prune_hard_concrete",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        *prune_fast(tmp_path)[1:],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = (sweep_dir / "optimization_results.yaml").read_text()
    table = rows(sweep_dir)
    assert len(table) == 2
    best = max(float(r["final/acc"]) for r in table)
    assert f"best_value: {best}" in results
    assert all("pruning.penalty" in r["overrides"] for r in table)


@pytest.mark.slow
def test_slurm_launcher_submits_and_the_cluster_starts_the_ddp_ranks(tmp_path):
    env = fake_slurm.install(tmp_path / "slurm")
    common = [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.timeout_min=30",
        "trainer=ddp_cpu",
        "net.batch_norm=false",
        "data.samples_per_epoch=32",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "trainer.deterministic=true",
        *[o for o in TINY_INPAINT if not o.startswith("trainer.max_steps")],
        "layer=partial,gated",
    ]
    result, sweep_dir = multirun(tmp_path, *common, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (script,) = (tmp_path / "slurm").glob("sbatch_*.sh")
    text = script.read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --ntasks-per-node=2", "#SBATCH --time=30"):
        assert line in text
    assert "srun" in text and "submitit.core._submit" in text
    table = rows(sweep_dir)
    assert [r["status"] for r in table] == ["completed", "completed"]
    # the ranks came from SLURM (2 tasks), not from the job: rank 1 says so in its own log
    logs = sorted(sweep_dir.glob(".submitit/*/*_1_log.err"))
    assert logs and all("GLOBAL_RANK: 1, MEMBER: 2/2" in log.read_text() for log in logs)
    # and the 2-rank job trained like one process with the same global batch
    single = [
        o for o in common if not o.startswith(("hydra", "trainer=ddp", "layer=", "data.batch"))
    ]
    expected = finished_run(tmp_path / "single", *single, "layer=partial", "data.batch_size=8")
    got = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    for key in ("val/psnr", "val/hole_l1", "train/loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-4), key


# -- wandb in a sweep --------------------------------------------------------------------------------


def test_wandb_runs_of_a_sweep_share_a_group_and_carry_their_overrides(tmp_path, monkeypatch):
    import wandb
    from hydra import compose, initialize_config_dir

    assert wandb.run is None  # every job ends its run (else the next job would log into it)
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = ["logger=wandb", "layer=gated"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / "multirun" / "2026-11-29_10-00-00")
        cfg.hydra.job.num = 3
        cfg.hydra.overrides.task = overrides
        cfg.output_dir = str(tmp_path / "3")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    logger = build_logger(cfg)
    run = logger.experiment
    try:
        assert run.group == "2026-11-29_10-00-00"
        assert run.name == "3: logger=wandb layer=gated"
        assert run.config["overrides"] == overrides
        assert run.config["net"]["layer"] == "gated"
        assert run.job_type == "inpaint"
    finally:
        run.finish()
