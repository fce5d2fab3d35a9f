"""The ``masking::`` custom ops, one module each; importing this package registers them.

Each is a ``torch.library.custom_op`` with a fake implementation (output shapes, so ``torch.compile``
traces around it) and, where differentiable, an autograd formula that saves little; the
implementation calls a Triton kernel through ``dispatch.run_kernel`` where one serves, else the
pure-torch reference. Inputs reaching these ops are already validated by ``masking.functional``.

- ``mask_product``, ``mask_product_packed``: ``x ⊙ mask``, for a mask tensor or a bit-packed one;
- ``partial_conv2d``: the partial convolution (its torch path in ``_partial_conv_cpu``);
- ``masked_linear``, ``masked_conv2d``: a layer on ``weight ⊙ mask`` without forming it;
- ``bsr_linear``: a block-sparse weight's GEMM, inference only.

``conv2d`` (shared with the layers), ``box_sum2d``, ``valid_scale`` and ``MIN_VALID_COUNT`` are the
helpers other modules use.
"""

from ._bsr_linear import bsr_linear
from ._mask_product import mask_product
from ._mask_product_packed import mask_product_packed
from ._masked_conv2d import masked_conv2d
from ._masked_linear import masked_linear
from ._partial_conv2d import partial_conv2d
from ._partial_conv_cpu import MIN_VALID_COUNT, box_sum2d, valid_scale
from ._shared import conv2d

__all__ = [
    "MIN_VALID_COUNT",
    "box_sum2d",
    "bsr_linear",
    "conv2d",
    "mask_product",
    "mask_product_packed",
    "masked_conv2d",
    "masked_linear",
    "partial_conv2d",
    "valid_scale",
]
