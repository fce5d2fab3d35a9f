"""Export a pruned model as an architecture spec plus a state_dict, and rebuild it without pruning code.

A compacted model is its dense architecture with smaller layers. ``architecture.json`` records how
to build the dense architecture (a ``_target_`` callable and its keyword arguments) and, for every
module that holds tensors, its class, tensor shapes and channel attributes after pruning;
``model.pt`` holds the state_dict, and ``inputs.pt``, when given, a few real inputs of the model (so
a deployment export can be checked on them). Loading builds the dense model, resizes each module to the
recorded shapes and loads the weights: no tracing, no pickled classes, no pruning code. An attention
whose heads were pruned is recorded as a ``masking.layers.SlimMultiheadAttention`` and built in
place of the ``nn.MultiheadAttention`` the dense architecture has.

An export directory is data, never code. :func:`load_pruned` checks the whole spec before it imports
or calls anything: every ``_target_`` (nested ones too) must be one of the project's networks
(``masking.models``, ``masking.layers``), a ``torchvision.models`` builder (or ``get_model``) or a
``torch.nn`` module, or a builder the caller passes in ``builders=``; every recorded class must come
from ``torch.nn``, ``torchvision`` or ``masking`` (or the package of a builder passed in); only the
channel attributes are set. The weights load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import layers, models
from ..io import write_atomic
from .graph import parametrized_module

__all__ = ["FORMAT_VERSION", "build_allowed", "export_pruned", "load_example_inputs", "load_pruned"]

FORMAT_VERSION = 1
ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "model.pt"
INPUTS_FILE = "inputs.pt"

# Attributes that compaction changes and layers read in forward or extra_repr.
CHANNEL_ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "groups",
    "num_features",
    "in_features",
    "out_features",
    "num_parameters",
    # head and neuron compaction (masking.pruning.transformer)
    "num_heads",
    "head_dim",
    "value_dim",  # a SlimMultiheadAttention's values per head, after head-dimension compaction
    "split_size",
    "num_attention_heads",
    "num_key_value_heads",
    "all_head_size",
    "intermediate_size",
    "hidden_size",  # hidden-width compaction (a narrower residual stream)
    "nf",
    "nx",
    "embed_dim",
    "hidden_dim",
    "embedding_dim",
)
# Sizes a Hugging Face config holds that compaction changes (recorded so that a reloaded model's
# config, and what save_pretrained writes from it, describe the smaller model).
CONFIG_ATTRIBUTES = (
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "head_dim",
)
# Attributes that are tuples of sizes (a layer norm's shape), recorded as lists.
SHAPE_ATTRIBUTES = ("normalized_shape",)
# Of those, the ones a module without tensors of its own may hold (an attention module reading its
# head count over its projection children): such a module is recorded for them alone.
_HEAD_ATTRIBUTES = frozenset(
    CHANNEL_ATTRIBUTES[CHANNEL_ATTRIBUTES.index("num_heads") : CHANNEL_ATTRIBUTES.index("nf")]
)
# Modules compaction puts in place of another class: recorded class -> (classes it replaces, how
# to build it from the replaced module and the recorded attributes).
_REPLACEMENTS: dict[str, tuple[tuple[type[nn.Module], ...], Callable[..., nn.Module]]] = {
    f"{layers.SlimMultiheadAttention.__module__}.SlimMultiheadAttention": (
        (nn.MultiheadAttention, layers.SlimMultiheadAttention),
        lambda module, attributes: layers.SlimMultiheadAttention.like(
            module,
            num_heads=attributes.get("num_heads", module.num_heads),
            embed_dim=attributes.get("embed_dim", module.embed_dim),
            head_dim=attributes.get("head_dim", module.head_dim),
            value_dim=attributes.get("value_dim"),
        ),
    ),
}

# Namespaces a ``_target_`` may be imported from: importing one of their modules runs only code of
# the project, torch or torchvision. Anything else is refused unless the caller passes the builder.
TRUSTED_NAMESPACES = ("masking.models", "masking.layers", "torchvision.models", "torch.nn")
# Where the recorded classes of an export may come from (besides the packages of passed builders).
TRUSTED_CLASS_PACKAGES = ("torch.nn", "torchvision", "masking")
_CONFIG_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")


def export_pruned(
    model: nn.Module,
    directory: str | Path,
    *,
    builder: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    example_inputs: Tensor | tuple[Tensor, ...] | None = None,
) -> Path:
    """Write ``architecture.json``, ``model.pt`` (the state_dict) and, with ``example_inputs``,
    ``inputs.pt`` into ``directory``.

    The files are written atomically, the JSON last; it records the SHA-256 of the others, so a
    directory whose files come from two different exports is refused at load time.

    Args:
        model: the pruned model (parametrizations baked in).
        directory: output folder, created if needed.
        builder: ``{"_target_": "package.module.callable", **kwargs}``: the call that builds the
            dense architecture, e.g. ``{"_target_": "torchvision.models.resnet18", "weights": None,
            "num_classes": 10}``. Must be JSON-serialisable.
        extra: anything JSON-serialisable to store alongside (metrics, pruning settings).
        example_inputs: real inputs of the model (a tensor, or the forward's tensor arguments),
            batch first, for checking a deployment export (see :func:`load_example_inputs`).

    Returns:
        ``directory`` as a ``Path``.

    Raises:
        ValueError: ``builder`` has no ``_target_``, something is not JSON-serialisable, or the model
            has parametrizations.

    Example:
        >>> import tempfile
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = export_pruned(net, tmp, builder={"_target_": "torch.nn.Identity"})
        ...     sorted(p.name for p in folder.iterdir())
        ['architecture.json', 'model.pt']
    """
    if not isinstance(builder, Mapping) or not isinstance(builder.get("_target_"), str):
        raise ValueError(
            "builder must be a mapping with a '_target_' dotted path, e.g. "
            "{'_target_': 'torchvision.models.resnet18', 'num_classes': 10}"
        )
    where = parametrized_module(model)
    if where is not None:
        raise ValueError(f"{where!r} has parametrizations; bake them before exporting")
    directory = Path(directory)
    weights = _saved(model.state_dict())
    spec = {
        "format_version": FORMAT_VERSION,
        "builder": dict(builder),
        "modules": _module_specs(model),
        "config": _config_sizes(model),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "extra": dict(extra) if extra is not None else {},
    }
    inputs = None
    if example_inputs is not None:
        tensors = (example_inputs,) if isinstance(example_inputs, Tensor) else example_inputs
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise ValueError("example_inputs must be a tensor or a tuple of tensors")
        inputs = _saved([t.detach().cpu() for t in tensors])
        spec["inputs"] = {
            "file": INPUTS_FILE,
            "sha256": hashlib.sha256(inputs).hexdigest(),
            "shapes": [list(t.shape) for t in tensors],
        }
    try:
        text = json.dumps(spec, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"builder and extra must be JSON-serialisable: {exc}") from exc
    write_atomic(directory / WEIGHTS_FILE, weights)
    if inputs is not None:
        write_atomic(directory / INPUTS_FILE, inputs)
    write_atomic(directory / ARCHITECTURE_FILE, text + "\n")
    return directory


def load_example_inputs(directory: str | Path) -> tuple[Tensor, ...] | None:
    """The real inputs an export holds (``inputs.pt``, tensors only), or ``None`` if it holds none.

    Raises ``ValueError`` when the file does not match ``architecture.json`` or is not a list of
    tensors.
    """
    directory = Path(directory)
    spec = _read_spec(directory / ARCHITECTURE_FILE)
    recorded = spec.get("inputs")
    if recorded is None:
        return None
    if not (directory / INPUTS_FILE).is_file():
        raise FileNotFoundError(f"{INPUTS_FILE} is missing from {str(directory)!r}")
    sha256 = recorded.get("sha256") if isinstance(recorded, dict) else None
    tensors = _loaded(_read_checked(directory, INPUTS_FILE, sha256), INPUTS_FILE, "cpu")
    if not isinstance(tensors, list) or not all(isinstance(t, Tensor) for t in tensors):
        raise ValueError(f"{INPUTS_FILE} in {str(directory)!r} must hold a list of tensors")
    return tuple(tensors)


def load_pruned(
    directory: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    builders: Mapping[str, Callable[..., Any]] | None = None,
) -> nn.Module:
    """Rebuild a model written by :func:`export_pruned`, in eval mode.

    The whole spec is checked first (see the module docstring: which builders and classes are
    allowed), then the builder is called, every recorded module is resized (parameters and buffers
    replaced by empty tensors of the recorded shapes and dtypes, channel attributes set), and the
    state_dict is loaded strictly. The result computes exactly what the exported model computed.

    Args:
        directory: the folder holding ``architecture.json`` and ``model.pt``.
        map_location: device to load onto.
        builders: your own builders, by the ``_target_`` string the export records, e.g.
            ``{"mypackage.nets.MyNet": MyNet}``; they are called instead of importing anything.
            Classes from their packages (and from the packages a builder lists in its
            ``module_packages`` attribute) may then appear in the recorded modules.

    Returns:
        The slim model, in eval mode, on ``map_location``.

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: a file is unreadable or from another export, the format version is unknown, a
            ``_target_``, recorded class or attribute is not allowed (naming the file, the value and
            how to allow it), or the recorded modules or weights do not fit the builder's model
            (naming the key).
        ImportError: a ``_target_`` in an allowed namespace does not exist.
    """
    builders = _check_builders(builders)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no exported model at {str(directory)!r}: not a directory")
    paths = {name: directory / name for name in (ARCHITECTURE_FILE, WEIGHTS_FILE)}
    for name, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{name} is missing from {str(directory)!r}")
    spec = _read_spec(paths[ARCHITECTURE_FILE])
    weights = _read_checked(directory, WEIGHTS_FILE, spec["weights_sha256"])
    where = f"{ARCHITECTURE_FILE} in {str(directory)!r}"
    factories = _resolve_builder(spec["builder"], builders, where)
    _check_modules(spec["modules"], builders, where)
    sizes = spec.get("config", {})  # exports before it was recorded have none
    if not isinstance(sizes, dict) or not all(
        key in CONFIG_ATTRIBUTES and _is_size(value) for key, value in sizes.items()
    ):
        raise ValueError(
            f"{where}: 'config' must map some of {', '.join(CONFIG_ATTRIBUTES)} to sizes, got "
            f"{sizes!r}"
        )
    device = torch.device(map_location)
    model = _build(spec["builder"], factories)
    # builder's tensor -> (it, its replacement): a tie survives; holding it keeps its id unique
    resized: dict[int, tuple[Tensor, Tensor]] = {}
    for name, module_spec in spec["modules"].items():
        _resize(model, name, module_spec, device, resized)
    config = getattr(model, "config", None)
    for key, value in sizes.items():
        if config is not None:
            setattr(config, key, value)
    model.to(device)
    state = _loaded(weights, WEIGHTS_FILE, device)
    _check_state(model, state)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _saved(payload: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _read_checked(directory: Path, name: str, sha256: Any) -> bytes:
    """The bytes of ``directory/name``, which must hash to what ``architecture.json`` recorded."""
    data = (directory / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(
            f"{name} in {str(directory)!r} does not match {ARCHITECTURE_FILE} "
            "(corrupted, or written by another export)"
        )
    return data


def _loaded(data: bytes, name: str, device: Any) -> Any:
    """Tensors and plain values only (``weights_only``): a pickled call is refused, not run."""
    try:
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{name} cannot be read: {type(exc).__name__}") from exc


def _module_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    specs: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        params = dict(module.named_parameters(recurse=False))
        buffers = dict(module.named_buffers(recurse=False))
        attributes = {
            attr: getattr(module, attr)
            for attr in CHANNEL_ATTRIBUTES
            if _is_size(getattr(module, attr, None))
        }
        attributes.update(
            (attr, list(getattr(module, attr)))
            for attr in SHAPE_ATTRIBUTES
            if _is_shape(getattr(module, attr, None))
        )
        # a module without tensors of its own still matters when it holds head counts its forward
        # reads (GPT-2's attention: num_heads and split_size over its Conv1D children)
        if not params and not buffers and not _HEAD_ATTRIBUTES.intersection(attributes):
            continue
        specs[name] = {
            "class": _class_path(module),
            "parameters": {k: _tensor_spec(v) for k, v in params.items()},
            "buffers": {k: _tensor_spec(v) for k, v in buffers.items()},
            "attributes": attributes,
        }
    return specs


def _config_sizes(model: nn.Module) -> dict[str, int]:
    config = getattr(model, "config", None)
    return {
        key: getattr(config, key)
        for key in CONFIG_ATTRIBUTES
        if config is not None and _is_size(getattr(config, key, None))
    }


def _class_path(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _tensor_spec(tensor: Tensor) -> dict[str, Any]:
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise ValueError(f"{path.name} must hold a JSON object")
    version = spec.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path.name} has format_version {version!r}; this version of masking reads "
            f"{FORMAT_VERSION}"
        )
    for key, kind in (("builder", dict), ("modules", dict), ("weights_sha256", str)):
        if not isinstance(spec.get(key), kind):
            raise ValueError(f"{path.name} lacks {key!r}")
    return spec


def _check_builders(builders: Any) -> dict[str, Callable[..., Any]]:
    if builders is None:
        return {}
    if not isinstance(builders, Mapping) or not all(
        isinstance(k, str) and callable(v) for k, v in builders.items()
    ):
        raise ValueError(
            "builders must map _target_ strings to callables, e.g. "
            f"{{'mypackage.MyNet': MyNet}}, got {builders!r}"
        )
    return dict(builders)


def _configs(value: Any) -> Iterator[dict[str, Any]]:
    """Every mapping with a ``_target_`` in a builder config, outermost first."""
    if isinstance(value, dict):
        if "_target_" in value:
            yield value
        for item in value.values():
            yield from _configs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _configs(item)


def _resolve_builder(
    builder: dict[str, Any], builders: dict[str, Callable[..., Any]], where: str
) -> dict[str, Callable[..., Any]]:
    """Check every ``_target_`` of the builder config and return ``_target_`` -> callable."""
    if not isinstance(builder.get("_target_"), str):
        raise ValueError(f"{where}: builder lacks a '_target_' dotted path")
    factories: dict[str, Callable[..., Any]] = {}
    for config in _configs(builder):
        target = config["_target_"]
        if not isinstance(target, str):
            raise ValueError(f"{where}: _target_ must be a dotted path, got {target!r}")
        if config.get("_partial_"):
            raise ValueError(
                f"{where}: builder {target!r} has _partial_: true; it must build the model itself"
            )
        if not isinstance(config.get("_args_", []), list):
            raise ValueError(f"{where}: _args_ of {target!r} must be a list")
        if target not in factories:
            factories[target] = _resolve(target, builders, where)
    return factories


def _resolve(target: str, builders: dict[str, Callable[..., Any]], where: str) -> Callable:
    if target in builders:
        return builders[target]
    refusal = ValueError(
        f"{where}: _target_ {target!r} is not allowed; a network described in a file is built "
        "only from masking.models, masking.layers, torchvision.models builders and torch.nn "
        f"modules (to build your own, trust it: builders={{{target!r}: <the callable>}} in "
        f"Python, trusted_builders=[{target}] on the command line)"
    )
    parts = target.split(".")
    trusted = any(
        parts[: len(space.split("."))] == space.split(".") for space in TRUSTED_NAMESPACES
    )
    if not trusted or not all(part.isidentifier() for part in parts):
        raise refusal
    factory = _import_target(target)
    if _allowed_factories().get(id(factory)) is not factory:
        raise refusal
    return factory


def _import_target(target: str) -> Any:
    """The object at a dotted path inside a trusted namespace: the longest importable module
    prefix, then attributes."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ImportError(f"builder _target_ {target!r} cannot be imported")


@cache
def _allowed_factories() -> dict[int, Callable[..., Any]]:
    """id -> callable for every builder an export may name (reached by any of its paths)."""
    import torchvision.models  # imported on first load only: it takes a while and is rarely needed

    allowed: list[Any] = [getattr(models, name) for name in models.__all__]
    allowed += [getattr(layers, name) for name in layers.__all__]
    allowed += [
        value
        for value in vars(nn).values()
        if isinstance(value, type) and issubclass(value, nn.Module)
    ]
    allowed.append(torchvision.models.get_model)
    allowed += [torchvision.models.get_model_builder(n) for n in torchvision.models.list_models()]
    return {id(factory): factory for factory in allowed if callable(factory)}


def _check_modules(
    modules: dict[str, Any], builders: dict[str, Callable[..., Any]], where: str
) -> None:
    """Recorded classes from trusted packages, channel attributes only, valid tensor specs."""
    packages = {*TRUSTED_CLASS_PACKAGES, *(_package(b) for b in builders.values())}
    # a builder may name the packages its modules come from (a Hugging Face model's classes)
    packages |= {p for b in builders.values() for p in getattr(b, "module_packages", ())}
    packages -= {""}
    for name, spec in modules.items():
        if not isinstance(spec, dict) or not all(
            isinstance(spec.get(key, {}), dict) for key in ("attributes", "parameters", "buffers")
        ):
            raise ValueError(f"{where}: module {name!r} is not recorded as export_pruned writes")
        cls = spec.get("class")
        if not (isinstance(cls, str) and any(cls.startswith(p + ".") for p in packages)):
            raise ValueError(
                f"{where}: module {name!r} is recorded as class {cls!r}, which is not from "
                f"{', '.join(sorted(packages))} (pass the builder that makes it in builders=)"
            )
        for attr, value in spec.get("attributes", {}).items():
            shape = attr in SHAPE_ATTRIBUTES and isinstance(value, list) and _is_shape(value)
            if not (shape or (attr in CHANNEL_ATTRIBUTES and _is_size(value))):
                raise ValueError(
                    f"{where}: {name}.{attr} = {value!r} is not a channel attribute "
                    f"({', '.join(CHANNEL_ATTRIBUTES)}) with an int value, or a shape "
                    f"({', '.join(SHAPE_ATTRIBUTES)}) with a list of them"
                )
        for kind in ("parameters", "buffers"):
            for key, tensor in spec.get(kind, {}).items():
                recorded = tensor if isinstance(tensor, dict) else {}
                shape = recorded.get("shape")
                dtype = getattr(torch, str(recorded.get("dtype")), None)
                sizes = isinstance(shape, list) and all(_is_size(n) for n in shape)
                if not (sizes and isinstance(dtype, torch.dtype)):
                    raise ValueError(
                        f"{where}: {name}.{key} must record a list of sizes and a torch dtype, "
                        f"got {tensor!r}"
                    )


def _package(obj: Any) -> str:
    return (getattr(obj, "__module__", None) or "").partition(".")[0]


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple | list) and all(_is_size(n) for n in value)


