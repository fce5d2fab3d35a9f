"""Reusable CPU scratch buffers for temporaries that live only inside one op call.

PyTorch's CPU allocator hands large blocks back to the operating system, so every fresh temporary of
a few megabytes is page-faulted in again, a cost of the same order as the elementwise pass that
fills it. The masked input of a partial convolution and the rescaled gradient of its backward are
such temporaries: they are created, read by one convolution and dropped. This module keeps a few of
them per thread, bounded in bytes, so repeated calls reuse warm memory. It holds no information
about any input (nothing to invalidate) and the buffers never escape the op that borrowed them.
CUDA tensors do not use it: the CUDA caching allocator already reuses memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor

from .dispatch import traced

MAX_BYTES = 256 * 2**20
MAX_BUFFERS = 4


class _Pool(threading.local):
    def __init__(self) -> None:
        self.buffers: OrderedDict[tuple, Tensor] = OrderedDict()


_pool = _Pool()


def scratch_like(t: Tensor, slot: str) -> Tensor:
    """An uninitialised tensor shaped like ``t`` (same dtype and strides), reused across calls.

    ``slot`` names the use, so two temporaries alive at the same time never share memory. The caller
    must not let the result outlive its own call.
    """
    nbytes = t.numel() * t.element_size()
    # Only eager CPU tensors: the fake and functional tensors seen while tracing get an ordinary
    # allocation that the tracer can follow.
    if traced(t) or t.device.type != "cpu" or nbytes > MAX_BYTES or not _is_dense(t):
        return torch.empty_like(t)
    # a buffer made under torch.inference_mode is an inference tensor, which may not be written
    # outside it (and an ordinary one may not be handed out inside it): one pool for each
    key = (slot, tuple(t.shape), t.stride(), t.dtype, torch.is_inference_mode_enabled())
    buffers = _pool.buffers
    buf = buffers.pop(key, None)
    if buf is None:
        buf = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
    buffers[key] = buf  # most recently used last
    total = sum(b.numel() * b.element_size() for b in buffers.values())
    while len(buffers) > MAX_BUFFERS or total > MAX_BYTES:
        _, old = buffers.popitem(last=False)
        total -= old.numel() * old.element_size()
    return buf


def clear() -> None:
    """Release this thread's buffers."""
    _pool.buffers.clear()


def _is_dense(t: Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)
