"""Weights and checkpoints the user names: read as data, checked against the network they are for,
and reported in one line when they do not fit."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torchvision
from hydra.utils import get_method
from torch import Tensor, nn

from masking.pruning.export import build_allowed

from .files import load_tensors


def state_dict_from_file(path: Path, argument: str = "task.pretrained") -> dict[str, Tensor]:
    """A plain state_dict, or a Lightning checkpoint's (with its ``net.`` prefix removed)."""
    unreadable = f"{argument}: {path} is not a readable torch file of tensors ({{error}})"
    hint = "; save net.state_dict(), not the module"
    state = load_tensors(path, f"{argument}: no file at {path}", unreadable + hint)
    if isinstance(state, dict) and "net_spec" in state:
        raise ValueError(
            f"{argument}: {path} is an inpainting checkpoint (task=inpaint); prune it with "
            f"task=prune_inpaint task.pretrained={path}"
        )
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{argument}: {path} holds no state_dict (a dict of parameter name to tensor)"
        )
    if state and all(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items()}
    return state


def load_state_dict_checked(net: nn.Module, state: dict[str, Tensor]) -> list[str]:
    """Load ``state`` into ``net`` when it fits exactly; else load nothing and return what kept it
    from fitting, one short phrase each (``load_state_dict`` would raise a many-line error)."""
    problems = state_problems(net.state_dict(), state)
    if not problems:
        net.load_state_dict(state)
    return problems


def state_problems(expected: dict[str, Tensor], state: dict[str, Any]) -> list[str]:
    """What keeps ``state`` from loading into a module whose state_dict is ``expected``, one
    short phrase each: values of the wrong type or shape, then missing and unexpected keys."""
    problems = []
    for key, value in state.items():
        if key not in expected or key.endswith("_extra_state"):  # a module's own state object
            continue
        if not isinstance(value, Tensor):
            problems.append(f"{key} holds {type(value).__name__}, not a tensor")
        elif value.shape != expected[key].shape:
            problems.append(
                f"{key} is {tuple(value.shape)} in the file but {tuple(expected[key].shape)} in the net"
            )
    problems += [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    return problems


def check_resume(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Before Lightning restores ``checkpoint`` into ``module``: a checkpoint of another network,
    layer type or job is one line, not a page of size mismatches."""
    state = checkpoint.get("state_dict")
    problems = state_problems(module.state_dict(), state if isinstance(state, dict) else {})
    if problems:
        raise ValueError(
            f"ckpt_path: the checkpoint does not fit this run's {type(module).__name__} "
            f"({len(problems)} key problems, e.g. {problems[0]}); resume with the settings it "
            "was trained with (net=, layer=, task=, pruning=)"
        )


def load_weights(
    net: nn.Module, state: dict[str, Tensor], origin: str, argument: str = "task.pretrained"
) -> None:
    """``load_state_dict`` with a one-line error naming the first missing or unexpected key or
    the first value of the wrong shape."""
    problems = load_state_dict_checked(net, state)
    if problems:
        raise ValueError(
            f"{argument}: {origin} does not fit net {type(net).__name__} "
            f"({len(problems)} key problems, e.g. {problems[0]})"
        )


def hub_file(url: str) -> Path:
    """Where torch.hub (and torchvision) keep the download of ``url`` (or of a file so named)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def torchvision_cached_weights(name: str) -> Path:
    """The file torchvision would download for ``name``'s default weights, if it is cached."""
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except ValueError as error:
        raise ValueError(f"task.pretrained=torchvision: {error}") from None
    path = hub_file(weights.url)
    if not path.is_file():
        raise FileNotFoundError(
            f"task.pretrained=torchvision: {name}'s weights are not in torchvision's cache "
            f"({path}); this machine cannot download them: copy the file there or pass "
            "task.pretrained=<path>"
        )
    return path


def read_inpainting_checkpoint(
    ckpt_path: str | Path, argument: str = "ckpt_path", *, settings: dict | None = None
) -> tuple[dict, dict[str, Tensor]]:
    """The network spec (``_target_`` and arguments) and weights of an inpainting checkpoint;
    errors name ``argument``. ``settings``, a dict, receives the checkpoint's inference settings
    (``coarse_side``: ``None`` in checkpoints written before it)."""
    path = Path(ckpt_path)
    name = f"{argument} {str(path)!r}"
    checkpoint = load_tensors(
        path,
        f"{name} is not a file",
        f"{name} is not a readable checkpoint of tensors ({{error}}); "
        "use a checkpoint written by task=inpaint",
    )
    spec = checkpoint.get("net_spec") if isinstance(checkpoint, dict) else None
    if spec is None:
        raise ValueError(
            f"{argument} {str(path)!r} is not an inpainting checkpoint of this project (no "
            "net_spec); use a checkpoint written by task=inpaint"
        )
    weights = checkpoint.get("state_dict")
    if not isinstance(spec, dict) or "_target_" not in spec or not isinstance(weights, dict):
        raise ValueError(
            f"{argument} {str(path)!r} is a damaged inpainting checkpoint (it needs a net_spec "
            "dict with a _target_ and a state_dict); use a checkpoint written by task=inpaint"
        )
    state = {k.removeprefix("net."): v for k, v in weights.items() if k.startswith("net.")}
    if settings is not None:
        saved = checkpoint.get("inference")
        side = saved.get("coarse_side") if isinstance(saved, dict) else None
        if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 8):
            raise ValueError(
                f"{argument} {str(path)!r} is a damaged inpainting checkpoint (its coarse_side "
                f"must be an int >= 8 or None, got {side!r})"
            )
        settings["coarse_side"] = side
    return spec, state


# the project's builders outside masking (language models through Hugging Face transformers),
# which every file may name: they build an architecture from its config, nothing more
PROJECT_BUILDERS = ("tasks.modules.language.causal_lm",)


def trusted(targets: Iterable[str] | None) -> dict[str, Callable[..., Any]]:
    """``trusted_builders=``: the user's own networks that a file may name, by ``_target_``
    (the project's :data:`PROJECT_BUILDERS` always)."""
    builders = {target: get_method(target) for target in PROJECT_BUILDERS}
    if targets is None:
        return builders
    if isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(
            f"trusted_builders must be a list of _target_ strings, e.g. [mypackage.MyNet], got "
            f"{targets!r}"
        )
    for target in targets:
        try:
            builders[target] = get_method(target)
        except Exception as err:  # Hydra's message runs over several lines
            reason = (str(err).strip().splitlines() or [""])[0]
            raise ValueError(
                f"trusted_builders: {target!r} cannot be imported ({reason})"
            ) from None
    return builders


def check_finite(net: nn.Module, origin: str) -> None:
    """A network whose weights hold NaN or inf paints holes black: refuse it by name."""
    for key, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{origin}: the weights hold NaN or inf (first in {key}); the checkpoint is "
                "damaged or its training diverged"
            )


