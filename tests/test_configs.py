"""Every option of every config group composes (and instantiates, where it names an object), the
Hydra plugin groups (launchers, sweepers) are there, every experiment and debug overlay runs, and
the keys an Optuna study tunes exist."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from tasks import run
from tasks.runtime.trainer import build_callbacks
from tests.hydra_config import CONF, compose_config, options

GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra" and list(p.glob("*.yaml"))
)
NEEDS_ROOT = {("data", "folder"), ("mask", "folder")}
LM_PRUNING = {("pruning", "wanda"), ("pruning", "sparsegpt"), ("pruning", "maskllm")}
# groups whose options are plain objects: instantiating them must work on this machine
INSTANTIATED = ("net", "mask", "data", "logger", "trainer")


def test_the_groups_are_the_designed_ones():
    assert set(GROUPS) >= {
        "callbacks",
        "data",
        "debug",
        "experiment",
        "hparams_search",
        "layer",
        "logger",
        "mask",
        "net",
        "pruning",
        "task",
        "trainer",
    }
    assert set(options("trainer")) >= {"cpu", "gpu", "ddp", "ddp_cpu", "fsdp"}
    assert set(options("logger")) >= {"wandb", "tensorboard", "csv", "none"}


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS for o in options(g) if not o.startswith("_")],
)
def test_every_option_composes_and_instantiates(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if group == "optim":  # chosen per use: task=prune's dense training and fine-tuning
        overrides = ["task=prune", f"optim@task.dense_optimizer={option}"]
        overrides.append(f"optim@task.optimizer={option}")
    if (group, option) in NEEDS_ROOT:
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "a.png")
        overrides.append(f"{group}.root={tmp_path}")
    if (group, option) == ("data", "text") or (group, option) in LM_PRUNING:
        overrides.insert(0, "task=prune_lm")  # text and the language-model-only methods
    elif group == "pruning" or (group, option) == ("data", "digits"):
        overrides.insert(0, "task=prune")  # the classification data and the pruning methods
    if group == "task" and option == "predict":
        overrides += ["input=a.png", "masks=b.png", "output=out"]
    cfg = compose_config(tmp_path, overrides)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no ??? left, all resolve
    if group == "trainer" and cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        strategy = cfg.trainer.get("strategy")
        if isinstance(strategy, DictConfig):  # a strategy object builds without a GPU
            assert instantiate(strategy) is not None
        return  # composes; the Trainer needs the GPU it names
    if group == "optim":
        for key in ("dense_optimizer", "optimizer"):
            optimizer = instantiate(cfg.task[key])([torch.nn.Parameter(torch.ones(1))])
            assert isinstance(optimizer, torch.optim.Optimizer)
        return
    if group in INSTANTIATED and cfg[group].get("_target_"):
        assert instantiate(cfg[group]) is not None
    if group == "callbacks":
        callbacks = build_callbacks(cfg, logger=True)
        assert len(callbacks) == len([v for v in cfg.callbacks.values() if v])


def test_callbacks_that_need_a_logger_are_left_out_without_one(tmp_path):
    cfg = compose_config(tmp_path, ["callbacks=default", "logger=none"])
    names = [type(c).__name__ for c in build_callbacks(cfg, logger=False)]
    assert "LearningRateMonitor" not in names and "ModelSummary" in names


@pytest.mark.parametrize(
    ("group", "option", "target"),
    [
        ("hydra/launcher", "basic", "BasicLauncher"),
        ("hydra/launcher", "joblib", "JoblibLauncher"),
        ("hydra/launcher", "submitit_slurm", "SlurmLauncher"),
        ("hydra/sweeper", "basic", "BasicSweeper"),
        ("hydra/sweeper", "optuna", "OptunaSweeper"),
    ],
)
def test_hydra_plugin_options_compose(group, option, target):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"{group}={option}"], return_hydra_config=True)
    node = cfg.hydra.launcher if group.endswith("launcher") else cfg.hydra.sweeper
    assert node._target_.endswith(target)
    assert get_class(node._target_) is not None  # the plugin is installed


@pytest.mark.parametrize("option", options("hparams_search"))
def test_every_tuned_key_exists_in_the_job_config(option):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={option}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.mode.name == "MULTIRUN"
    assert sweeper.direction in ("minimize", "maximize")
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, f"{option} tunes {key}, which is not a key"
    metric = cfg.optimized_metric
    assert metric.startswith(("val/", "final/"))


FAST_INPAINT = [
    "data.crop_size=32",
    "data.batch_size=4",
    "data.max_val_crops=8",
    "task.eval_masks_per_bin=2",
]


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_runs(tmp_path, option):
    if option.startswith("prune"):  # a pruning job: the dense model, pruned, compacted, timed
        overrides = [f"experiment={option}", "debug=fdr", "task.latency.repeats=1"]
        overrides += ["task.latency.onnxruntime=false", f"task.cache_dir={tmp_path / 'cache'}"]
        run(compose_config(tmp_path, overrides))
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["final/mac_reduction"] > 1 and "final/acc" in metrics
        return
    overrides = [f"experiment={option}", "debug=fdr", *FAST_INPAINT]
    run(compose_config(tmp_path, overrides))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # one batch: one optimizer step, or two for the GAN (generator and discriminator)
    assert metrics["train/steps"] in (1, 2) and "val/hole_l1" in metrics


@pytest.mark.parametrize("option", options("debug"))
def test_every_debug_overlay_runs(tmp_path, option):
    overrides = [f"debug={option}", *FAST_INPAINT, "net.depth=3", "net.base_width=8"]
    run(compose_config(tmp_path, overrides))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 1 <= metrics["train/steps"] <= 16 and "val/psnr" in metrics
    if option == "profiler":
        assert list(tmp_path.glob("*profile*.txt"))


def readme_commands() -> list[list[str]]:
    """The overrides of every ``python run.py ...`` command in the README and in docs/ that names
    no placeholder (``<date>``, ``...``, ``[optional]``) or file of the reader's, each once."""
    pages = [CONF.parent / "README.md", *sorted((CONF.parent / "docs").rglob("*.md"))]
    text = "\n".join(page.read_text() for page in pages).replace("\\\n", " ")
    commands = {}
    for line in re.findall(r"python run\.py([^`\n|]*)", text):
        if any(mark in line for mark in ("<", "...", "[", "mynet")):
            continue
        tokens = [t for t in shlex.split(line) if t != "-m"]
        # a sweep composes as each of its jobs: take the first value of each list
        command = [re.sub(r"^([^=\[{]+)=([^,\[{]+),.*$", r"\1=\2", t) for t in tokens]
        commands[tuple(command)] = command
    return list(commands.values())


@pytest.mark.parametrize("overrides", readme_commands(), ids=" ".join)
def test_every_readme_command_composes(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.task.name