def _build(builder: dict[str, Any], factories: dict[str, Callable[..., Any]]) -> nn.Module:
    model = _instantiate(builder, factories)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"builder {builder['_target_']!r} returned a {type(model).__name__}, not an nn.Module"
        )
    return model


def _instantiate(config: dict[str, Any], factories: dict[str, Callable[..., Any]]) -> Any:
    """Call ``_target_`` with the other keys as keyword arguments (``_args_`` positional); nested
    mappings with a ``_target_`` are built first. The subset of Hydra's convention that a network
    config uses, without importing Hydra. ``factories`` holds the checked callables."""
    target = config["_target_"]
    args = [_maybe_instantiate(v, factories) for v in config.get("_args_", [])]
    kwargs = {
        k: _maybe_instantiate(v, factories) for k, v in config.items() if k not in _CONFIG_KEYS
    }
    try:
        return factories[target](*args, **kwargs)
    except Exception as exc:
        first_line = next(iter(str(exc).splitlines()), "")
        raise ValueError(f"builder {target!r} failed: {type(exc).__name__}: {first_line}") from exc


def _maybe_instantiate(value: Any, factories: dict[str, Callable[..., Any]]) -> Any:
    if isinstance(value, dict) and "_target_" in value:
        return _instantiate(value, factories)
    if isinstance(value, list):
        return [_maybe_instantiate(v, factories) for v in value]
    return value


