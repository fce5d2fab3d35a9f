"""``task=prune``: pretrained network → masks → fine-tune under the schedule → finalize → export →
report (sparsity, params, MACs, measured latency, accuracy before and after)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from .distributed import is_main_process, other_ranks_stop_here

log = logging.getLogger(__name__)

FINALIZE = ("auto", "bake", "compact")


def _original_cwd() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.cwd)
    except (ImportError, ValueError):
        return Path.cwd()


def launch_path(value: Any) -> Path:
    """A path from the config: ``~`` expanded, relative ones taken from the launch folder (Hydra
    changes into the run folder)."""
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else _original_cwd() / path


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    """A plain state_dict, or a Lightning checkpoint's (with its ``net.`` prefix removed)."""
    if not path.is_file():
        raise FileNotFoundError(f"task.pretrained: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's message runs over many lines of weights_only advice: the type says enough
        raise ValueError(
            f"task.pretrained: {path} is not a readable torch file of tensors "
            f"({type(error).__name__}); save net.state_dict(), not the module"
        ) from None
    if isinstance(state, dict) and "net_spec" in state:
        raise ValueError(
            f"task.pretrained: {path} is an inpainting checkpoint (task=inpaint); prune it with "
            f"task=prune_inpaint task.pretrained={path}"
        )
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"task.pretrained: {path} holds no state_dict (a dict of parameter name to tensor)"
        )
    if state and all(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return state


def load_state_dict_checked(net: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Load ``state`` into ``net`` and return what kept it from fitting exactly, one short phrase
    each (empty when it fits): values that are not tensors or whose shape differs (checked first,
    nothing is loaded then: ``load_state_dict`` would raise a many-line error), else the missing
    and unexpected keys that ``load_state_dict(strict=False)`` reports."""
    expected = net.state_dict()
    problems = []
    for key, value in state.items():
        if key not in expected or key.endswith("_extra_state"):
            continue
        if not isinstance(value, Tensor):
            problems.append(f"{key} holds {type(value).__name__}, not a tensor")
        elif value.shape != expected[key].shape:
            problems.append(
                f"{key} is {tuple(value.shape)} in the file but {tuple(expected[key].shape)} in "
                "the net"
            )
    if problems:
        return problems
    result = net.load_state_dict(state, strict=False)
    return [f"missing {k}" for k in result.missing_keys] + [
        f"unexpected {k}" for k in result.unexpected_keys
    ]


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """``load_state_dict`` with a one-line error naming the first missing or unexpected key or
    the first value of the wrong shape."""
    problems = load_state_dict_checked(net, state)
    if problems:
        raise ValueError(
            f"task.pretrained: {origin} does not fit net {type(net).__name__} "
            f"({len(problems)} key problems, e.g. {problems[0]})"
        )


def torchvision_cached_weights(name: str) -> Path:
    """The file torchvision would download for ``name``'s default weights, if it is cached."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except ValueError as error:
        raise ValueError(f"task.pretrained=torchvision: {error}") from None
    hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not hub.is_file():
        raise FileNotFoundError(
            f"task.pretrained=torchvision: {name}'s weights are not in torchvision's cache ({hub}); "
            "this machine cannot download them: copy the file there or pass task.pretrained=<path>"
        )
    return hub


# trainer settings that change what a dense training produces (a short debug or sweep budget must
# not leave its model in the cache under the full recipe's name)
TRAINING_KEYS = (
    "max_steps",
    "limit_train_batches",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "precision",
    "devices",
    "num_nodes",
    "strategy",
)


def dense_cache_path(cfg: DictConfig, recipe: dict[str, Any]) -> Path:
    """Where the dense model trained for this net/data/seed, trainer limits and training
    ``recipe`` is cached."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    recipe = {
        "net": OmegaConf.to_container(cfg.net, resolve=True),
        "data": {
            k: v
            for k, v in OmegaConf.to_container(cfg.data, resolve=True).items()
            if k not in ("num_workers", "pin_memory")
        },
        "seed": cfg.seed,
        "trainer": {k: trainer[k] for k in TRAINING_KEYS if trainer.get(k) is not None},
        **recipe,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    arch = str(recipe["net"].get("_target_", "net")).rsplit(".", 1)[-1]
    return launch_path(cfg.task.cache_dir) / f"dense-{arch}-{digest}.pt"


def capped_steps(cfg: DictConfig, steps: int) -> int:
    """``steps``, at most ``trainer.max_steps`` when that is set (a debug run, a short sweep)."""
    cap = cfg.trainer.get("max_steps", -1)
    return steps if cap in (None, -1) else min(steps, int(cap))


def job_trainer(
    cfg: DictConfig, root: Path, *, logger: Any = False, callbacks=(), **limits: Any
) -> Any:
    """``cfg.trainer`` writing under ``root``, checkpointing only with callbacks; ``limits``
    override trainer arguments (``max_epochs``, ``max_steps``, validation settings)."""
    from hydra.utils import instantiate

    return instantiate(
        cfg.trainer,
        **limits,
        callbacks=list(callbacks),
        logger=logger,
        default_root_dir=str(root),
        enable_checkpointing=bool(callbacks),
    )


def settle_masks(pruner: Any, sparsity: float, loader: Any, batches: int, forward=None) -> None:
    """After fine-tuning: the masks at the target ``sparsity``, and for sampled masks BatchNorm
    statistics re-estimated with the deterministic ones (``forward`` as in
    :func:`~tasks.prune.recalibrate_batchnorm`)."""
    from .prune import recalibrate_batchnorm

    if pruner.current != sparsity:
        log.warning("fine-tuning ended before the schedule reached %s: setting it now", sparsity)
        pruner.set_sparsity(sparsity)
    if any(source.stochastic for source in pruner.sources):
        used = recalibrate_batchnorm(pruner.model, loader, batches, forward=forward)
        log.info("BatchNorm statistics re-estimated on %d batches with deterministic gates", used)


def pretrained_network(cfg: DictConfig, datamodule: Any) -> tuple[nn.Module, str]:
    """The network of ``cfg.net`` with its pretrained weights, and where they came from.

    ``task.pretrained``: a path (state_dict or Lightning checkpoint), ``torchvision`` (the default
    weights of ``net.name`` from torchvision's cache), or null: train the dense model with
    ``task.dense_epochs`` first and cache it for the next run.
    """
    from hydra.utils import instantiate

    from masking.io import write_atomic

    from .prune import ClassificationTask

    net = instantiate(cfg.net)
    source = cfg.task.pretrained
    if source == "torchvision":
        name = cfg.net.get("name")
        if not name:
            raise ValueError("task.pretrained=torchvision needs a torchvision net with net.name")
        path = torchvision_cached_weights(name)
        load_weights(net, _state_dict_from_file(path), str(path))
        return net, str(path)
    if source is not None:
        path = launch_path(source)
        load_weights(net, _state_dict_from_file(path), str(path))
        return net, str(path)
    cache = dense_cache_path(
        cfg,
        {
            "epochs": cfg.task.dense_epochs,
            "lr_schedule": cfg.task.dense_lr_schedule,
            "optimizer": OmegaConf.to_container(cfg.task.dense_optimizer, resolve=True),
        },
    )
    if cache.is_file():
        log.info("Using the cached dense model %s (delete it to retrain)", cache)
        load_weights(net, _state_dict_from_file(cache), str(cache))
        return net, str(cache)
    log.warning(
        "No pretrained weights given (task.pretrained=null): training the dense %s for %d epochs "
        "first; it is cached at %s for the next run",
        type(net).__name__,
        cfg.task.dense_epochs,
        cache,
    )
    task = ClassificationTask(
        net,
        optimizer=instantiate(cfg.task.dense_optimizer),
        lr_schedule=cfg.task.dense_lr_schedule,
    )
    trainer = job_trainer(
        cfg,
        Path(cfg.output_dir) / "dense",
        max_epochs=cfg.task.dense_epochs,
        check_val_every_n_epoch=1,
    )
    trainer.fit(task, datamodule=datamodule)
    if cfg.trainer.get("fast_dev_run"):
        return net, "trained here for a fast_dev_run (not cached)"
    if is_main_process():
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, buffer.getvalue())
    return net, f"trained here ({cfg.task.dense_epochs} epochs), cached at {cache}"


def _prepare_for_inference(model: nn.Module, memory_format: str) -> nn.Module:
    """The inference path the latency is measured on (the same for dense and pruned)."""
    model = copy.deepcopy(model).eval()
    if memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    elif memory_format != "contiguous":
        raise ValueError(
            f"task.latency.memory_format must be 'contiguous' or 'channels_last', got "
            f"{memory_format!r}"
        )
    return model


def profile_pair(
    dense: nn.Module, final: nn.Module, make_input, *, batches, repeats, warmup, memory_format
) -> dict[str, dict]:
    """Params, MACs and latency of the dense and final models, measured side by side."""
    from .profile import count_macs, count_params, measure_latency

    models = {
        "dense": _prepare_for_inference(dense, memory_format),
        "final": _prepare_for_inference(final, memory_format),
    }
    out: dict[str, dict] = {}
    for key, model in models.items():
        out[key] = {**count_params(model), "macs": count_macs(model, make_input(1))}
        out[key]["latency_ms"] = {}
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    for batch in batches:
        example = make_input(batch)
        if isinstance(example, Tensor):
            example = example.contiguous(memory_format=fmt)
        else:  # forward arguments: image-like ones in the same memory format
            example = tuple(
                t.contiguous(memory_format=fmt) if isinstance(t, Tensor) and t.dim() == 4 else t
                for t in example
            )
        runs: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(3):  # interleaved blocks: a noisy neighbour hits both models alike
            for key, model in models.items():
                result = measure_latency(model, example, repeats=repeats, warmup=warmup)
                runs[key].append(result["median_ms"])
        for key in models:
            values = sorted(runs[key])
            out[key]["latency_ms"][f"batch_{batch}"] = values[len(values) // 2]
    return out


def profile_configured(cfg: DictConfig, dense: nn.Module, final: nn.Module, make_input) -> dict:
    """:func:`profile_pair` with ``cfg.task.latency``'s batches, repeats and memory format."""
    lat = cfg.task.latency
    return profile_pair(
        dense,
        final,
        make_input,
        batches=list(lat.batches),
        repeats=lat.repeats,
        warmup=lat.warmup,
        memory_format=lat.memory_format,
    )


SCORES = {  # report key -> (column label, format)
    "accuracy": ("accuracy (%)", "{:.2f}"),
    "psnr": ("PSNR (dB)", "{:.2f}"),
    "hole_l1": ("hole L1", "{:.4f}"),
}


def report_markdown(report: dict[str, Any]) -> str:
    """The readable table of a pruning report (``report["scores"]`` names its quality columns)."""
    d, f = report["dense"], report["final"]
    scores = report["scores"]
    batches = report["batches"]
    lines = [
        f"# Pruning report: {report['method']}, {report['granularity']}, "
        f"target sparsity {report['target_sparsity']}",
        "",
        f"Device: {report['device']}; torch {report['torch']}; finalize: {report['finalize']}; "
        f"pretrained: {report['pretrained']}",
        "",
        "| | "
        + " | ".join(SCORES[k][0] for k in scores)
        + " | params | nonzero params | MACs | "
        + " | ".join(f"latency b{b} (ms)" for b in batches)
        + " |",
        "|---|" + "---|" * (len(scores) + 3 + len(batches)),
    ]

    def quality(stage: str) -> str:
        return " | ".join(SCORES[k][1].format(report[k][stage]) for k in scores)

    def row(name: str, entry: dict) -> str:
        lat = " | ".join(f"{entry['latency_ms'][f'batch_{b}']:.2f}" for b in batches)
        return (
            f"| {name} | {quality(name)} | {entry['params']:,} | {entry['nonzero_params']:,} | "
            f"{entry['macs']:,} | {lat} |"
        )

    lines.append(row("dense", d))
    lines.append(
        f"| masked, before fine-tuning | {quality('masked_before_finetune')} | | | |"
        + " |" * len(batches)
    )
    lines.append(row("final", f))
    lines += [
        "",
        f"Achieved sparsity: {report['achieved_sparsity']:.4f} ({report['sparsity_kind']}). "
        f"MAC reduction {report['mac_reduction']:.2f}×; speedup "
        + ", ".join(f"b{b} {report['speedup'][f'batch_{b}']:.2f}×" for b in batches)
        + ".",
        "",
        "| layer | "
        + ("channels | kept" if report["sparsity_kind"] == "channel" else "params | zeros")
        + " | sparsity |",
        "|---|---|---|---|",
    ]
    for layer in report["layers"]:
        if "channels" in layer:
            lines.append(
                f"| {layer['layer']} | {layer['channels']} | {layer['kept_channels']} | "
                f"{layer['channel_sparsity']:.3f} |"
            )
        else:
            lines.append(
                f"| {layer['layer']} | {layer['params']:,} | {layer['zeros']:,} | "
                f"{layer['sparsity']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def pruning_options(cfg: DictConfig, example_inputs: Any) -> dict[str, Any]:
    """The :class:`~masking.pruning.Pruner` arguments of ``cfg.pruning`` (checked)."""
    p = cfg.get("pruning")
    if p is None:
        raise ValueError(
            f"task={cfg.task.name} needs a pruning method: pruning=magnitude|movement|..."
        )
    if p.finalize not in FINALIZE:
        raise ValueError(
            f"pruning.finalize must be one of {', '.join(FINALIZE)}, got {p.finalize!r}"
        )
    return {
        "method": p.method,
        "granularity": p.granularity,
        "sparsity": p.sparsity,
        "allocation": p.allocation,
        "include": list(p.include),
        "exclude": list(p.exclude),
        "example_inputs": example_inputs,
        "round_to": p.round_to,
        "penalty": p.penalty,
        "estimator_args": OmegaConf.to_container(p.estimator_args, resolve=True),
        "update_every": p.update_every,
    }


def build_schedule(p: DictConfig, steps: int) -> Any:
    """``pruning.schedule`` over ``steps`` fine-tuning steps (``pruning.ramp`` as fractions)."""
    from masking.pruning import SparsitySchedule

    ramp_start, ramp_end = (round(f * steps) for f in p.ramp)
    return SparsitySchedule(
        p.sparsity,
        kind=p.schedule,
        start_step=ramp_start,
        end_step=max(ramp_start, min(ramp_end, steps - 1)),
        initial=p.get("initial_sparsity", 0.0),
        every=p.update_every,
    )


def finalize_pruned(pruner: Any, p: DictConfig, check_inputs: Any) -> tuple[nn.Module, str]:
    """Bake or compact (``pruning.finalize``; auto: compact channels, bake the rest)."""
    finalize = p.finalize
    if finalize == "auto":
        finalize = "compact" if pruner.granularity.kind == "channel" else "bake"
    if finalize == "compact":
        return pruner.compact(check_inputs), finalize
    return pruner.bake(), finalize


def pruning_report(
    cfg: DictConfig,
    pruner: Any,
    *,
    finalize: str,
    origin: str,
    profile: dict[str, dict],
    scores: dict[str, dict[str, float]],
    steps: int,
    started: float,
) -> dict[str, Any]:
    """``prune_report.json``: the settings, sparsity per layer, cost and quality of each stage."""
    p, batches = cfg.pruning, list(cfg.task.latency.batches)
    return {
        "method": p.method,
        "granularity": str(pruner.granularity),
        "allocation": pruner.allocation,
        "target_sparsity": p.sparsity,
        "achieved_sparsity": pruner.achieved_sparsity(),
        "sparsity_kind": "channel" if pruner.granularity.kind == "channel" else "param",
        "finalize": finalize,
        "pretrained": origin,
        "device": f"cpu ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "batches": batches,
        "memory_format": cfg.task.latency.memory_format,
        "scores": list(scores),
        **scores,
        "dense": profile["dense"],
        "final": profile["final"],
        "mac_reduction": profile["dense"]["macs"] / max(1, profile["final"]["macs"]),
        "speedup": {
            f"batch_{b}": profile["dense"]["latency_ms"][f"batch_{b}"]
            / profile["final"]["latency_ms"][f"batch_{b}"]
            for b in batches
        },
        "layers": pruner.layer_sparsity(),
        "finetune_steps": steps,
        "wall_time_s": time.perf_counter() - started,
    }


def write_pruning_outputs(
    output_dir: Path,
    final: nn.Module,
    builder: dict,
    report: dict[str, Any],
    metrics: dict[str, float],
    extra: dict[str, Any],
) -> dict[str, float]:
    """``export/``, ``prune_report.{json,md}`` and ``metrics.json`` (cost metrics added here)."""
    from masking.pruning.export import export_pruned

    from .io import write_atomic, write_json

    export_pruned(final, output_dir / "export", builder=builder, extra=extra)
    write_json(output_dir / "prune_report.json", report)
    markdown = report_markdown(report)
    write_atomic(output_dir / "prune_report.md", markdown)
    final_cost = report["final"]
    metrics = {
        **metrics,
        "final/sparsity": report["achieved_sparsity"],
        "final/params": float(final_cost["params"]),
        "final/nonzero_params": float(final_cost["nonzero_params"]),
        "final/macs": float(final_cost["macs"]),
        "final/mac_reduction": report["mac_reduction"],
        **{f"final/latency_{k}_ms": v for k, v in final_cost["latency_ms"].items()},
        **{f"final/speedup_{k}": v for k, v in report["speedup"].items()},
    }
    write_json(output_dir / "metrics.json", metrics)
    log.info("\n%s", markdown)
    return metrics


def run_prune(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from masking.pruning import Pruner

    from .prune import ClassificationTask, evaluate
    from .tracking import build_callbacks, build_logger

    started = time.perf_counter()
    os.environ.setdefault("WANDB_MODE", "offline")
    pl.seed_everything(cfg.seed, workers=True)
    task_cfg, p = cfg.task, cfg.get("pruning")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    options = pruning_options(cfg, datamodule.example_input(2))
    Pruner(instantiate(cfg.net), **options)  # bad pruning settings fail now, not after training
    net, origin = pretrained_network(cfg, datamodule)
    val_loader = datamodule.val_dataloader()
    dense_acc = evaluate(net, val_loader)
    log.info("dense accuracy %.2f %% (%s)", dense_acc, origin)
    dense = copy.deepcopy(net)

    steps = capped_steps(cfg, len(datamodule.train_dataloader()) * task_cfg.finetune_epochs)
    schedule = build_schedule(p, steps)
    pruner = Pruner(net, schedule=schedule, **options)
    pruner.set_sparsity(p.sparsity)
    oneshot_acc = evaluate(net, val_loader)
    log.info("masked at %.3f before fine-tuning: %.2f %%", p.sparsity, oneshot_acc)
    pruner.set_sparsity(schedule(0))

    task = ClassificationTask(
        net,
        optimizer=instantiate(task_cfg.optimizer),
        pruner=pruner,
        mask_optimizer=instantiate(p.mask_optimizer),
        lr_schedule=task_cfg.lr_schedule,
    )
    checkpoints = ModelCheckpoint(dirpath=output_dir / "checkpoints", save_last=True)
    logger = build_logger(cfg)
    trainer = job_trainer(
        cfg,
        output_dir,
        logger=logger,
        callbacks=[checkpoints, *build_callbacks(cfg, logger)],
        max_epochs=task_cfg.finetune_epochs,
        check_val_every_n_epoch=1,
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    settle_masks(
        pruner, p.sparsity, datamodule.train_dataloader(), task_cfg.bn_recalibration_batches
    )
    masked_acc = evaluate(net, val_loader)

    final, finalize = finalize_pruned(pruner, p, next(iter(val_loader))[0][:8])
    final_acc = evaluate(final, val_loader)
    log.info("final (%s) accuracy %.2f %% (masked: %.2f %%)", finalize, final_acc, masked_acc)
    if other_ranks_stop_here():
        return {"final/acc": final_acc}

    profile = profile_configured(cfg, dense, final, datamodule.example_input)
    accuracy = {
        "dense": dense_acc,
        "masked_before_finetune": oneshot_acc,
        "masked_after_finetune": masked_acc,
        "final": final_acc,
    }
    report = pruning_report(
        cfg,
        pruner,
        finalize=finalize,
        origin=origin,
        profile=profile,
        scores={"accuracy": accuracy},
        steps=int(task.prune_step),
        started=started,
    )
    return write_pruning_outputs(
        output_dir,
        final,
        OmegaConf.to_container(cfg.net, resolve=True),
        report,
        {"dense/acc": dense_acc, "masked/acc": oneshot_acc, "final/acc": final_acc},
        {"accuracy": final_acc, "method": p.method, "granularity": str(pruner.granularity)},
    )
