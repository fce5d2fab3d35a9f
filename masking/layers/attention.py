"""Multi-head attention whose heads may have been pruned: the inner width ``num_heads · head_dim``
need not equal the model width.

``torch.nn.MultiheadAttention`` ties its projected width to ``embed_dim``, so a copy with fewer heads
cannot be expressed with it. :class:`SlimMultiheadAttention` keeps its calling convention (``query,
key, value`` in, ``(output, weights)`` out, the same mask arguments, ``batch_first``) and its
parameter layout (a fused ``in_proj_weight`` of q, k and v rows, an ``out_proj`` linear), with
``head_dim`` stored rather than derived, so head compaction (``masking.pruning.transformer``) can put
it where an ``nn.MultiheadAttention`` was and the model keeps working unchanged. Queries and keys
may be narrower or wider per head than values (``head_dim`` and ``value_dim``): what compaction of
head dimensions leaves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SlimMultiheadAttention"]

# Up to this many keys, attention on the CPU multiplies out its scores rather than calling
# scaled_dot_product_attention: at a ViT's 17 tokens (batch 32, 8 heads of 24) 1.12 against
# 1.55 ms for the whole module on 2 cores; from about 128 keys on the fused kernel is faster.
EXPLICIT_SCORES_UP_TO = 64
# With values narrower or wider than queries and keys (head features pruned unevenly) the CPU's
# scaled_dot_product_attention leaves its fused kernel: at 197 tokens (batch 8, 6 heads, width
# 384) the module took 11.9 ms at 31:33 query/key:value features against 8.0 ms at 32:32, and
# 10.9 ms with the scores multiplied out (benchmarks/bench_attention_widths.py). Such heads always
# multiply out their scores on the CPU.


class SlimMultiheadAttention(nn.Module):
    """Scaled dot-product attention over ``num_heads`` heads of ``head_dim`` features each.

    Args:
        embed_dim: the model width (of query, key, value and of the output).
        num_heads: the number of heads (at least 1).
        head_dim: features per head of the queries and keys (the scores scale by
            ``head_dim ** -0.5``).
        value_dim: features per head of the values (default ``head_dim``); the output projection
            reads ``num_heads · value_dim`` features.
        bias: whether the in- and out-projections have biases.
        dropout: dropout on the attention weights in training.
        batch_first: inputs and outputs are ``(batch, seq, feature)`` (else ``(seq, batch,
            feature)``, as ``nn.MultiheadAttention``'s default).

    Example:
        >>> attention = SlimMultiheadAttention(32, num_heads=2, head_dim=8, batch_first=True)
        >>> x = torch.rand(4, 5, 32)
        >>> out, weights = attention(x, x, x)
        >>> out.shape, weights.shape  # weights averaged over the heads, as nn.MultiheadAttention's
        (torch.Size([4, 5, 32]), torch.Size([4, 5, 5]))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        *,
        value_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        value_dim = head_dim if value_dim is None else value_dim
        for name, value in (
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("value_dim", value_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.value_dim = value_dim
        self.dropout = float(dropout)
        self.batch_first = batch_first
        rows = num_heads * (2 * head_dim + value_dim)
        factory = {"device": device, "dtype": dtype}
        self.in_proj_weight = nn.Parameter(torch.empty(rows, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.zeros(rows, **factory)) if bias else None
        self.out_proj = nn.Linear(num_heads * value_dim, embed_dim, bias=bias, **factory)
        nn.init.xavier_uniform_(self.in_proj_weight)

    @classmethod
    def like(
        cls,
        module: nn.Module,
        num_heads: int,
        embed_dim: int | None = None,
        head_dim: int | None = None,
        value_dim: int | None = None,
    ) -> SlimMultiheadAttention:
        """An uninitialised attention with ``module``'s bias, dropout and layout (``module`` is an
        ``nn.MultiheadAttention`` or a ``SlimMultiheadAttention``), ``num_heads`` heads, and
        ``embed_dim``, ``head_dim`` and ``value_dim`` (default ``module``'s)."""
        weight = module.in_proj_weight
        head_dim = module.head_dim if head_dim is None else head_dim
        if value_dim is None:
            value_dim = getattr(module, "value_dim", module.head_dim)
        return cls(
            module.embed_dim if embed_dim is None else embed_dim,
            num_heads,
            head_dim,
            value_dim=value_dim,
            bias=module.in_proj_bias is not None,
            dropout=module.dropout,
            batch_first=module.batch_first,
            device=weight.device,
            dtype=weight.dtype,
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """As ``nn.MultiheadAttention.forward``: boolean masks mark positions that may *not* be
        attended, float masks are added to the scores; ``is_causal`` without ``attn_mask`` masks
        the future. Returns the output and, with ``need_weights``, the attention weights (averaged
        over heads with ``average_attn_weights``)."""
        fused = query is key and key is value  # self-attention: one in-projection GEMM
        unbatched = query.dim() == 2
        # (batch, seq, feature) from here on
        if unbatched:
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, _ = query.shape
        source = key.shape[1]
        heads, size, value_size = self.num_heads, self.head_dim, self.value_dim
        widths = [heads * size, heads * size, heads * value_size]
        sizes = (size, size, value_size)
        if fused:  # views of one GEMM's output, (batch, heads, seq, features) each
            projected = F.linear(query, self.in_proj_weight, self.in_proj_bias)
            q, k, v = (
                part.view(batch, length, heads, d).transpose(1, 2)
                for part, d in zip(projected.split(widths, -1), sizes)
            )
        else:
            weight = self.in_proj_weight.split(widths)
            bias = [None] * 3 if self.in_proj_bias is None else self.in_proj_bias.split(widths)
            q, k, v = (
                F.linear(x, w, b).view(batch, x.shape[1], heads, d).transpose(1, 2)
                for x, w, b, d in zip((query, key, value), weight, bias, sizes)
            )
        bias = self._score_bias(attn_mask, key_padding_mask, is_causal, batch, length, source, q)
        dropout = self.dropout if self.training else 0.0
        weights = None
        explicit = q.device.type == "cpu" and (
            source <= EXPLICIT_SCORES_UP_TO or size != value_size
        )
        if need_weights or explicit:
            scores = torch.matmul(q * size**-0.5, k.transpose(-2, -1))
            if bias is not None:
                scores = scores + bias
            probabilities = scores.softmax(-1)
            attended = torch.matmul(F.dropout(probabilities, dropout, self.training), v)
            weights = probabilities if need_weights else None
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        output = self.out_proj(attended.transpose(1, 2).reshape(batch, length, heads * value_size))
        if unbatched:
            output = output.squeeze(0)
        elif not self.batch_first:
            output = output.transpose(0, 1)
        if weights is not None:
            if average_attn_weights:
                weights = weights.mean(1)
            if unbatched:
                weights = weights.squeeze(0)
        return output, weights

    def _score_bias(
        self,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
        batch: int,
        length: int,
        source: int,
        like: Tensor,
    ) -> Tensor | None:
        """The masks as one additive ``(batch, heads, length, source)``-broadcastable bias."""
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, source, dtype=torch.bool, device=like.device).triu(1)
        bias = None
        if attn_mask is not None:
            mask = _additive(attn_mask, like.dtype)
            if mask.dim() == 3:  # (batch · heads, length, source)
                mask = mask.view(batch, self.num_heads, length, source)
            bias = mask
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, like.dtype).view(batch, 1, 1, source)
            bias = padding if bias is None else bias + padding
        return bias

    def extra_repr(self) -> str:
        value = "" if self.value_dim == self.head_dim else f", value_dim={self.value_dim}"
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"
            f"{value}, batch_first={self.batch_first}"
        )


def _additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean "may not attend" mask as 0 / -inf; a float mask as it is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)
