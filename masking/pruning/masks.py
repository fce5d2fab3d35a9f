"""Hadamard weight masks attached as ``torch.nn.utils.parametrize`` parametrizations.

``module.weight`` becomes ``original ⊙ mask`` computed through the core ``mask_product`` on every
access; the mask is stored at its granularity in a :class:`~masking.pruning.estimators.MaskSource`
(a channel mask is one vector per coupled group, shared by every parameter of the group, never a
float copy of each weight). deepcopy, ``state_dict`` and DDP work as for any parametrization, and —
unlike plain parametrize — so does pickling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..kernels import ops
from .estimators import MaskSource
from .granularity import Granularity


class HadamardMask(nn.Module):
    """Parametrization ``weight ↦ weight ⊙ expand(source.mask())``.

    Args:
        source: the mask at its granularity (may be shared with other parameters).
        granularity: how ``source``'s mask maps onto this parameter.
        dim, rows, channels: for channel masks, the parameter's channel dimension and, entry for
            entry, which of its rows belong to which channel of the source (rows not listed keep 1).
        first: whether this parameter draws the source's random sample for a forward pass (one
            member per source does, so coupled parameters share a hard-concrete sample).
        transposed: the parameter is stored as ``(in, out)`` (Hugging Face's ``Conv1D``, see
            :mod:`masking.pruning.layout`): ``source`` and ``granularity`` describe its
            ``(out, in)`` view, and the expanded mask is applied transposed.
    """

    def __init__(
        self,
        source: MaskSource,
        granularity: Granularity,
        *,
        dim: int = 0,
        rows: Tensor | None = None,
        channels: Tensor | None = None,
        first: bool = True,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        if transposed and granularity.structured:
            raise ValueError(f"granularity {granularity} cannot mask a transposed (in, out) weight")
        self.source = source
        self.granularity = granularity
        self.dim = dim
        self.first = first
        self.transposed = transposed
        self.identity = rows is None
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("channels", channels, persistent=False)

    def expand(self, mask: Tensor, weight: Tensor) -> Tensor:
        if not self.identity:  # a group member whose rows map onto some of the group's channels
            size = weight.shape[self.dim]
            picked = mask.index_select(0, self.channels)
            mask = torch.ones(size, dtype=mask.dtype, device=mask.device).index_copy(
                0, self.rows, picked
            )
        return self.granularity.expand(mask, weight.shape, dim=self.dim)

    def forward(self, weight: Tensor) -> Tensor:
        view = weight.t() if self.transposed else weight  # the (out, in, ...) view masks are on
        own = view if self.granularity.elementwise else None
        mask = self.source.mask(own, self.first and self.training)
        mask = self.expand(mask, view).to(weight.dtype)
        # the product keeps the stored layout: a transposed weight takes the mask's transpose
        return ops.mask_product(weight, mask.t() if self.transposed else mask)

    def extra_repr(self) -> str:
        dim = f", dim={self.dim}" if self.granularity.structured else ""
        transposed = ", transposed=True" if self.transposed else ""
        return f"granularity={str(self.granularity)!r}{dim}{transposed}"


def attach(module: nn.Module, name: str, mask: HadamardMask) -> None:
    """Register ``mask`` on ``module.<name>`` and keep the module picklable."""
    parametrize.register_parametrization(module, name, mask, unsafe=True)
    _make_picklable(module)


def masked_tensors(model: nn.Module) -> list[tuple[str, nn.Module, str, HadamardMask]]:
    """Every ``(module name, module, tensor name, mask)`` of this package's masks in ``model``."""
    found = []
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name, plist in module.parametrizations.items():
            found.extend(
                (module_name, module, tensor_name, p) for p in plist if isinstance(p, HadamardMask)
            )
    return found


def mask_sources(model: nn.Module) -> list[MaskSource]:
    """The distinct mask sources in ``model``, in attachment order."""
    seen: dict[int, MaskSource] = {}
    for *_, mask in masked_tensors(model):
        seen.setdefault(id(mask.source), mask.source)
    return list(seen.values())


def bake(model: nn.Module) -> nn.Module:
    """Replace every masked tensor by ``weight ⊙ mask`` (evaluation mode) and drop the masks."""
    training = model.training
    model.eval()
    with torch.no_grad():
        for _, module, tensor_name, _ in masked_tensors(model):
            if parametrize.is_parametrized(module, tensor_name):
                parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=True)
    return model.train(training)


# ----------------------------------------------------------------------------- pickling support
# torch refuses to pickle parametrized modules (their class is created at run time). We pickle them
# as their original class plus their state, and re-inject the parametrized properties on load.


def _make_picklable(module: nn.Module) -> None:
    cls = type(module)
    if cls.__dict__.get("_masking_picklable"):
        return
    cls.__reduce_ex__ = _reduce_parametrized  # type: ignore[method-assign]
    cls._masking_picklable = True  # type: ignore[attr-defined]


def _reduce_parametrized(self: nn.Module, protocol: int) -> tuple[Any, ...]:
    base = type(self).__bases__[0]
    return _rebuild_parametrized, (base, self.__dict__)


def _rebuild_parametrized(base: type[nn.Module], state: dict[str, Any]) -> nn.Module:
    module = base.__new__(base)
    module.__dict__.update(state)
    parametrize._inject_new_class(module)
    for tensor_name in module.parametrizations:
        parametrize._inject_property(module, tensor_name)
    _make_picklable(module)
    return module
