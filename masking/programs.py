"""A network as a ``torch.export`` program of plain aten ops, ready for ONNX or any other runtime.

The ``masking::`` ops (``mask_product``, ``partial_conv2d``, the masked layers) are traced as single
nodes, then rewritten into ordinary convolutions, products and slices by
``masking.kernels.plain`` — so a partial convolution leaves PyTorch as standard ops that every
inference runtime has, not as a custom op one would have to implement there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram

from .kernels.plain import plain_ops
from .pruning.sparsify import SparseConv2d, SparseLinear

__all__ = ["Dim", "export_program", "plain_program"]


def export_program(
    model: nn.Module,
    example_inputs: Sequence[Tensor],
    *,
    dynamic_shapes: Mapping[str, Any] | Sequence[Any] | None = None,
) -> ExportedProgram:
    """``model`` (put in eval mode) traced by ``torch.export`` on ``example_inputs``, its masking
    ops rewritten into plain aten ops.

    Args:
        model: any network; its mode is restored afterwards.
        example_inputs: the forward's positional arguments.
        dynamic_shapes: as ``torch.export.export`` takes them, e.g. ``{"image": {0: Dim("batch")}}``.

    Raises:
        ValueError: the model holds a sparse serving layer (``masking.pruning.sparsify``) or an op
            with no plain form, naming it.

    Example:
        >>> from masking.models import PConvUNet
        >>> net = PConvUNet(depth=2, base_width=4)
        >>> program = export_program(net, (torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)))
        >>> sorted({str(n.target) for n in program.graph.nodes if "masking" in str(n.target)})
        []
    """
    serving = [n for n, m in model.named_modules() if isinstance(m, SparseLinear | SparseConv2d)]
    if serving:
        raise ValueError(
            f"{serving[0]} is a sparse serving layer (masking.pruning.sparsify), which runs in "
            "PyTorch only; export the baked model, whose weights are dense with zeros"
        )
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
    finally:
        model.train(was_training)
    return plain_program(program)


def plain_program(program: ExportedProgram) -> ExportedProgram:
    """``program`` with every ``masking::`` op decomposed into aten ops."""
    program = program.run_decompositions(plain_ops())
    left = sorted(
        {
            str(node.target)
            for node in program.graph.nodes
            if str(node.target).startswith("masking.")
        }
    )
    if left:
        raise ValueError(
            f"the model uses {', '.join(left)}, which has no plain-op form; export the model with "
            "its dense-with-zeros weights instead (masking.pruning bakes them)"
        )
    return program
