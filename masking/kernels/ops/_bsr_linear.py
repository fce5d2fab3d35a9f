"""``masking::bsr_linear``: ``x @ Wᵀ`` for a weight in block-sparse rows, for serving baked sparse
weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..dispatch import run_kernel


@torch.library.custom_op("masking::bsr_linear", mutates_args=())
def bsr_linear(x: Tensor, crow: Tensor, col: Tensor, values: Tensor, out_features: int) -> Tensor:
    """``x @ Wᵀ`` for ``W`` in block-sparse rows: int32 ``crow``/``col`` indices and ``(nnz, b, b)``
    ``values``. Inference only (no autograd formula); the reference densifies the blocks."""
    out = run_kernel("bsr_linear", x, crow, col, values, out_features)
    if out is not None:
        return out
    shape = (out_features, x.shape[1])
    # the indices come from to_sparse_bsr, so the invariants hold; checking them would cost a pass
    weight = torch.sparse_bsr_tensor(
        crow.long(), col.long(), values, shape, check_invariants=False
    ).to_dense()
    return F.linear(x, weight)


@bsr_linear.register_fake
def _(x, crow, col, values, out_features):
    return x.new_empty(x.shape[0], out_features)