def build_network(
    spec: dict,
    state: dict[str, Tensor],
    *,
    origin: str = "checkpoint",
    builders: dict[str, Callable[..., Any]] | None = None,
) -> nn.Module:
    """``spec``'s network with ``state`` loaded (every key must fit, every value finite); only
    allowed networks are built (the project's, torchvision's, torch.nn's, or ``builders``).
    Errors name ``origin``."""
    target = spec.get("_target_")
    net = build_allowed(spec, where=f"{origin}: its net_spec", builders=builders)
    problems = load_state_dict_checked(net, state)
    if problems:
        raise ValueError(
            f"{origin}: weights do not fit {target} ({len(problems)} key problems, e.g. "
            f"{problems[0]})"
        )
    check_finite(net, origin)
    return net


def load_inpainting_network(
    ckpt_path: str | Path,
    device: str | torch.device = "cpu",
    argument: str = "ckpt_path",
    builders: dict[str, Callable[..., Any]] | None = None,
) -> nn.Module:
    """The network of an inpainting checkpoint, rebuilt from its saved spec, in eval mode, with
    the side of its training crops as ``net.coarse_side`` (``None`` in older checkpoints), which
    :func:`~tasks.modules.inference.inpaint` reads."""
    settings: dict = {}
    spec, state = read_inpainting_checkpoint(ckpt_path, argument, settings=settings)
    net = build_network(spec, state, origin=f"{argument} {str(ckpt_path)!r}", builders=builders)
    net.coarse_side = settings["coarse_side"]
    return net.to(device).eval()
