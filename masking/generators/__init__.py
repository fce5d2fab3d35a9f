"""Inpainting mask generators: one mask per image, 1 = valid, each call given a torch.Generator."""

from .base import MaskGenerator, keyed_generator, sample_generator, worker_generator
from .boxes import Boxes
from .evaluation import HOLE_RATIO_BINS, bin_name, evaluation_masks
from .folder import FolderMasks, load_mask_file
from .mixed import MixedMasks
from .strokes import IRREGULAR_PRESETS, FreeFormStrokes, IrregularStrokes

__all__ = [
    "HOLE_RATIO_BINS",
    "IRREGULAR_PRESETS",
    "Boxes",
    "FolderMasks",
    "FreeFormStrokes",
    "IrregularStrokes",
    "MaskGenerator",
    "MixedMasks",
    "bin_name",
    "evaluation_masks",
    "keyed_generator",
    "load_mask_file",
    "sample_generator",
    "worker_generator",
]
