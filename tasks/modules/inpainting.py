"""The inpainting LightningModule: one optimizer for a U-Net, two for the GAN variant."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from masking.functional import mask_product
from masking.generators import MaskGenerator, sample_generator
from masking.pruning import Pruner

from .io import save_image
from .losses import InpaintingLoss, hinge_discriminator_loss, hinge_generator_loss
from .metrics import InpaintingMetrics, PerceptualMetrics

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class InpaintingTask(pl.LightningModule):
    """Trains an inpainting network on image batches, drawing one mask per image.

    Args:
        net: ``(image, mask) -> output`` (PConv U-Net) or ``-> (coarse, refined)`` (gated generator);
            every returned image is trained with ``loss``.
        loss: the reconstruction loss.
        optimizer: factory called with the network's parameters (a Hydra ``_partial_``).
        mask_generator: draws the training masks on the batch's device.
        eval_masks: the fixed evaluation set, ``{bin_name: (N, 1, H, W)}``; validation image ``i``
            gets bin ``i mod 6`` and that bin's mask ``(i div 6) mod N``, the same masks every time
            (in a distributed run process ``r`` of ``W`` holds images ``r, r + W, ...``).
        mask_seed: seed of the training masks. Batches of ``(images, keys)`` (this project's
            datamodules) draw each image's mask from ``(mask_seed, key)``, so the masks do not
            depend on the number of processes; plain image batches draw from one stream per rank.
        ramp_steps: steps over which the mask generator's difficulty ramp runs (``None``: no ramp).
        scheduler: optional factory called with the optimizer.
        discriminator, d_optimizer, gan_weight: the SN-PatchGAN variant (hinge losses, one
            discriminator step per generator step).
        sample_dir: where the validation sample grids are written as PNG.
        samples: images per sample grid.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 over the run's optimiser steps; an
            explicit ``scheduler`` takes precedence).
        net_spec: the network's ``_target_`` and arguments, saved in checkpoints so that
            ``task=predict`` can rebuild it without the training config or pickled objects.
        pruner: a :class:`~masking.pruning.Pruner` whose masks are attached to ``net``
            (``task=prune_inpaint``): each step first sets the masks for that step, the loss gains
            the estimator's penalty, and the estimator's parameters join the optimizer as a second
            parameter group with learning rate ``mask_lr``.
        mask_lr: learning rate of the estimator's parameters (scores, gates, thresholds).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: InpaintingLoss,
        optimizer: OptimizerFactory,
        mask_generator: MaskGenerator,
        eval_masks: dict[str, Tensor],
        *,
        mask_seed: int = 0,
        ramp_steps: int | None = None,
        scheduler: Callable | None = None,
        discriminator: nn.Module | None = None,
        d_optimizer: OptimizerFactory | None = None,
        gan_weight: float = 0.1,
        sample_dir: str | Path | None = None,
        samples: int = 8,
        net_spec: dict | None = None,
        lr_schedule: str = "constant",
        pruner: Pruner | None = None,
        mask_lr: float = 1e-2,
        perceptual: PerceptualMetrics | None = None,
    ) -> None:
        super().__init__()
        if discriminator is not None and d_optimizer is None:
            raise ValueError("d_optimizer is required with a discriminator")
        if pruner is not None and discriminator is not None:
            raise ValueError(
                "pruner: fine-tuning under a pruner trains the generator with the reconstruction "
                "loss only; pass no discriminator"
            )
        self.pruner, self.mask_lr = pruner, float(mask_lr)
        self.net, self.loss, self.discriminator = net, loss, discriminator
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.d_optimizer_factory, self.gan_weight = d_optimizer, float(gan_weight)
        self.mask_generator, self.mask_seed, self.ramp_steps = mask_generator, mask_seed, ramp_steps
        self.eval_bins = list(eval_masks)
        # one (bins × per_bin) stack, so it moves with the module and is saved in no checkpoint
        self.register_buffer("eval_masks", torch.stack(list(eval_masks.values())), persistent=False)
        self.sample_dir = None if sample_dir is None else Path(sample_dir)
        self.samples = samples
        self.val_metrics = InpaintingMetrics()
        # LPIPS/FID: kept out of the module tree, so their networks stay out of checkpoints
        self.__dict__["perceptual"] = perceptual if perceptual and perceptual.enabled else None
        self.automatic_optimization = discriminator is None
        self._mask_rng: torch.Generator | None = None
        self._val_seen = 0
        self.validated_step: int | None = None  # the training step of the last validation
        self.net_spec = net_spec
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.lr_schedule = lr_schedule

    # -- masks --------------------------------------------------------------------------------

    def mask_rng(self) -> torch.Generator:
        if self._mask_rng is None:
            self._mask_rng = torch.Generator().manual_seed(
                self.mask_seed * 1_000_003 + self.global_rank
            )
        return self._mask_rng

    def training_masks(self, images: Tensor, keys: Tensor | None = None) -> Tensor:
        """One mask per image: from ``(mask_seed, key)`` per image when ``keys`` are given, else
        from this rank's stream."""
        progress = None if not self.ramp_steps else self.global_step / self.ramp_steps
        b, _, h, w = images.shape
        if keys is None:
            masks = self.mask_generator(
                b, h, w, generator=self.mask_rng(), device=images.device, progress=progress
            )
        else:
            masks = torch.cat(
                [
                    self.mask_generator(
                        1,
                        h,
                        w,
                        generator=sample_generator(self.mask_seed, key),
                        device=images.device,
                        progress=progress,
                    )
                    for key in keys.tolist()
                ]
            )
        return masks.to(images.dtype)

    def validation_masks(
        self, first: int, count: int, size: tuple[int, int], *, stride: int = 1, offset: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Masks and bin indices for validation images ``first ... first + count - 1`` of this
        process, which are the images ``offset + stride · i`` of the whole set."""
        n_bins, per_bin = self.eval_masks.shape[:2]
        if tuple(self.eval_masks.shape[-2:]) != size:
            raise ValueError(
                f"evaluation masks are {tuple(self.eval_masks.shape[-2:])} but validation images are "
                f"{size}; build them at the validation crop size"
            )
        index = torch.arange(first, first + count, device=self.eval_masks.device) * stride + offset
        bins = index % n_bins
        return self.eval_masks[bins, (index // n_bins) % per_bin], bins

    # -- steps --------------------------------------------------------------------------------

    def forward(self, image: Tensor, mask: Tensor) -> list[Tensor]:
        out = self.net(image, mask)
        return list(out) if isinstance(out, tuple | list) else [out]

    def _reconstruction(self, outputs: list[Tensor], images: Tensor, masks: Tensor, stage: str):
        total = 0.0
        for i, output in enumerate(outputs):
            value, terms = self.loss(output, images, masks)
            total = total + value
            suffix = "" if len(outputs) == 1 else f"_{i}"
            for name, term in terms.items():
                self.log(
                    f"{stage}/loss_{name}{suffix}",
                    term,
                    on_step=stage == "train",
                    on_epoch=True,
                    sync_dist=True,  # the mean over every process
                )
        return total

    def training_step(self, batch: Tensor | tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        images, keys = batch if isinstance(batch, tuple | list) else (batch, None)
        if self.pruner is not None:
            sparsity = self.pruner.step(self.global_step)
            self.log("prune/sparsity", sparsity, on_step=True, on_epoch=False)
        masks = self.training_masks(images, keys)
        outputs = self(images, masks)
        loss = self._reconstruction(outputs, images, masks, "train")
        if self.pruner is not None and self.pruner.penalty_weight:
            penalty = self.pruner.penalty()
            self.log("train/penalty", penalty, on_step=True, on_epoch=True, sync_dist=True)
            loss = loss + penalty
        if self.discriminator is None:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
            return loss
        g_opt, d_opt = self.optimizers()
        composite = mask_product(images, masks) + mask_product(outputs[-1], 1 - masks)
        g_adv = hinge_generator_loss(self.discriminator(composite, masks))
        g_total = loss + self.gan_weight * g_adv
        g_opt.zero_grad()
        self.manual_backward(g_total)
        g_opt.step()
        d_loss = hinge_discriminator_loss(
            self.discriminator(images, masks), self.discriminator(composite.detach(), masks)
        )
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        self.log_dict(
            {"train/loss": g_total, "train/g_adv": g_adv, "train/d_loss": d_loss},
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            sync_dist=True,
        )
        return None

    def on_validation_epoch_start(self) -> None:
        self._val_seen = 0
        if self.perceptual is not None:  # not a submodule, so it does not follow the task's device
            self.perceptual.to(self.device)

    def validation_step(self, images: Tensor, batch_idx: int) -> None:
        masks, bins = self.validation_masks(
            self._val_seen,
            images.shape[0],
            tuple(images.shape[-2:]),
            stride=self.trainer.world_size,
            offset=self.global_rank,
        )
        self._val_seen += images.shape[0]
        masks = masks.to(images.dtype)
        outputs = self(images, masks)
        loss = self._reconstruction(outputs, images, masks, "val")
        self.log("val/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True)
        composite = mask_product(images, masks) + mask_product(outputs[-1].clamp(0, 1), 1 - masks)
        self.val_metrics.update(composite, images, masks, bins)
        if self.perceptual is not None:
            self.perceptual.update(composite, images)
        if batch_idx == 0:
            self._save_samples(images, masks, outputs[-1], composite)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validated_step = self.global_step
        values = {f"val/{k}": v for k, v in self.val_metrics.compute().items()}
        # already over every process (torchmetrics syncs its states); sync_dist keeps Lightning
        # from warning, and a mean of equal values changes nothing
        self.log("val/psnr", values.pop("val/psnr"), prog_bar=True, sync_dist=True)
        if self.perceptual is not None:
            values.update({f"val/{k}": v for k, v in self.perceptual.compute().items()})
            self.perceptual.reset()
        self.log_dict(values, sync_dist=True)
        self.val_metrics.reset()

    # -- samples ------------------------------------------------------------------------------

    def _save_samples(self, images, masks, output, composite) -> None:
        n = min(self.samples, images.shape[0])
        grey = torch.full_like(images[:n], 0.5)
        masked = mask_product(images[:n], masks[:n]) + mask_product(grey, 1 - masks[:n])
        # rows: masked input | output | composite | target
        rows = [
            torch.cat(list(t[:n].clamp(0, 1).float().cpu()), dim=2)
            for t in (masked, output, composite, images)
        ]
        grid = torch.cat(rows, dim=1)
        if (
            self.sample_dir is not None
            and self.global_rank == 0
            and not self.trainer.sanity_checking
        ):
            save_image(self.sample_dir / f"epoch_{self.current_epoch:03d}.png", grid)
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image"):
            experiment.add_image("val/samples", grid, self.global_step)
        elif experiment is not None and hasattr(self.logger, "log_image"):
            self.logger.log_image("val/samples", [grid], step=self.global_step)

    # -- optimisers and state -----------------------------------------------------------------

    def configure_optimizers(self):
        if self.pruner is not None:
            masks = self.pruner.mask_parameters()
            groups = [{"params": self.pruner.weight_parameters()}]
            if masks:
                groups.append({"params": masks, "lr": self.mask_lr})
            optimizer = self.optimizer_factory(groups)
        else:
            optimizer = self.optimizer_factory(self.net.parameters())
        if self.discriminator is not None:
            return [optimizer, self.d_optimizer_factory(self.discriminator.parameters())]
        if self.scheduler_factory is not None:
            scheduler = self.scheduler_factory(optimizer)
        elif self.lr_schedule == "cosine":
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        else:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the training masks continue exactly after a resume
        checkpoint["mask_rng_state"] = self.mask_rng().get_state()
        if self.net_spec is not None:
            checkpoint["net_spec"] = self.net_spec

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("mask_rng_state")
        if state is not None:
            self.mask_rng().set_state(state)
