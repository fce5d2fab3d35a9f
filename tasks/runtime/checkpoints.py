"""Weights and checkpoints the user names: read as data, checked against the network they are for,
and reported in one line when they do not fit."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from hydra.utils import instantiate
from torch import Tensor, nn


def state_dict_from_file(path: Path, argument: str = "task.pretrained") -> dict[str, Tensor]:
    """A plain state_dict, or a Lightning checkpoint's (with its ``net.`` prefix removed)."""
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's message runs over many lines of weights_only advice: the type says enough
        raise ValueError(
            f"{argument}: {path} is not a readable torch file of tensors "
            f"({type(error).__name__}); save net.state_dict(), not the module"
        ) from None
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
    ckpt_path: str | Path, argument: str = "ckpt_path"
) -> tuple[dict, dict[str, Tensor]]:
    """The network spec (``_target_`` and arguments) and weights of an inpainting checkpoint;
    errors name ``argument``."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument} {str(path)!r} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{argument} {str(path)!r} is not a readable checkpoint ({type(err).__name__})"
        ) from None
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
    return spec, state


def build_network(spec: dict, state: dict[str, Tensor], *, origin: str = "checkpoint") -> nn.Module:
    """``spec``'s network with ``state`` loaded (every key must fit); errors name ``origin``."""
    target = spec.get("_target_")
    try:
        net = instantiate(spec)
    except Exception as err:
        # Hydra's messages run over several lines; the first says what failed
        reason = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{origin}: its net_spec ({target}) cannot be built ({type(err).__name__}: {reason})"
        ) from None
    problems = load_state_dict_checked(net, state)
    if problems:
        raise ValueError(
            f"{origin}: weights do not fit {target} ({len(problems)} key problems, e.g. "
            f"{problems[0]})"
        )
    return net


def load_inpainting_network(
    ckpt_path: str | Path, device: str | torch.device = "cpu", argument: str = "ckpt_path"
) -> nn.Module:
    """The network of an inpainting checkpoint, rebuilt from its saved spec, in eval mode."""
    spec, state = read_inpainting_checkpoint(ckpt_path, argument)
    net = build_network(spec, state, origin=f"{argument} {str(ckpt_path)!r}")
    return net.to(device).eval()
