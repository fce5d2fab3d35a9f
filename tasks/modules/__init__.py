"""The LightningModules (inpainting, classification, causal language models), their losses,
metrics and schedules, and inference with a trained inpainting network. Built from
``task.module`` in the config; they receive objects (networks, losses, optimizer factories),
never the config tree."""

from .classification import ClassificationModule, evaluate
from .inference import inpaint
from .inpainting import Adversarial, InpaintingModule
from .language import CausalLMModule, perplexity
from .losses import InpaintingLoss, LossWeights, inpainting_loss
from .metrics import InpaintingMetrics, PerceptualMetrics

__all__ = [
    "Adversarial",
    "CausalLMModule",
    "ClassificationModule",
    "InpaintingLoss",
    "InpaintingMetrics",
    "InpaintingModule",
    "LossWeights",
    "PerceptualMetrics",
    "evaluate",
    "inpaint",
    "inpainting_loss",
    "perplexity",
]