def _resize(
    model: nn.Module,
    name: str,
    spec: dict[str, Any],
    device: torch.device,
    resized: dict[int, tuple[Tensor, Tensor]],
) -> None:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(
            f"architecture.json records module {name!r}, which the builder's model lacks"
        ) from None
    replacement = _REPLACEMENTS.get(spec.get("class"))
    if replacement is not None and _class_path(module) != spec["class"]:
        replaced, make = replacement
        if isinstance(module, replaced):
            module = make(module, spec.get("attributes", {}))
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module)
    if _class_path(module) != spec.get("class"):
        raise ValueError(
            f"module {name!r} is a {_class_path(module)} in the builder's model, "
            f"{spec.get('class')} in architecture.json"
        )
    for attr, value in spec.get("attributes", {}).items():
        setattr(module, attr, tuple(value) if attr in SHAPE_ATTRIBUTES else value)
    for kind in ("parameters", "buffers"):
        for key, tensor_spec in spec.get(kind, {}).items():
            current = getattr(module, key, None)
            if not isinstance(current, Tensor):
                raise ValueError(
                    f"{name}.{key} is recorded but the builder's model has no such tensor"
                )
            dtype = getattr(torch, tensor_spec["dtype"])
            if list(current.shape) == tensor_spec["shape"] and current.dtype == dtype:
                continue  # kept as built: a tensor tied to another (GPT-2's lm_head) stays tied
            empty = torch.empty(tensor_spec["shape"], dtype=dtype, device=device)
            _, again = resized.get(id(current), (None, None))
            if again is not None and list(again.shape) == tensor_spec["shape"]:
                setattr(module, key, again)  # tied in the builder's model (an LM head): still tied
            elif isinstance(current, nn.Parameter):
                new = nn.Parameter(empty, requires_grad=current.requires_grad)
                resized[id(current)] = (current, new)
                setattr(module, key, new)
            elif key in module._non_persistent_buffers_set:
                if list(current.shape) != tensor_spec["shape"]:
                    raise ValueError(
                        f"{name}.{key} is a non-persistent buffer whose shape changed; it cannot be "
                        "restored"
                    )
            else:
                setattr(module, key, empty)


