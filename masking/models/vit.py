"""A torchvision Vision Transformer sized for small images (the digits of ``task=prune``)."""

from __future__ import annotations

from torch import nn

from ..checks import check_int


def vit_small(
    num_classes: int = 10,
    image_size: int = 32,
    patch_size: int = 4,
    num_layers: int = 6,
    num_heads: int = 6,
    hidden_dim: int = 192,
    mlp_dim: int = 384,
    dropout: float = 0.0,
) -> nn.Module:
    """``torchvision.models.VisionTransformer`` with the given sizes, freshly initialised.

    torchvision's own builders (``vit_b_16`` ...) fix the patch size and the depth and widths; this
    one exposes them, so a ViT fits 32×32 images and trains on two CPU cores. Its attention is
    ``nn.MultiheadAttention`` and its MLPs torchvision's ``MLPBlock``: what
    :class:`~masking.pruning.StructuredPruner` prunes and compacts.

    Args:
        num_classes: classifier outputs.
        image_size: input height and width (a multiple of ``patch_size``).
        patch_size: side of the square patches (one token each, plus the class token).
        num_layers: encoder blocks.
        num_heads: attention heads per block (dividing ``hidden_dim``).
        hidden_dim: the residual stream's width.
        mlp_dim: hidden neurons of each block's MLP.
        dropout: dropout of the MLPs and the embeddings.

    Returns:
        A ``VisionTransformer``.

    Example:
        >>> net = vit_small(num_layers=1, hidden_dim=24, num_heads=2, mlp_dim=32)
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    from torchvision.models.vision_transformer import VisionTransformer  # slow to import

    for name, value in (
        ("num_classes", num_classes),
        ("image_size", image_size),
        ("patch_size", patch_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("hidden_dim", hidden_dim),
        ("mlp_dim", mlp_dim),
    ):
        check_int(name, value, 1)
    if image_size % patch_size:
        raise ValueError(
            f"image_size must be a multiple of patch_size ({patch_size}), got {image_size}"
        )
    if hidden_dim % num_heads:
        raise ValueError(
            f"hidden_dim must be a multiple of num_heads ({num_heads}), got {hidden_dim}"
        )
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        dropout=float(dropout),
        num_classes=num_classes,
    )
