"""Private: pure-torch references, Triton kernels (imported lazily) and the dispatch between them."""

from .dispatch import backend, get_backend, set_backend

__all__ = ["backend", "get_backend", "set_backend"]