def _check_state(model: nn.Module, state: Any) -> None:
    if not isinstance(state, Mapping):
        raise ValueError(f"{WEIGHTS_FILE} does not hold a state_dict")
    expected = model.state_dict()
    for key in expected:
        if key not in state:
            raise ValueError(f"{WEIGHTS_FILE} lacks {key!r}")
    for key, value in state.items():
        if key not in expected:
            raise ValueError(f"{WEIGHTS_FILE} has {key!r}, which the rebuilt model lacks")
        if isinstance(value, Tensor) and value.shape != expected[key].shape:
            raise ValueError(
                f"{key!r} has shape {tuple(value.shape)} in {WEIGHTS_FILE} but "
                f"{tuple(expected[key].shape)} in the rebuilt model"
            )


def build_allowed(
    config: Mapping[str, Any],
    *,
    where: str,
    builders: Mapping[str, Callable[..., Any]] | None = None,
) -> nn.Module:
    """The network a ``{"_target_": ..., **kwargs}`` config from a file describes, built only if
    every ``_target_`` in it is allowed (the same allow-list as :func:`load_pruned`); nothing is
    imported or called before the whole config is checked. Errors name ``where``.

    Example:
        >>> build_allowed({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1},
        ...               where="example")
        Linear(in_features=2, out_features=1, bias=True)
    """
    if not isinstance(config, Mapping):
        raise ValueError(
            f"{where}: the network spec must be a mapping, got {type(config).__name__}"
        )
    config = dict(config)
    factories = _resolve_builder(config, _check_builders(builders), where)
    try:
        return _build(config, factories)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from error
