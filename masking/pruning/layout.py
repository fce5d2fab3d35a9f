"""The ``(out, in, ...)`` view every weight mask of this package is defined on.

Granularities, estimators, n:m groups and one-shot scores all read a weight as ``nn.Linear`` and
``nn.Conv*`` store it: output features first, then input features (and kernel positions). Hugging
Face's ``Conv1D`` (GPT-2's fused projections, ``transformers.pytorch_utils.Conv1D``) is a linear
layer that stores its weight the other way round, ``(in, out)``; it is recognised by its class name
and a 2-D weight (``transformers`` is never imported here) and read through its transpose. A mask is
therefore computed on the view and applied to the stored weight transposed back, so an n:m group of
a ``Conv1D`` runs along its input features (dim 0 of the stored weight), as it does for
``nn.Linear``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["out_in_view", "stores_transposed"]


def stores_transposed(module: nn.Module) -> bool:
    """Whether ``module`` stores its weight as ``(in, out)``: Hugging Face's ``Conv1D`` (or a
    subclass, such as the class a parametrization gives it)."""
    if not any(cls.__name__ == "Conv1D" for cls in type(module).__mro__):
        return False
    plists = getattr(module, "parametrizations", None)
    if plists is not None and "weight" in plists:
        weight = plists["weight"].original  # not module.weight, which would run the mask
    else:
        weight = getattr(module, "weight", None)
    return isinstance(weight, Tensor) and weight.ndim == 2


def out_in_view(module: nn.Module, weight: Tensor | None = None) -> Tensor:
    """``weight`` (default ``module.weight``) as ``(out, in, ...)``: a view, so writing to it writes
    the weight."""
    weight = module.weight if weight is None else weight
    return weight.t() if stores_transposed(module) else weight
