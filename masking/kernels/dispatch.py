"""Chooses between the Triton kernels and the pure-torch reference.

``auto`` (default) uses Triton for CUDA tensors when it imports, the reference otherwise. ``reference``
never uses Triton. ``triton`` also sends CPU tensors to Triton, which only works under
``TRITON_INTERPRET=1`` and exists so tests can run the kernels without a GPU. Set the backend with
``set_backend`` or the ``MASKING_KERNELS`` environment variable.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch
from torch import Tensor

BACKENDS = ("auto", "reference", "triton")


def _checked(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


_backend = _checked(os.environ.get("MASKING_KERNELS", "auto"))
# why Triton failed in "auto" mode; the reference serves from then on
_triton_broken: str | None = None


def get_backend() -> str:
    return _backend


def set_backend(backend: str) -> None:
    global _backend
    _backend = _checked(backend)


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Use ``name`` inside the block, restoring the previous backend after it."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@functools.cache
def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_kernels(t: Tensor) -> ModuleType | None:
    """The Triton kernel module if it should handle ``t``, else ``None`` (use the reference)."""
    if _backend == "reference" or (_backend == "auto" and not t.is_cuda):
        return None
    if not triton_importable():
        if _backend == "triton":
            raise RuntimeError("backend 'triton' was requested but triton is not installed")
        return None
    from . import _triton

    return _triton


def traced(t: Tensor) -> bool:
    """Whether ``t`` stands for values being traced (``torch.compile``, ``torch.export``) instead of
    holding them: code may not branch on its values, and no Triton kernel can run on it.

    Tracing tensors are subclasses (fake and functional tensors); a parameter holds real values.
    """
    if torch.compiler.is_compiling():
        return True
    return type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter)


def run_kernel(name: str, *args):
    """Call Triton kernel ``name`` when it should handle ``args[0]``; ``None`` means use the reference.

    The ops call it from their implementations, which run on real tensors, and from autograd
    formulas, which ``torch.compile`` traces: there it declines, so the traced graph records the
    reference (whose own ops dispatch to Triton when the graph runs).

    In ``auto`` mode a kernel that fails to compile or launch (a GPU or driver Triton does not
    support) is reported once and Triton is not tried again in this process; with the ``triton``
    backend forced, the error propagates.
    """
    global _triton_broken
    if (_triton_broken is not None and _backend == "auto") or traced(args[0]):
        return None
    kernels = triton_kernels(args[0])
    if kernels is None:
        return None
    try:
        return getattr(kernels, name)(*args)
    except Exception as err:  # any compiler or driver failure: the reference serves instead
        if _backend == "triton":
            raise
        _triton_broken = f"{type(err).__name__}: {err}".splitlines()[0]
        warnings.warn(
            f"Triton kernel {name} failed ({_triton_broken}); using the PyTorch reference from now on",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
