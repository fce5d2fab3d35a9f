"""Pure-PyTorch references of every fast op: the CPU path and the test oracle of the Triton kernels."""

from __future__ import annotations

import torch
from torch import Tensor


def mask_product(x: Tensor, mask: Tensor) -> Tensor:
    """``x ⊙ mask`` in ``x``'s dtype and layout; ``mask`` broadcasts to ``x``.

    A floating-point mask of another dtype is first cast to ``x``'s: torch's mixed-dtype multiply
    (a bf16 ``x`` and an fp32 mask) is several times slower on CPU than the cast and a same-dtype
    multiply together. Bool and uint8 masks are read as they are, never converted into a temporary.
    """
    if mask.is_floating_point() and mask.dtype != x.dtype:
        mask = mask.to(x.dtype)
    return torch.mul(x, mask, out=torch.empty_like(x))


def sum_to_shape(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum ``t`` over the dimensions along which a tensor of ``shape`` was broadcast to it."""
    lead = t.dim() - len(shape)
    dims = list(range(lead)) + [
        lead + i for i, s in enumerate(shape) if s == 1 and t.shape[lead + i] != 1
    ]
    return t.sum(dim=dims, keepdim=True).reshape(shape) if dims else t


def expand_groups(scale: Tensor, channels: int) -> Tensor:
    """Broadcast a per-group ``(B, G, H, W)`` tensor over ``channels`` (``(B, 1, H, W)`` stays as is)."""
    groups = scale.shape[1]
    return scale if groups == 1 else scale.repeat_interleave(channels // groups, dim=1)


def pconv_epilogue_(out: Tensor, scale: Tensor, valid: Tensor, bias: Tensor | None) -> Tensor:
    """In place: ``out = out · scale + bias · valid`` for a bias-free convolution result ``out``.

    ``out`` is ``(B, C_out, H, W)`` in any memory layout; ``scale`` the fp32 ``(B, G, H, W)``
    ``window_size / valid_count`` (0 where nothing is valid) and ``valid`` the matching 0/1 new mask,
    for ``G`` channel groups. Low-precision outputs are rescaled in fp32 so that no intermediate
    overflows. Two streaming passes: the windows wholly inside a hole must come out 0, not the bias,
    and no single torch op takes the output, the ratio, the bias and the new mask at once.
    """
    s = expand_groups(scale, out.shape[1])
    acc = out if full_precision(out) else out.float()
    acc.mul_(s.to(acc.dtype))
    if bias is not None:
        v = expand_groups(valid, out.shape[1])
        acc.addcmul_(bias.view(1, -1, 1, 1).to(acc.dtype), v.to(acc.dtype))
    return acc if acc is out else out.copy_(acc)


def full_precision(t: Tensor) -> bool:
    """fp32 or fp64: elementwise work runs in the tensor's own dtype."""
    return t.dtype in (torch.float32, torch.float64)


_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


def pack_bits(mask: Tensor) -> Tensor:
    """Bool/0-1 ``mask`` packed 8 entries per uint8 along its last dimension, least significant bit
    first; the last dimension becomes ``ceil(L / 8)``."""
    length = mask.shape[-1]
    padded = torch.zeros(
        *mask.shape[:-1], -(-length // 8) * 8, dtype=torch.uint8, device=mask.device
    )
    padded[..., :length] = mask.ne(0)
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=mask.device)
    return (padded.view(*mask.shape[:-1], -1, 8) * weights).sum(-1, dtype=torch.uint8)


def unpack_bits(bits: Tensor, length: int) -> Tensor:
    """The bool mask ``pack_bits`` packed, its last dimension ``length``."""
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    unpacked = (bits.unsqueeze(-1) & weights).ne(0)
    return unpacked.flatten(-2)[..., :length]


def mask_product_packed(x: Tensor, bits: Tensor, length: int) -> Tensor:
    """``x ⊙ unpack_bits(bits, length)``, the mask broadcasting to ``x``."""
    return mask_product(x, unpack_bits(bits, length))
