"""Structured pruning of transformer blocks: attention heads and MLP neurons, physically removed.

A transformer has three kinds of structure that can go without changing the model's interface:

- **heads**: one unit per attention head, or per key/value group under grouped-query attention
  (the query heads that share a key/value head go with it, so the grouping survives);
- **head_dims**: one unit per feature of a head's queries and keys (a query row and its key row) and
  one per feature of its values (a value row and its output-projection column), every head
  keeping as many of each as the others (``nn.MultiheadAttention``, torchvision's ViT): the heads
  stay, thinner. The mask multiplies the query row (and its bias), which takes the feature out of
  the scores exactly, and the output column, which takes the value feature out of the output;
  compaction folds the change of the ``head_dim ** -0.5`` scale into the kept query rows;
- **neurons**: one unit per MLP hidden neuron (for a gated MLP such as SwiGLU, the gate, up and down
  projections' rows and column of that neuron together);
- **hidden**: one unit per channel of the residual stream, shared by every block (torchvision's
  ``VisionTransformer`` and Llama-family LMs): the embeddings (patch, class token and positions;
  tokens) and every block's attention and MLP outputs write it; the norms, the attention and MLP
  inputs and the classifier or LM head read it. The mask multiplies the writers, so a removed
  channel is zero all along the stream, and while masked the norms take their statistics over the
  kept channels only (what the compacted, narrower norms compute).

Each head or neuron is masked where its contribution leaves the block: the input columns of the
output projection (``o_proj``, ``out_proj``, ``c_proj``, ``down_proj``, ...). Zeroing those columns
removes the unit from the output exactly, whatever the activation or attention pattern, so the
masked model and the compacted one agree. Compaction (:meth:`StructuredPruner.compact`) removes
the units' rows and columns from every projection, updates the head counts and widths in the
modules' own attributes (and, where the family's config can say it, in the config), and checks
masked ≡ compacted.

The families (recognised by structure, never by importing their libraries):

=============================  ===============================================================
attention                      modules
=============================  ===============================================================
``nn.MultiheadAttention``      fused ``in_proj_weight`` (torchvision ViT); compacted into a
                               :class:`~masking.layers.SlimMultiheadAttention`
Llama family                   ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` with ``head_dim``
                               and ``num_key_value_groups`` (Llama, Mistral, Qwen2, ...)
GPT-2                          ``c_attn`` (fused ``Conv1D``), ``c_proj``
BERT                           ``self.query``, ``self.key``, ``self.value``, ``output.dense``
=============================  ===============================================================

=============================  ===============================================================
MLP                            modules
=============================  ===============================================================
torchvision ``MLPBlock``       ``[0]`` linear, activation, dropout, ``[3]`` linear
gated (SwiGLU)                 ``gate_proj``, ``up_proj``, ``down_proj``
GPT-2                          ``c_fc``, ``c_proj`` (``Conv1D``)
BERT                           ``intermediate.dense``, ``output.dense``
=============================  ===============================================================
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_int
from ..layers.attention import SlimMultiheadAttention
from .compact import check_equivalent
from .estimators import ESTIMATORS, MagnitudeStats, MaskSource
from .granularity import ChannelGranularity
from .graph import CompactionError
from .masks import HadamardMask, attach, bake
from .schedule import SparsitySchedule, check_sparsity

__all__ = [
    "KINDS",
    "STRUCTURED_METHODS",
    "SUPPORTED_ATTENTION",
    "Structure",
    "StructuredPruner",
    "UnitGranularity",
    "find_structures",
]

KINDS = ("heads", "head_dims", "neurons", "hidden")
STRUCTURED_METHODS = ("magnitude", "taylor", "movement", "hard_concrete")
SUPPORTED_ATTENTION = (
    "torch.nn.MultiheadAttention (torchvision ViT)",
    "Llama-family attention (q_proj/k_proj/v_proj/o_proj: Llama, Mistral, Qwen2)",
    "GPT2Attention",
    "BertAttention",
)


HIDDEN_MODELS = (
    "torchvision VisionTransformer",
    "Llama-family causal LMs (Llama, Mistral, Qwen2: RMSNorm, q/k/v/o and gate/up/down)",
)
RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")


class UnitGranularity:
    """What a :class:`StructuredPruner` removes (``heads``, ``head_dims``, ``neurons``, ``hidden``
    or several joined by ``+``), in the terms the pruning reports use for a granularity."""

    structured = True  # compaction removes the units
    fixed_sparsity = None
    sparsity_kind = "units"

    def __init__(self, kinds: Iterable[str]) -> None:
        kinds = tuple(kinds)
        unknown = [kind for kind in kinds if kind not in KINDS]
        if not kinds or unknown or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds: expected some of {', '.join(KINDS)}, got {kinds!r}")
        self.kinds = tuple(kind for kind in KINDS if kind in kinds)  # one spelling per set

    @classmethod
    def parse(cls, text: str) -> UnitGranularity | None:
        """``heads``, ``head_dims``, ``neurons``, ``hidden`` or several joined by ``+``; None for
        anything else."""
        parts = text.split("+") if isinstance(text, str) else []
        if not parts or any(part not in KINDS for part in parts) or len(set(parts)) != len(parts):
            return None
        return cls(parts)

    def __str__(self) -> str:
        return "+".join(self.kinds)

    def __repr__(self) -> str:
        return f"UnitGranularity({str(self)!r})"


@dataclass(frozen=True)
class Slice:
    """Part of one parameter that belongs to a structure's units.

    ``unit[i]`` is the unit that index ``i`` along ``dim`` belongs to; every index belongs to one.
    ``macs``: whether the tensor's entries are multiply-accumulates once per token (weights of
    projections; not biases, norms or embeddings that are added).
    """

    module: nn.Module
    param: str
    dim: int
    unit: Tensor
    macs: bool = True


@dataclass
class Structure:
    """The prunable units of one attention or MLP module.

    Attributes:
        name: qualified name of the module (the attention or MLP, or the BERT layer for its MLP).
        kind: ``"heads"``, ``"head_dims"``, ``"neurons"`` or ``"hidden"``.
        family: which adapter found it (``mha``, ``llama``, ``gpt2``, ``bert``, ``mlp_block``,
            ``gated_mlp``, ``gpt2_mlp``, ``bert_mlp``).
        module: the module itself.
        size: the number of units (heads, key/value groups, head features or neurons).
        slices: every parameter part the units own (rows of the input projections, columns of the
            output projection).
        output: the slice the mask multiplies (the output projection's columns).
        heads_per_unit: query heads per unit (the grouped-query ratio; 1 for neurons).
        head_dim: query and key features per head (1 for neurons).
        value_dim: value features per head (0: as many as ``head_dim``).
        writers: further slices the mask multiplies (the hidden width's writers after ``output``).
        gates: further ``(module, param, dim, indices, their units)`` the mask multiplies at some
            indices only (a head feature's query row).
        norms: layer norms that read the units (the hidden width's), masked while pruning.
        tied: the LM head shares the token embedding's weight (re-tied after compaction).
    """

    name: str
    kind: str
    family: str
    module: nn.Module
    size: int
    slices: list[Slice]
    output: Slice
    heads_per_unit: int = 1
    head_dim: int = 1
    value_dim: int = 0
    writers: list[Slice] = field(default_factory=list)
    gates: list[tuple[nn.Module, str, int, Tensor, Tensor]] = field(default_factory=list)
    norms: list[nn.Module] = field(default_factory=list)
    tied: bool = False
    compact_fn: Callable[[Structure, Tensor, nn.Module], None] | None = field(
        default=None, repr=False
    )

    @property
    def width(self) -> int:
        """Query, key and value features of one head: its scores and weighted sum cost
        ``tokens² · width`` multiply-accumulates."""
        return self.head_dim + (self.value_dim or self.head_dim)

    def unit_params(self) -> Tensor:
        """Parameters each unit owns (removed with it)."""
        counts = torch.zeros(self.size, dtype=torch.long)
        for piece in self.slices:
            tensor = _original(piece.module, piece.param)
            per_index = tensor.numel() // tensor.shape[piece.dim]
            counts += torch.bincount(piece.unit, minlength=self.size) * per_index
        return counts

    def unit_macs(self, tokens: int) -> Tensor:
        """Multiply-accumulates each unit costs per sequence of ``tokens`` tokens: its weights once
        per token, and for heads the scores and the weighted sum (``tokens² · width`` per query
        head; ``tokens²`` per head feature)."""
        macs = torch.zeros(self.size, dtype=torch.double)
        for piece in self.slices:  # biases, norms and embeddings are additions
            tensor = _original(piece.module, piece.param)
            if piece.macs and tensor.dim() >= 2:
                per_index = tensor.numel() // tensor.shape[piece.dim]
                macs += (
                    torch.bincount(piece.unit, minlength=self.size).double() * per_index * tokens
                )
        if self.kind == "heads":
            macs += float(tokens * tokens * self.width * self.heads_per_unit)
        elif self.kind == "head_dims":
            macs += float(tokens * tokens)
        return macs

    def magnitude(self) -> Tensor:
        """L2 norm of every unit's weights over all its slices."""
        energy = torch.zeros(self.size)
        for piece in self.slices:
            tensor = _original(piece.module, piece.param).detach().float().cpu()
            dims = [d for d in range(tensor.dim()) if d != piece.dim]
            per_index = tensor.pow(2).sum(dims) if dims else tensor.pow(2)
            energy.index_add_(0, piece.unit, per_index)
        return energy.sqrt()


# ----------------------------------------------------------------------------- discovery
def _original(module: nn.Module, name: str) -> Tensor:
    plists = getattr(module, "parametrizations", None)
    if plists is not None and name in plists:
        return plists[name].original
    return getattr(module, name)


def _is_linear(module: Any) -> bool:
    return isinstance(module, nn.Linear)


def _is_conv1d(module: Any) -> bool:
    """Hugging Face's ``Conv1D`` (weight stored ``(in, out)``)."""
    return any(c.__name__ == "Conv1D" for c in type(module).__mro__) and isinstance(
        getattr(module, "nf", None), int
    )


def _blocks(index: int, block: int, count: int | None = None) -> Tensor:
    """``[0]*block + [1]*block + ...`` over ``index`` entries (``count`` blocks repeated)."""
    unit = torch.arange(index) // block
    return unit if count is None else unit % count


def _structure(name, kind, family, module, size, slices, output, **extra) -> Structure:
    return Structure(name, kind, family, module, size, slices, output, **extra)


def _check_mha(name: str, module: nn.Module) -> None:
    if getattr(module, "in_proj_weight", None) is None:
        raise ValueError(
            f"{name}: nn.MultiheadAttention with separate q/k/v weights (kdim or vdim differ from "
            "embed_dim) is not supported by head pruning"
        )
    if getattr(module, "bias_k", None) is not None or getattr(module, "add_zero_attn", False):
        raise ValueError(
            f"{name}: nn.MultiheadAttention with add_bias_kv or add_zero_attn is not supported"
        )


def _head_rows(module: nn.Module) -> tuple[Tensor, Tensor]:
    """The head of every ``in_proj_weight`` row (q, k, then v) and of every ``out_proj`` column."""
    heads, head_dim, value_dim = _mha_dims(module)
    inner = heads * head_dim
    values = _blocks(heads * value_dim, value_dim)
    return torch.cat([torch.arange(2 * inner) % inner // head_dim, values]), values


def _mha(name: str, module: nn.Module) -> Structure:
    _check_mha(name, module)
    heads, head_dim, value_dim = _mha_dims(module)
    rows, columns = _head_rows(module)
    slices = [Slice(module, "in_proj_weight", 0, rows)]
    if module.in_proj_bias is not None:
        slices.append(Slice(module, "in_proj_bias", 0, rows))
    output = Slice(module.out_proj, "weight", 1, columns)
    slices.append(output)
    return _structure(
        name,
        "heads",
        "mha",
        module,
        heads,
        slices,
        output,
        head_dim=head_dim,
        value_dim=value_dim,
        compact_fn=_compact_mha,
    )


def _mha_dims(module: nn.Module) -> tuple[int, int, int]:
    """Heads, query/key features per head and value features per head of an attention."""
    return module.num_heads, module.head_dim, getattr(module, "value_dim", module.head_dim)


def _mha_features(name: str, module: nn.Module) -> Structure:
    """The head features of an ``nn.MultiheadAttention``: units ``h · head_dim + d`` are query/key
    feature ``d`` of head ``h``, then ``heads · head_dim + h · value_dim + d`` value feature ``d``."""
    _check_mha(name, module)
    heads, head_dim, value_dim = _mha_dims(module)
    inner = heads * head_dim
    qk = torch.arange(inner)
    values = inner + torch.arange(heads * value_dim)
    rows = torch.cat([qk, qk, values])
    slices = [Slice(module, "in_proj_weight", 0, rows)]
    gates = [(module, "in_proj_weight", 0, torch.arange(inner), qk)]
    if module.in_proj_bias is not None:
        slices.append(Slice(module, "in_proj_bias", 0, rows))
        gates.append((module, "in_proj_bias", 0, torch.arange(inner), qk))
    output = Slice(module.out_proj, "weight", 1, values)
    slices.append(output)
    return _structure(
        name,
        "head_dims",
        "mha_features",
        module,
        heads * (head_dim + value_dim),
        slices,
        output,
        head_dim=head_dim,
        value_dim=value_dim,
        gates=gates,
        compact_fn=_compact_mha_features,
    )


def _llama(name: str, module: nn.Module) -> Structure:
    q, k, v, o = module.q_proj, module.k_proj, module.v_proj, module.o_proj
    head_dim = int(module.head_dim)
    if k.out_features % head_dim or q.out_features % head_dim:
        raise ValueError(f"{name}: projection widths are not multiples of head_dim={head_dim}")
    groups = k.out_features // head_dim
    query_heads = q.out_features // head_dim
    if query_heads % groups:
        raise ValueError(f"{name}: {query_heads} query heads do not split into {groups} kv groups")
    ratio = query_heads // groups
    q_unit = _blocks(q.out_features, ratio * head_dim)
    kv_unit = _blocks(k.out_features, head_dim)
    slices = []
    for proj, unit in ((q, q_unit), (k, kv_unit), (v, kv_unit)):
        slices.append(Slice(proj, "weight", 0, unit))
        if proj.bias is not None:
            slices.append(Slice(proj, "bias", 0, unit))
    output = Slice(o, "weight", 1, q_unit)
    slices.append(output)
    return _structure(
        name,
        "heads",
        "llama",
        module,
        groups,
        slices,
        output,
        heads_per_unit=ratio,
        head_dim=head_dim,
        compact_fn=_compact_llama,
    )


def _gpt2(name: str, module: nn.Module) -> Structure:
    if getattr(module, "is_cross_attention", False):
        raise ValueError(f"{name}: GPT-2 cross-attention is not supported by head pruning")
    heads, head_dim = int(module.num_heads), int(module.head_dim)
    inner = heads * head_dim
    rows = torch.arange(3 * inner) % inner // head_dim
    slices = [Slice(module.c_attn, "weight", 1, rows), Slice(module.c_attn, "bias", 0, rows)]
    output = Slice(module.c_proj, "weight", 0, _blocks(inner, head_dim))
    slices.append(output)
    return _structure(
        name,
        "heads",
        "gpt2",
        module,
        heads,
        slices,
        output,
        head_dim=head_dim,
        compact_fn=_compact_gpt2,
    )


def _bert(name: str, module: nn.Module) -> Structure:
    attention = module.self
    head_dim = int(attention.attention_head_size)
    width = attention.query.out_features
    unit = _blocks(width, head_dim)
    slices = []
    for proj in (attention.query, attention.key, attention.value):
        slices.append(Slice(proj, "weight", 0, unit))
        if proj.bias is not None:
            slices.append(Slice(proj, "bias", 0, unit))
    output = Slice(module.output.dense, "weight", 1, unit)
    slices.append(output)
    return _structure(
        name,
        "heads",
        "bert",
        module,
        width // head_dim,
        slices,
        output,
        head_dim=head_dim,
        compact_fn=_compact_bert,
    )


def _two_layer_mlp(name, module, family, first, second, second_dim) -> Structure:
    """An MLP whose hidden neurons are ``first``'s outputs and ``second``'s inputs."""
    if _is_conv1d(first):  # (in, out): neurons along dim 1
        size = _original(first, "weight").shape[1]
        slices = [Slice(first, "weight", 1, torch.arange(size))]
    else:
        size = _original(first, "weight").shape[0]
        slices = [Slice(first, "weight", 0, torch.arange(size))]
    if getattr(first, "bias", None) is not None:
        slices.append(Slice(first, "bias", 0, torch.arange(size)))
    output = Slice(second, "weight", second_dim, torch.arange(size))
    slices.append(output)
    return _structure(
        name, "neurons", family, module, size, slices, output, compact_fn=_compact_generic
    )


def _gated_mlp(name: str, module: nn.Module) -> Structure:
    size = _original(module.gate_proj, "weight").shape[0]
    unit = torch.arange(size)
    slices = []
    for proj in (module.gate_proj, module.up_proj):
        slices.append(Slice(proj, "weight", 0, unit))
        if proj.bias is not None:
            slices.append(Slice(proj, "bias", 0, unit))
    output = Slice(module.down_proj, "weight", 1, unit)
    slices.append(output)
    return _structure(
        name, "neurons", "gated_mlp", module, size, slices, output, compact_fn=_compact_generic
    )


def _is_vit(model: nn.Module) -> bool:
    """torchvision's ``VisionTransformer`` (by structure: a patch convolution, a class token, an
    encoder of blocks with ``ln_1``, ``self_attention``, ``ln_2``, ``mlp`` and a final ``ln``)."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    return (
        isinstance(getattr(model, "conv_proj", None), nn.Conv2d)
        and isinstance(getattr(model, "class_token", None), Tensor)
        and isinstance(getattr(encoder, "pos_embedding", None), Tensor)
        and isinstance(getattr(encoder, "ln", None), nn.LayerNorm)
        and isinstance(layers, nn.Sequential)
        and len(layers) > 0
        and all(
            isinstance(getattr(b, "ln_1", None), nn.LayerNorm)
            and isinstance(getattr(b, "ln_2", None), nn.LayerNorm)
            and _match(getattr(b, "self_attention", None)) == "mha"
            and _match(getattr(b, "mlp", None)) == "mlp_block"
            for b in layers
        )
        and isinstance(getattr(model, "heads", None), nn.Sequential)
        and _is_linear(model.heads[0])
    )


def _vit_hidden_parts(model: nn.Module) -> tuple[list[Slice], list[Slice], list[nn.Module]]:
    """The hidden width's writers (masked), its readers, and its layer norms."""
    width = int(model.hidden_dim)
    unit = torch.arange(width)
    conv, encoder = model.conv_proj, model.encoder

    def piece(module: nn.Module, param: str, dim: int = 0, macs: bool = True) -> Slice:
        return Slice(module, param, dim, unit, macs)

    writers = [piece(conv, "weight"), piece(model, "class_token", 2, False)]
    writers.append(piece(encoder, "pos_embedding", 2, False))
    if conv.bias is not None:
        writers.append(piece(conv, "bias"))
    readers: list[Slice] = []
    norms: list[nn.Module] = []
    for block in encoder.layers:
        attention, mlp = block.self_attention, block.mlp
        readers.append(piece(attention, "in_proj_weight", 1))
        readers.append(piece(mlp[0], "weight", 1))
        for linear in (attention.out_proj, mlp[3]):
            writers.append(piece(linear, "weight"))
            if linear.bias is not None:
                writers.append(piece(linear, "bias"))
        norms += [block.ln_1, block.ln_2]
    norms.append(encoder.ln)
    readers.append(piece(model.heads[0], "weight", 1))
    for norm in norms:
        readers += [
            piece(norm, name, 0, False)
            for name in ("weight", "bias")
            if getattr(norm, name, None) is not None
        ]
    return writers, readers, norms


def _vit_hidden(name: str, model: nn.Module) -> Structure:
    for norm in model.modules():
        if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) != 1:
            raise ValueError(f"{name or 'the model'}: a layer norm over more than the last dim")
    writers, readers, norms = _vit_hidden_parts(model)
    return _structure(
        f"{name} residual stream".strip(),
        "hidden",
        "vit_hidden",
        model,
        int(model.hidden_dim),
        writers + readers,
        writers[0],
        writers=writers[1:],
        norms=norms,
        compact_fn=_compact_vit_hidden,
    )


def _llama_base(model: nn.Module) -> nn.Module:
    """The decoder stack of a Llama-family causal LM (``model.model``), or the model itself."""
    inner = getattr(model, "model", None)
    return inner if isinstance(getattr(inner, "embed_tokens", None), nn.Embedding) else model


def _is_llama_lm(model: nn.Module) -> bool:
    base = _llama_base(model)
    layers = getattr(base, "layers", None)

    def rms(module: Any) -> bool:
        return type(module).__name__ in RMS_NORMS and isinstance(
            getattr(module, "weight", None), Tensor
        )

    return (
        isinstance(getattr(base, "embed_tokens", None), nn.Embedding)
        and isinstance(layers, nn.ModuleList)
        and len(layers) > 0
        and all(
            _match(getattr(layer, "self_attn", None)) == "llama"
            and _match(getattr(layer, "mlp", None)) == "gated_mlp"
            and rms(getattr(layer, "input_layernorm", None))
            and rms(getattr(layer, "post_attention_layernorm", None))
            for layer in layers
        )
        and rms(getattr(base, "norm", None))
        and (not hasattr(model, "lm_head") or _is_linear(model.lm_head))
    )


def _llama_hidden_parts(model: nn.Module) -> tuple[list[Slice], list[Slice], list[nn.Module]]:
    """The hidden width's writers, readers and norms in a Llama-family LM."""
    base = _llama_base(model)
    width = base.embed_tokens.embedding_dim
    unit = torch.arange(width)

    def pieces(module: nn.Module, dim: int) -> list[Slice]:
        found = [Slice(module, "weight", dim, unit)]
        if dim == 0 and getattr(module, "bias", None) is not None:
            found.append(Slice(module, "bias", 0, unit))
        return found

    writers = [Slice(base.embed_tokens, "weight", 1, unit, False)]  # a lookup, not MACs
    readers: list[Slice] = []
    norms: list[nn.Module] = []
    for layer in base.layers:
        attention, mlp = layer.self_attn, layer.mlp
        writers += pieces(attention.o_proj, 0) + pieces(mlp.down_proj, 0)
        for proj in (
            attention.q_proj,
            attention.k_proj,
            attention.v_proj,
            mlp.gate_proj,
            mlp.up_proj,
        ):
            readers += pieces(proj, 1)
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
    norms.append(base.norm)
    readers += [Slice(norm, "weight", 0, unit, False) for norm in norms]
    if hasattr(model, "lm_head"):
        readers += pieces(model.lm_head, 1)
    return writers, readers, norms


def _llama_hidden(name: str, model: nn.Module) -> Structure:
    writers, readers, norms = _llama_hidden_parts(model)
    head = getattr(model, "lm_head", None)
    base = _llama_base(model)
    return _structure(
        f"{name} residual stream".strip(),
        "hidden",
        "llama_hidden",
        model,
        base.embed_tokens.embedding_dim,
        writers + readers,
        writers[0],
        writers=writers[1:],
        norms=norms,
        tied=head is not None and head.weight is base.embed_tokens.weight,
        compact_fn=_compact_llama_hidden,
    )


class _HiddenLayerNorm(nn.LayerNorm):
    """A layer norm over the kept channels of a masked hidden width (statistics over them, the
    removed channels left at zero): what the compacted norm computes. Pruning-time only: a norm's
    class is swapped for this one and back; the mask's source is held unregistered, so the state
    dict is the norm's own."""

    _hidden_source: MaskSource

    def forward(self, x: Tensor) -> Tensor:
        keep = self._hidden_source.keep.to(x.dtype)
        count = keep.sum()
        centred = (x - (x * keep).sum(-1, keepdim=True) / count) * keep
        variance = centred.pow(2).sum(-1, keepdim=True) / count
        y = centred * torch.rsqrt(variance + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y * keep


class _HiddenRMSNorm(nn.Module):
    """A Llama-family RMSNorm (float32 statistics, ``weight · x̂`` in the input's dtype) over the
    kept channels of a masked hidden width, as :class:`_HiddenLayerNorm`."""

    _hidden_source: MaskSource
    weight: Tensor
    variance_epsilon: float

    def forward(self, x: Tensor) -> Tensor:
        keep = self._hidden_source.keep
        wide = x.to(torch.float32) * keep
        variance = wide.pow(2).sum(-1, keepdim=True) / keep.sum()
        normed = wide * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * normed.to(x.dtype) * keep.to(x.dtype)


def _mask_norms(structure: Structure, source: MaskSource) -> None:
    for norm in structure.norms:
        masked = _HiddenLayerNorm if isinstance(norm, nn.LayerNorm) else _HiddenRMSNorm
        # not children: no state, no parameters of their own
        object.__setattr__(norm, "_hidden_class", type(norm))
        object.__setattr__(norm, "_hidden_source", source)
        norm.__class__ = masked


def _unmask_norm(norm: nn.Module) -> None:
    if "_hidden_class" in norm.__dict__:
        norm.__class__ = norm.__dict__.pop("_hidden_class")
        del norm.__dict__["_hidden_source"]


def _match(module: nn.Module) -> str | None:
    """The family of an attention or MLP module, or None."""
    if isinstance(module, (nn.MultiheadAttention, SlimMultiheadAttention)):
        return "mha"
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    if all(_is_linear(getattr(module, n, None)) for n in names) and hasattr(module, "head_dim"):
        return "llama"
    if _is_conv1d(getattr(module, "c_attn", None)) and _is_conv1d(getattr(module, "c_proj", None)):
        return "gpt2"
    inner = getattr(module, "self", None)
    if (
        isinstance(inner, nn.Module)
        and all(_is_linear(getattr(inner, n, None)) for n in ("query", "key", "value"))
        and hasattr(inner, "attention_head_size")
        and _is_linear(getattr(getattr(module, "output", None), "dense", None))
    ):
        return "bert"
    if type(module).__name__ == "MLPBlock" and isinstance(module, nn.Sequential):
        linears = [m for m in module if _is_linear(m)]
        if len(linears) == 2 and _is_linear(module[0]) and _is_linear(module[3]):
            return "mlp_block"
    if all(_is_linear(getattr(module, n, None)) for n in ("gate_proj", "up_proj", "down_proj")):
        return "gated_mlp"
    if _is_conv1d(getattr(module, "c_fc", None)) and _is_conv1d(getattr(module, "c_proj", None)):
        return "gpt2_mlp"
    intermediate = getattr(getattr(module, "intermediate", None), "dense", None)
    output = getattr(getattr(module, "output", None), "dense", None)
    if _is_linear(intermediate) and _is_linear(output) and hasattr(module, "attention"):
        return "bert_mlp"
    return None


def _build(name: str, module: nn.Module, family: str) -> Structure:
    if family == "mha":
        return _mha(name, module)
    if family == "llama":
        return _llama(name, module)
    if family == "gpt2":
        return _gpt2(name, module)
    if family == "bert":
        return _bert(name, module)
    if family == "mlp_block":
        return _two_layer_mlp(name, module, family, module[0], module[3], 1)
    if family == "gated_mlp":
        return _gated_mlp(name, module)
    if family == "gpt2_mlp":
        return _two_layer_mlp(name, module, family, module.c_fc, module.c_proj, 0)
    return _two_layer_mlp(name, module, family, module.intermediate.dense, module.output.dense, 1)


def _looks_like_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return name.endswith(("Attention", "SelfAttention")) or isinstance(
        module, nn.MultiheadAttention
    )


def find_structures(
    model: nn.Module, kinds: Iterable[str] = KINDS, *, exclude: Sequence[str] = ()
) -> list[Structure]:
    """The prunable head and neuron structures of ``model``, in ``named_modules()`` order.

    Args:
        model: a torchvision ViT, a Hugging Face Llama-family, GPT-2 or BERT model, or any model
            built from the supported attention and MLP modules (see the module docstring).
        kinds: which structures to find (``heads``, ``head_dims``, ``neurons``, ``hidden``).
        exclude: qualified names (or glob patterns) of modules to leave alone.

    Raises:
        ValueError: an attention module of an unsupported class (named, with the supported list),
            head_dims on an attention other than ``nn.MultiheadAttention``, heads and head_dims
            together, or no structure at all.
    """
    kinds = tuple(kinds)
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kinds: expected entries of {', '.join(KINDS)}, got {kind!r}")
    if "heads" in kinds and "head_dims" in kinds:
        raise ValueError(
            "kinds: heads and head_dims both cut the attention's q/k/v rows; give one of them"
        )
    found: list[Structure] = []
    if "hidden" in kinds:
        if _is_vit(model):
            found.append(_vit_hidden("", model))
        elif _is_llama_lm(model):
            found.append(_llama_hidden("", model))
        else:
            raise ValueError(
                f"hidden: pruning the residual stream's width supports {'; '.join(HIDDEN_MODELS)}; "
                f"got a {type(model).__name__}"
            )
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
            inside.append(name)
            continue
        family = _match(module)
        attention = "heads" in kinds or "head_dims" in kinds
        if family is None:
            if attention and _looks_like_attention(module):
                raise ValueError(
                    f"{name or 'the model'} is a {type(module).__name__}, which head pruning does "
                    f"not support; supported: {'; '.join(SUPPORTED_ATTENTION)}"
                )
            continue
        structure = _build(name, module, family)
        if structure.kind in kinds:
            found.append(structure)
        if structure.kind == "heads":
            inside.append(name)  # its projections are not MLPs
            if "head_dims" in kinds:
                if family != "mha":
                    raise ValueError(
                        f"head_dims: thinning heads supports {SUPPORTED_ATTENTION[0]}; {name} is a "
                        f"{type(module).__name__} (prune its whole heads with heads)"
                    )
                found.append(_mha_features(name, module))
    if not found:
        raise ValueError(
            f"no {' or '.join(kinds)} found: the model has none of the supported attention and MLP "
            f"modules ({'; '.join(SUPPORTED_ATTENTION)})"
        )
    return found


# ----------------------------------------------------------------------------- compaction
def _select(module: nn.Module, param: str, dim: int, index: Tensor) -> None:
    tensor = getattr(module, param)
    kept = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
    setattr(module, param, nn.Parameter(kept, requires_grad=tensor.requires_grad))


def _refresh_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif _is_conv1d(module):
        module.nx, module.nf = module.weight.shape


def _slice_all(structure: Structure, keep: Tensor) -> None:
    """Keep the indices of the surviving units in every slice."""
    touched = []
    for piece in structure.slices:
        index = torch.nonzero(keep[piece.unit]).flatten()
        _select(piece.module, piece.param, piece.dim, index)
        touched.append(piece.module)
    for module in touched:
        _refresh_linear(module)


def _compact_generic(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    _slice_all(structure, keep)
    if hasattr(structure.module, "intermediate_size"):
        structure.module.intermediate_size = int(keep.sum())


def _slim_from(
    old: nn.Module,
    slim: SlimMultiheadAttention,
    rows: Tensor,
    columns: Tensor,
    queries: int = 0,
    scale: float = 1.0,
) -> SlimMultiheadAttention:
    """``slim`` holding ``old``'s ``in_proj`` ``rows`` (the first ``queries`` of them times
    ``scale``) and ``out_proj`` ``columns``, in ``old``'s mode."""
    with torch.no_grad():
        for name in ("in_proj_weight", "in_proj_bias"):
            if getattr(old, name) is not None:
                kept = getattr(old, name).index_select(0, rows)
                kept[:queries] *= scale
                getattr(slim, name).copy_(kept)
        slim.out_proj.weight.copy_(old.out_proj.weight.index_select(1, columns))
        if old.out_proj.bias is not None:
            slim.out_proj.bias.copy_(old.out_proj.bias)
    return slim.train(old.training)


def _slim_copy(old: nn.Module, keep: Tensor) -> SlimMultiheadAttention:
    """A :class:`SlimMultiheadAttention` with ``old``'s weights of the heads ``keep`` marks."""
    rows, columns = _head_rows(old)
    slim = SlimMultiheadAttention.like(old, num_heads=int(keep.sum()))
    return _slim_from(
        old, slim, torch.nonzero(keep[rows]).flatten(), torch.nonzero(keep[columns]).flatten()
    )


def _compact_mha(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    slim = _slim_copy(structure.module, keep)
    _replace(model, structure.name, slim)
    structure.module = slim


def _compact_mha_features(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    """Thinner heads: the kept query/key and value features of every head (as many per head),
    the scale's change folded into the query rows so the scores stay as they were."""
    old = structure.module
    heads, head_dim, value_dim = _mha_dims(old)
    inner = heads * head_dim
    qk, values = keep[:inner].view(heads, head_dim), keep[inner:].view(heads, value_dim)
    counts = {int(c) for c in qk.sum(1)}, {int(c) for c in values.sum(1)}
    if any(len(c) != 1 or 0 in c for c in counts):
        raise CompactionError(
            f"{structure.name}: every head must keep as many query/key features as the others, "
            f"and as many value features, at least one of each; kept {qk.sum(1).tolist()} and "
            f"{values.sum(1).tolist()}"
        )
    kept_qk, kept_values = (c.pop() for c in counts)
    q_rows = torch.nonzero(qk.flatten()).flatten()
    columns = torch.nonzero(values.flatten()).flatten()
    index = torch.cat([q_rows, inner + q_rows, 2 * inner + columns])
    slim = SlimMultiheadAttention.like(
        old, num_heads=heads, head_dim=kept_qk, value_dim=kept_values
    )
    scale = (kept_qk / head_dim) ** 0.5  # q·k / √head_dim = (scale·q)·k / √kept_qk
    slim = _slim_from(old, slim, index, columns, queries=len(q_rows), scale=scale)
    _replace(model, structure.name, slim)
    structure.module = slim


def _compact_vit_hidden(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    """Narrow the residual stream: every writer's and reader's slice, the norms, the attentions'
    model width (an ``nn.MultiheadAttention`` ties it to its heads, so it becomes a slim one)."""
    vit = structure.module
    for block in vit.encoder.layers:
        attention = block.self_attention
        if isinstance(attention, nn.MultiheadAttention):
            block.self_attention = _slim_copy(
                attention, torch.ones(attention.num_heads, dtype=torch.bool)
            )
    writers, readers, norms = _vit_hidden_parts(vit)  # the modules now in place
    index = torch.nonzero(keep).flatten()
    for piece in writers + readers:
        _select(piece.module, piece.param, piece.dim, index)
        _refresh_linear(piece.module)
    width = len(index)
    for norm in norms:
        _unmask_norm(norm)
        norm.normalized_shape = (width,)
    for block in vit.encoder.layers:
        block.self_attention.embed_dim = width
    vit.conv_proj.out_channels = width
    vit.hidden_dim = width


def _compact_llama_hidden(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    """Narrow the residual stream of a Llama-family LM: the embedding's columns, every
    projection's stream side, the RMSNorms, the LM head (re-tied to the embedding if it was), the
    modules' ``hidden_size`` and the config's."""
    lm = structure.module
    writers, readers, norms = _llama_hidden_parts(lm)
    index = torch.nonzero(keep).flatten()
    for piece in writers + readers:
        if not (structure.tied and piece.module is getattr(lm, "lm_head", None)):
            _select(piece.module, piece.param, piece.dim, index)
            _refresh_linear(piece.module)
    base = _llama_base(lm)
    width = len(index)
    base.embed_tokens.embedding_dim = width
    if structure.tied:
        lm.lm_head.weight = base.embed_tokens.weight
        _refresh_linear(lm.lm_head)
    for norm in norms:
        _unmask_norm(norm)
    for module in base.modules():
        if isinstance(getattr(module, "hidden_size", None), int):
            module.hidden_size = width
    config = getattr(lm, "config", None)
    if config is not None and hasattr(config, "hidden_size"):
        head_dim = base.layers[0].self_attn.head_dim
        config.head_dim = int(head_dim)  # rotary embeddings keep their size
        config.hidden_size = width


def _compact_llama(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    _slice_all(structure, keep)
    module = structure.module
    groups = int(keep.sum())
    for attr, value in (
        ("num_key_value_heads", groups),
        ("num_heads", groups * structure.heads_per_unit),
        ("num_attention_heads", groups * structure.heads_per_unit),
    ):
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, value)


def _compact_gpt2(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    _slice_all(structure, keep)
    module = structure.module
    module.num_heads = int(keep.sum())
    module.split_size = module.num_heads * structure.head_dim


def _compact_bert(structure: Structure, keep: Tensor, model: nn.Module) -> None:
    _slice_all(structure, keep)
    attention = structure.module.self
    attention.num_attention_heads = int(keep.sum())
    attention.all_head_size = attention.num_attention_heads * structure.head_dim


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _update_config(
    model: nn.Module, structures: Sequence[Structure], keeps: Sequence[Tensor]
) -> None:
    """Write uniform head and neuron counts into a Llama-family config (so ``save_pretrained`` /
    ``from_pretrained`` rebuild the smaller model); other configs cannot express them and keep
    the dense values (the export records every module's shapes)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_key_value_heads"):
        return
    heads = {int(k.sum()) for s, k in zip(structures, keeps) if s.family == "llama"}
    neurons = {int(k.sum()) for s, k in zip(structures, keeps) if s.family == "gated_mlp"}
    llama = [s for s in structures if s.family == "llama"]
    if len(heads) == 1 and llama:
        groups = heads.pop()
        config.head_dim = llama[0].head_dim
        config.num_key_value_heads = groups
        config.num_attention_heads = groups * llama[0].heads_per_unit
    if len(neurons) == 1:
        config.intermediate_size = neurons.pop()


# ----------------------------------------------------------------------------- the pruner
class StructuredPruner:
    """Learned head and neuron masks on a transformer, from attachment to the compacted model.

    Args:
        model: the (pretrained) transformer; masks are attached in place.
        method: ``magnitude``, ``taylor`` (gradient × weight), ``movement`` or ``hard_concrete``
            (L0 gates, Louizos et al. 2018; for heads, Voita et al. 2019).
        heads: fraction of attention heads (key/value groups under grouped-query attention) to
            remove, in [0, 1); 0 leaves attention alone.
        head_dims: fraction of the heads' query/key and value features to remove, in [0, 1)
            (``nn.MultiheadAttention`` only; not with ``heads``): every head of an attention
            keeps as many of each as the others and at least one of each, so the fraction is
            rounded up to whole features of every head.
        neurons: fraction of MLP hidden neurons to remove, in [0, 1); 0 leaves the MLPs alone.
        hidden: fraction of the residual stream's channels to remove, in [0, 1) (a torchvision
            ``VisionTransformer`` or a Llama-family LM); 0 keeps the width.
        params, macs: instead of fractions, a budget: the fraction of the parameters (or of the
            MACs per sequence of ``tokens``) of every attention and MLP of ``kinds`` (and, with
            ``hidden`` among them, of every tensor the residual stream's channels run through) to
            remove. Units are then ranked together, across blocks and kinds, by importance per
            cost, each relative to its structure's mean, and the lowest go until the fraction is
            reached (overshooting by less than one unit, or one run under ``round_to``; with the
            hidden width, whose channels' costs overlap every other unit's, the exact count of
            what the kept shapes cost decides); every structure keeps at least one unit.
        kinds: the units a ``params`` or ``macs`` budget takes from (default heads and neurons;
            any of heads, head_dims, neurons and hidden; not heads with head_dims).
        tokens: sequence length of the ``macs`` budget (a ViT's patches plus its class token).
        round_to: every structure keeps a multiple of this many MLP neurons and hidden channels
            (or all of them), so the compacted matrices keep the widths fast kernels tile well;
            fractions are rounded up to it, a budget removes units in whole multiples. Heads
            are whole already and head features go one of every head at a time: neither is
            rounded. 1 keeps any count.
        schedule: its shape: at step ``t`` each kind is at ``schedule(t) / schedule.target`` of
            its fraction (:meth:`step` and :meth:`set_sparsity` take and return the schedule's
            value); default one shot to ``max(heads, neurons)``.
        allocation: ``layer`` (every block loses the same fraction) or ``global`` (one ranking per
            kind across blocks; every attention keeps at least one head).
        exclude: glob patterns of module names to leave dense.
        penalty: weight of the estimator's penalty (hard-concrete's expected L0).
        estimator_args: extra keyword arguments for the estimator.
        update_every: recompute the masks every this many steps.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str = "magnitude",
        heads: float = 0.0,
        head_dims: float = 0.0,
        neurons: float = 0.0,
        hidden: float = 0.0,
        params: float = 0.0,
        macs: float = 0.0,
        kinds: Sequence[str] = ("heads", "neurons"),
        tokens: int = 256,
        round_to: int = 1,
        schedule: SparsitySchedule | None = None,
        allocation: str = "layer",
        exclude: Sequence[str] = (),
        penalty: float = 0.0,
        estimator_args: Mapping[str, Any] | None = None,
        update_every: int = 1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if method not in STRUCTURED_METHODS:
            raise ValueError(
                f"method: expected one of {', '.join(STRUCTURED_METHODS)}, got {method!r}"
            )
        if allocation not in ("layer", "global"):
            raise ValueError(f"allocation: expected 'layer' or 'global', got {allocation!r}")
        self.targets = {
            "heads": check_sparsity("heads", heads),
            "head_dims": check_sparsity("head_dims", head_dims),
            "neurons": check_sparsity("neurons", neurons),
            "hidden": check_sparsity("hidden", hidden),
        }
        budgets = {"params": check_sparsity("params", params), "macs": check_sparsity("macs", macs)}
        budget = [(name, value) for name, value in budgets.items() if value > 0]
        self.budget: tuple[str, float] | None = budget[0] if budget else None
        if len(budget) > 1 or (budget and any(self.targets.values())):
            given = [n for n, v in {**self.targets, **budgets}.items() if v > 0]
            raise ValueError(
                "give fractions of heads, head_dims, neurons or hidden, or one budget (params or "
                f"macs), got "
                f"{', '.join(given)}"
            )
        self.tokens = check_int("tokens", tokens, 1)
        self.round_to = check_int("round_to", round_to, 1)
        if self.budget is not None:
            if isinstance(kinds, str) or not kinds or any(k not in KINDS for k in kinds):
                raise ValueError(
                    f"kinds: a {self.budget[0]} budget takes some of {', '.join(KINDS)}, got "
                    f"{kinds!r}"
                )
            kinds = list(dict.fromkeys(kinds))
        else:
            kinds = [kind for kind, value in self.targets.items() if value > 0]
        if not kinds:
            raise ValueError(
                "heads, head_dims, neurons and hidden are all 0: give a fraction of one of them to "
                "remove"
            )
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty >= 0:
            raise ValueError(f"penalty must be a number >= 0, got {penalty!r}")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be an int >= 1, got {update_every!r}")
        if schedule is not None and not schedule.target > 0:
            raise ValueError(
                f"schedule target must be > 0 (its shape is used), got {schedule.target}"
            )
        fractions = [self.budget[1]] if self.budget else list(self.targets.values())
        self.schedule = schedule or SparsitySchedule(max(fractions), kind="one_shot")
        self.model = model
        self.method = method
        self.allocation = allocation
        self.penalty_weight = float(penalty)
        self.update_every = update_every
        self.granularity = UnitGranularity(kinds)
        self._units = ChannelGranularity()  # a vector mask per structure, selected like channels
        self.structures = find_structures(model, kinds, exclude=exclude)
        self.dense_parameters = sum(p.numel() for p in model.parameters())
        self._ledger = _ledger(self.structures)  # the shapes before compaction changes them
        self._owned_parameters = sum(math.prod(entry.shape) for entry in self._ledger)
        for kind in kinds:
            if not any(s.kind == kind for s in self.structures):
                asked = f"{self.budget[0]}={self.budget[1]:g} of" if self.budget else f"{kind}="
                value = "" if self.budget else f"{self.targets[kind]:g}"
                raise ValueError(f"{asked}{value} {kind}: the model has no {kind} to prune")
        # what each unit costs, for a params or macs budget (fixed: masks do not change shapes)
        self._costs = [
            s.unit_macs(tokens)
            if self.budget and self.budget[0] == "macs"
            else s.unit_params().double()
            for s in self.structures
        ]
        estimator = ESTIMATORS[method]
        args = dict(estimator_args or {})
        self.sources: list[MaskSource] = []
        magnitudes = [s.magnitude() for s in self.structures]
        stats = {
            kind: MagnitudeStats.of(
                [m for s, m in zip(self.structures, magnitudes) if s.kind == kind]
            )
            for kind in kinds
        }
        for structure, magnitude in zip(self.structures, magnitudes):
            extra: dict[str, Any] = {}
            if estimator.takes_stats and allocation == "global":
                extra["stats"] = stats[structure.kind]
            try:
                source = estimator((structure.size,), magnitude, **args, **extra)
            except TypeError as error:
                raise ValueError(f"estimator_args for {method}: {error}") from None
            piece = structure.output
            rows = torch.arange(piece.unit.numel())
            mask = HadamardMask(source, self._units, dim=piece.dim, rows=rows, channels=piece.unit)
            attach(piece.module, piece.param, mask)
            for writer in structure.writers:  # one unit per index: the mask as it is
                attach(
                    writer.module,
                    writer.param,
                    HadamardMask(source, self._units, dim=writer.dim, first=False),
                )
            for module, param, dim, rows, units in structure.gates:
                attach(
                    module,
                    param,
                    HadamardMask(
                        source, self._units, dim=dim, rows=rows, channels=units, first=False
                    ),
                )
            _mask_norms(structure, source)
            self.sources.append(source)
        self.current: float | None = None
        self._last_update: int | None = None

    freezes_weights = False  # the weights train with the masks (the Pruner's interface)

    # ------------------------------------------------------------------------------- training
    def mask_parameters(self) -> list[nn.Parameter]:
        """The estimators' learned parameters (scores, gates)."""
        return [p for source in self.sources for p in source.parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """The model's trainable parameters other than :meth:`mask_parameters`."""
        masks = {id(p) for p in self.mask_parameters()}
        return [p for p in self.model.parameters() if p.requires_grad and id(p) not in masks]

    def step(self, step: int) -> float:
        """Update the masks for optimizer step ``step``; returns the schedule's value there (the
        targets are reached when it reaches ``schedule.target``).

        Masks are re-selected every ``update_every`` steps. After a ramp (a linear or cubic
        schedule) they stay as its end left them, as in AGP: re-selecting then swaps in units
        whose weights were not trained, with no steps left to recover (learned movement scores
        did so at 50 % of the digits ViT's MACs and lost 13 points). A one-shot schedule keeps
        re-selecting, the only way learned masks learn under it."""
        value = self.schedule(step)
        start, end = self.schedule.start_step, self.schedule.end_step
        anneal = 1.0 if end is None or end <= start else (step - start) / (end - start)
        for source in self.sources:
            source.anneal(min(max(anneal, 0.0), 1.0))
        if end is not None and start < end < step and self.done:
            return value  # a ramp's masks stay as its end left them (AGP)
        due = self._last_update is None or step - self._last_update >= self.update_every
        if value != self.current or due:
            self.set_sparsity(value)
            self._last_update = step
        return value

    def set_sparsity(self, sparsity: float) -> None:
        """Choose the surviving units for the schedule's value ``sparsity`` (in [0,
        ``schedule.target``]): each kind at ``sparsity / schedule.target`` of its fraction."""
        target = self.schedule.target
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
            raise ValueError(f"sparsity must be a number in [0, {target:g}], got {sparsity!r}")
        if not 0 <= sparsity <= target:
            raise ValueError(
                f"sparsity must be in [0, {target:g}] (the schedule's target), got {sparsity!r}"
            )
        self._select(min(sparsity / target, 1.0))
        self.current = float(sparsity)

    def set_progress(self, progress: float) -> None:
        """Choose the surviving units for ``progress`` (in [0, 1]) of each kind's fraction."""
        if (
            isinstance(progress, bool)
            or not isinstance(progress, (int, float))
            or not 0 <= progress <= 1
        ):
            raise ValueError(f"progress must be a number in [0, 1], got {progress!r}")
        self.set_sparsity(
            self.schedule.target if progress == 1 else progress * self.schedule.target
        )

    @property
    def done(self) -> bool:
        """Whether the masks are at the full targets."""
        return self.current == self.schedule.target

    @torch.no_grad()
    def _select(self, progress: float) -> None:
        if ESTIMATORS[self.method].ranks_by_magnitude:
            for structure, source in zip(self.structures, self.sources):
                source.magnitude = structure.magnitude().to(source.keep.device)
        if self.budget is not None:
            self._select_budget(self.budget[1] * progress)
            return
        for kind, target in self.targets.items():
            chosen = [i for i, s in enumerate(self.structures) if s.kind == kind]
            if not chosen:
                continue
            sparsity = min(target * progress, target)
            importances = [self.sources[i].importance() for i in chosen]
            if kind == "head_dims":
                self._select_features(chosen, importances, sparsity)
                continue
            keeps = self._units.select(
                importances,
                sparsity,
                allocation=self.allocation,
                round_to=1 if kind == "heads" else self.round_to,
            )
            for i, keep in zip(chosen, keeps):
                self.sources[i].keep.copy_(keep)

    def _select_features(
        self, chosen: Sequence[int], importances: Sequence[Tensor], sparsity: float
    ) -> None:
        """Head features at a fraction: whole runs (one feature of every head of an attention,
        see :func:`_feature_runs`) go in order of their mean importance until ``sparsity`` of the
        features of each attention (``layer``) or of all of them (``global``) are gone."""
        runs = [
            (mean, order, i, run)
            for i, importance in zip(chosen, importances)
            for order, (mean, run) in enumerate(
                _feature_runs(self.structures[i], importance.detach().double().cpu())
            )
        ]
        runs.sort(key=lambda r: (r[0], r[1]))
        goal = {i: sparsity * self.structures[i].size for i in chosen}
        total_goal = sum(goal.values())
        removed, total, steps = dict.fromkeys(chosen, 0), 0, []
        for _, _, i, run in runs:
            if self.allocation == "layer":
                if removed[i] >= goal[i] - 1e-9:
                    continue
            elif total >= total_goal - 1e-9:
                break
            steps.append([(i, j) for j in run])
            removed[i] += len(run)
            total += len(run)
        keeps = self._kept(steps)
        for i in chosen:
            self.sources[i].keep.copy_(keeps[i].to(self.sources[i].keep.device))

    def _select_budget(self, fraction: float) -> None:
        """Remove the units of least importance per cost until ``fraction`` of the cost is gone."""
        costs = self._costs
        ratios = []
        for source, cost in zip(self.sources, costs):
            # both relative to the structure's own mean: importances of different estimators,
            # kinds and blocks are not on one scale, so each structure loses about the budget's
            # fraction, less where its importance is concentrated, more where it is spread
            importance = source.importance().detach().double().cpu()
            importance = importance / importance.mean().clamp_min(1e-12)
            ratios.append(importance / (cost / cost.mean().clamp_min(1e-12)).clamp_min(1e-12))
        steps = self._removal_steps(ratios)
        if any(s.kind == "hidden" for s in self.structures):
            count = self._exact_count(steps, fraction, self.budget[0])
        else:  # the units own disjoint tensors: their costs add up
            goal, removed, count = fraction * float(torch.cat(costs).sum()), 0.0, 0
            while count < len(steps) and removed < goal:
                removed += sum(float(costs[i][j]) for i, j in steps[count])
                count += 1
        for source, keep in zip(self.sources, self._kept(steps[:count])):
            source.keep.copy_(keep.to(source.keep.device))

    def _removal_steps(self, ratios: Sequence[Tensor]) -> list[list[tuple[int, int]]]:
        """The order units go in, as steps of ``(structure, unit)`` pairs: one unit at a time,
        or under ``round_to`` a structure's neurons and hidden channels in the runs that keep
        its count a multiple (the first run down to the multiple below its size); runs go in
        order of their mean ratio, and every structure keeps its last unit (its last multiple)."""
        runs: list[tuple[float, int, list[tuple[int, int]]]] = []
        for i, (structure, ratio) in enumerate(zip(self.structures, ratios)):
            if structure.kind == "head_dims":  # one feature of every head at a time
                for mean, run in _feature_runs(structure, ratio):
                    runs.append((mean, len(runs), [(i, j) for j in run]))
                continue
            step = 1 if structure.kind == "heads" else self.round_to
            order = torch.argsort(ratio, stable=True).tolist()
            floor = min(step, structure.size)
            start, kept = 0, structure.size
            while kept > floor:
                size = kept - (kept - 1) // step * step  # down to the next multiple below
                run = order[start : start + size]
                runs.append((float(ratio[run].mean()), len(runs), [(i, j) for j in run]))
                start, kept = start + size, kept - size
        # mean ratios rise along a structure's sorted units, so its runs stay in order
        return [run for _, _, run in sorted(runs, key=lambda r: (r[0], r[1]))]

    def _kept(self, steps: Iterable[Sequence[tuple[int, int]]]) -> list[Tensor]:
        """Per structure, the units left once every ``(structure, unit)`` of ``steps`` is gone."""
        keeps = [torch.ones(s.size, dtype=torch.bool) for s in self.structures]
        for step in steps:
            for i, j in step:
                keeps[i][j] = False
        return keeps

    def _exact_count(
        self, steps: Sequence[Sequence[tuple[int, int]]], fraction: float, kind: str
    ) -> int:
        """The fewest first ``steps`` whose removal takes ``fraction`` of the owned
        tensors' ``kind`` (``params`` or ``macs``), counted on the shapes they leave (a hidden
        channel and a neuron share the entries where they cross); the cost only falls as units
        go, so a bisection finds it."""

        def removed_share(count: int) -> float:
            params, before, after = _removed_and_macs(
                self.structures, self._ledger, self._kept(steps[:count]), self.tokens
            )
            if kind == "macs":
                return (before - after) / max(before, 1e-12)
            return params / max(self._owned_parameters, 1)

        low, high = 0, len(steps)
        if removed_share(high) < fraction:
            return high
        while low < high:
            middle = (low + high) // 2
            if removed_share(middle) >= fraction:
                high = middle
            else:
                low = middle + 1
        return low

    def penalty(self) -> Tensor:
        """The estimator's penalty times ``penalty`` (0 for penalty-free estimators)."""
        device = self.sources[0].keep.device
        terms = [t for t in (source.penalty() for source in self.sources) if t is not None]
        if self.penalty_weight == 0 or not terms:
            return torch.zeros((), device=device)
        total = torch.stack([value for value, _ in terms]).sum()
        return self.penalty_weight * total / sum(count for _, count in terms)

    # ------------------------------------------------------------------------------- reporting
    def keeps(self) -> list[Tensor]:
        """Per structure, the bool mask of surviving units."""
        return [source.keep.detach().cpu().clone() for source in self.sources]

    def layer_sparsity(self) -> list[dict[str, Any]]:
        """Per structure: its kind, units (heads or key/value groups, neurons), kept, sparsity."""
        return [
            {
                "layer": structure.name,
                "kind": structure.kind,
                "units": structure.size,
                "kept_units": int(keep.sum()),
                "unit_sparsity": 1 - int(keep.sum()) / structure.size,
            }
            for structure, keep in zip(self.structures, self.keeps())
        ]

    def achieved_sparsity(self) -> float:
        """The fraction of units (heads and neurons together) the masks remove now."""
        rows = self.layer_sparsity()
        return 1 - sum(r["kept_units"] for r in rows) / sum(r["units"] for r in rows)

    def report(self, tokens: int = 256) -> dict[str, Any]:
        """Units, parameters and MACs (per sequence of ``tokens``) before and after, per structure
        and in total; ``parameters_after`` is what the compacted model will count (a tensor two
        structures cut, along different dims, counted once: a head's rows in a narrower width)."""
        rows = []
        keeps = self.keeps()
        removed_params, macs_before, macs_after = _removed_and_macs(
            self.structures, self._ledger, keeps, tokens
        )
        for structure, keep in zip(self.structures, keeps):
            params = structure.unit_params()
            rows.append(
                {
                    "module": structure.name,
                    "kind": structure.kind,
                    "units": structure.size,
                    "kept": int(keep.sum()),
                    "heads_per_unit": structure.heads_per_unit,
                    "params_removed": int(params[~keep].sum()),
                }
            )
        counts = {
            kind: (
                sum(r["units"] for r in rows if r["kind"] == kind),
                sum(r["kept"] for r in rows if r["kind"] == kind),
            )
            for kind in KINDS
        }
        return {
            "structures": rows,
            "units": {kind: {"total": t, "kept": k} for kind, (t, k) in counts.items() if t},
            "parameters_before": self.dense_parameters,
            "parameters_after": self.dense_parameters - removed_params,
            "structure_macs_before": macs_before,
            "structure_macs_after": macs_after,
            "tokens": tokens,
        }

    # ------------------------------------------------------------------------------- finalizing
    def bake(self) -> nn.Module:
        """Reach the full targets, fold the masks into the weights and drop them."""
        if any(s.kind == "hidden" for s in self.structures):
            raise ValueError(
                "finalize: a pruned hidden width needs compaction (its layer norms take statistics "
                "over the kept channels only, which a baked full-width model cannot); use compact"
            )
        return self._bake()

    def _bake(self) -> nn.Module:
        if not self.done:
            self.set_progress(1.0)
        return bake(self.model)

    def compact(self, example_inputs: Any, *, rtol: float = 1e-5, atol: float = 1e-5) -> nn.Module:
        """Bake, then remove the dropped units from every projection, update head counts and widths,
        and check that the compacted model computes what the masked one did on
        ``example_inputs`` (a tensor or a tuple of forward arguments; a mapping is passed as
        keyword arguments). Returns the compacted model (the same object, changed in place)."""
        if not self.done:
            self.set_progress(1.0)
        keeps = self.keeps()
        for structure, keep in zip(self.structures, keeps):
            if not keep.any():  # the selection keeps one per structure; a user-set keep may not
                unit = {"heads": "head", "head_dims": "head feature", "neurons": "neuron"}.get(
                    structure.kind, "hidden channel"
                )
                raise CompactionError(
                    f"{structure.name or 'the model'}: every {unit} would be removed; keep at "
                    "least one"
                )
        model = self._bake()
        reference = copy.deepcopy(model)
        # the hidden width last: it rebuilds its slices from the modules heads compaction left
        order = sorted(zip(self.structures, keeps), key=lambda pair: pair[0].kind == "hidden")
        for structure, keep in order:
            structure.compact_fn(structure, keep, model)
        _update_config(model, self.structures, keeps)
        _check(reference, model, example_inputs, rtol=rtol, atol=atol)
        return model


def _feature_runs(structure: Structure, ratio: Tensor) -> list[tuple[float, list[int]]]:
    """The order a ``head_dims`` structure's features go in, as runs that take one feature from
    every head (so the heads stay equally wide): the r-th run of the query/key features takes each
    head's r-th least important one, and the same for the value features, each with its mean
    ratio (they rise along r). The two kinds of feature are ranked each relative to its own mean
    (a query/key feature's weights and a value feature's are not on one scale). Every head keeps
    its most important feature of each."""
    size = structure.head_dim + structure.value_dim
    heads = structure.size // size
    runs = []
    offset = 0
    for width in (structure.head_dim, structure.value_dim):
        block = ratio[offset : offset + heads * width].view(heads, width)
        block = block / block.mean().clamp_min(1e-12)
        order = torch.argsort(block, dim=1, stable=True)
        first = offset + torch.arange(heads) * width
        for rank in range(width - 1):
            picked = order[:, rank]
            runs.append((float(block.gather(1, picked[:, None]).mean()), (first + picked).tolist()))
        offset += heads * width
    return runs


@dataclass
class _Owned:
    """A tensor some structures cut, as it was before any compaction: its shape, whether its
    entries are MACs, and per cut ``(structure index, dim, unit of each index)``."""

    shape: tuple[int, ...]
    macs: bool
    cuts: list[tuple[int, int, Tensor]]


def _ledger(structures: Sequence[Structure]) -> list[_Owned]:
    """Every tensor the structures own, once (a tensor two structures cut along different dims,
    such as a head's rows in a narrower stream, is one entry)."""
    owned: dict[int, _Owned] = {}
    for i, structure in enumerate(structures):
        for piece in structure.slices:
            tensor = _original(piece.module, piece.param)
            entry = owned.setdefault(id(tensor), _Owned(tuple(tensor.shape), False, []))
            # a tied embedding is a lookup for one module and a projection for the other
            entry.macs = entry.macs or (piece.macs and tensor.dim() >= 2)
            entry.cuts.append((i, piece.dim, piece.unit))
    return list(owned.values())


def _removed_and_macs(
    structures: Sequence[Structure], ledger: Sequence[_Owned], keeps: Sequence[Tensor], tokens: int
) -> tuple[int, float, float]:
    """Parameters removed, and MACs per sequence before and after: every owned tensor's kept size
    is the product of what the structures keep along each of its dims; attention products are
    ``tokens² · width`` per kept query head, ``tokens²`` per kept head feature."""
    removed = 0
    before = after = 0.0
    for entry in ledger:
        kept_along: dict[int, Tensor] = {}
        for i, dim, unit in entry.cuts:
            kept = keeps[i][unit]
            kept_along[dim] = kept_along[dim] & kept if dim in kept_along else kept
        dense = kept = 1
        for dim, size in enumerate(entry.shape):
            dense *= size
            kept *= int(kept_along[dim].sum()) if dim in kept_along else size
        removed += dense - kept
        if entry.macs:
            before += float(dense) * tokens
            after += float(kept) * tokens
    for structure, keep in zip(structures, keeps):
        if structure.kind in ("heads", "head_dims"):
            per_unit = float(tokens * tokens)
            if structure.kind == "heads":
                per_unit *= structure.width * structure.heads_per_unit
            before += per_unit * structure.size
            after += per_unit * int(keep.sum())
    return removed, before, after


def _check(
    reference: nn.Module, model: nn.Module, example_inputs: Any, *, rtol: float, atol: float
) -> None:
    if isinstance(example_inputs, Mapping):
        inputs = dict(example_inputs)

        class _Call(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self) -> Any:
                return self.inner(**inputs)

        check_equivalent(_Call(reference), _Call(model), (), rtol=rtol, atol=atol)
    else:
        check_equivalent(reference, model, example_inputs, rtol=rtol, atol=atol)
