"""Causal language models: the network builder (Hugging Face ``transformers``, built from a config
or a local folder, never downloaded), next-token training and held-out perplexity."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from .masked_training import MaskedTraining
from .optim import (
    OptimizerFactory,
    SchedulerFactory,
    as_list,
    manual_step,
)

# the architectures ``causal_lm`` builds from a config, by ``family``
FAMILIES = ("llama", "gpt2")


def causal_lm(family: str = "llama", vocab_size: int = 4096, **config: Any) -> nn.Module:
    """A randomly initialised Hugging Face causal LM of ``family`` (``llama``: grouped-query
    attention when ``num_key_value_heads < num_attention_heads``, rotary embeddings, SwiGLU;
    ``gpt2``: fused ``Conv1D`` projections) with the given config keys. Used for the embedded
    default model and as the builder an export records."""
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"net.family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if family == "llama":
        settings = transformers.LlamaConfig(vocab_size=vocab_size, **config)
        settings._attn_implementation = "sdpa"
        return transformers.LlamaForCausalLM(settings)
    settings = transformers.GPT2Config(vocab_size=vocab_size, **config)
    settings._attn_implementation = "sdpa"
    return transformers.GPT2LMHeadModel(settings)


# the recorded classes of an export built by causal_lm are transformers' (see load_pruned)
causal_lm.module_packages = ("transformers",)  # type: ignore[attr-defined]


def local_causal_lm(path: str | Path) -> nn.Module:
    """A pretrained causal LM from a local folder (``config.json`` and safetensors weights), or a
    model id already in the local Hugging Face cache; nothing is downloaded and no code from the
    folder runs (``trust_remote_code=False``, safetensors only)."""
    import transformers

    try:
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"task.pretrained: no causal language model with safetensors weights at {str(path)!r} "
            f"(a local folder or a model id in the local Hugging Face cache; nothing is "
            f"downloaded): {first}"
        ) from None


def lm_loss(net: nn.Module, ids: Tensor) -> Tensor:
    """Mean next-token cross-entropy of ``net`` on token sequences ``ids`` ``(B, T)``."""
    logits = net(ids, use_cache=False).logits[:, :-1]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@torch.no_grad()
def perplexity(net: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> float:
    """``exp`` of the mean next-token negative log-likelihood over every token of ``loader``
    (batches of ``(ids,)``), in evaluation mode."""
    training = net.training
    net.eval()
    total, tokens = 0.0, 0
    try:
        for (ids,) in loader:
            ids = ids.to(device)
            count = ids[:, 1:].numel()
            total += float(lm_loss(net, ids)) * count
            tokens += count
    finally:
        net.train(training)
    if tokens == 0:
        raise ValueError("the evaluation loader is empty")
    return math.exp(total / tokens)


class CausalLMModule(MaskedTraining):
    """Next-token training of a causal LM (dense, or under a pruner's masks); validation logs the
    held-out loss and perplexity summed over every token of every process.

    Args:
        net: the language model.
        optimizer: factory for the weights' optimizer.
        scheduler: factory for its learning-rate schedule (per step); None: constant.
        pruner: a :class:`~masking.pruning.Pruner` whose masks are attached to ``net``.
        mask_optimizer: factory for the estimator's parameters' optimizer.
        gradient_clip: clip the weights' gradient norm to this (0: no clipping).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        pruner: Any = None,
        mask_optimizer: OptimizerFactory | None = None,
        gradient_clip: float = 1.0,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.mask_optimizer_factory = mask_optimizer or (lambda p: torch.optim.Adam(p, lr=1e-2))
        self.pruner = pruner
        self.gradient_clip = float(gradient_clip)
        self.automatic_optimization = False
        self.register_buffer("prune_step", torch.zeros((), dtype=torch.long))
        self.val_nll, self.val_tokens = SumMetric(), SumMetric()

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> Tensor:
        (ids,) = batch
        if self.pruner is not None:
            self.log("prune/sparsity", self.pruner.step(int(self.prune_step)), on_step=True)
        loss = lm_loss(self.net, ids)
        total = loss
        if self.pruner is not None and self.pruner.penalty_weight:
            total = loss + self.pruner.penalty()
        clip = self.gradient_clip or None
        manual_step(
            self, total, as_list(self.optimizers()), as_list(self.lr_schedulers()), clip=clip
        )
        self.prune_step += 1
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        return total

    def validation_step(self, batch: tuple[Tensor], batch_idx: int) -> None:
        (ids,) = batch
        count = ids[:, 1:].numel()
        self.val_nll.update(lm_loss(self.net, ids).detach() * count)
        self.val_tokens.update(torch.tensor(float(count), device=ids.device))

    def on_validation_epoch_end(self) -> None:
        nll = self.val_nll.compute() / self.val_tokens.compute().clamp_min(1)
        self.log("val/loss", nll, prog_bar=True)
        self.log("val/ppl", nll.exp(), prog_bar=True)
        self.val_nll.reset()
        self.val_tokens.reset()


def vocabulary_size(tokenizer: Any) -> int:
    """The number of token ids ``tokenizer`` (a ``tokenizers.Tokenizer``) can produce."""
    return int(tokenizer.get_vocab_size(with_added_tokens=True))


def check_vocabulary(net: nn.Module, tokenizer: Any, where: str) -> None:
    """A clear error when ``tokenizer`` produces ids the model has no embedding for."""
    rows = net.get_input_embeddings().weight.shape[0]
    size = vocabulary_size(tokenizer)
    if size > rows:
        raise ValueError(
            f"{where}: the tokenizer has {size} tokens but the model embeds only {rows}; they do "
            "not belong together (give the model's own tokenizer.json)"
        )
