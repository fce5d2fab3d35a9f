"""The inpainting LightningModule: a U-Net with one optimizer, the GAN variant with two, and
fine-tuning under a pruner with the masks' own optimizer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from masking.checks import check_int
from masking.functional import mask_product
from masking.generators import MaskGenerator, sample_generator
from masking.pruning import Pruner

from ..runtime.checkpoints import check_resume
from ..runtime.files import save_image
from .inference import coarse_to_fine, pyramid_levels
from .losses import InpaintingLoss, hinge_discriminator_loss, hinge_generator_loss
from .metrics import InpaintingMetrics, PerceptualMetrics
from .optim import (
    OptimizerFactory,
    SchedulerFactory,
    as_list,
    build_scheduler,
    manual_step,
    run_steps,
)

log = logging.getLogger(__name__)


@dataclass
class Adversarial:
    """The SN-PatchGAN variant's parts (Yu et al., 2019): the discriminator, its optimizer
    factory and the weight of the generator's hinge loss. One discriminator step per generator
    step."""

    discriminator: nn.Module
    optimizer: OptimizerFactory
    weight: float = 0.1


class InpaintingModule(pl.LightningModule):
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
        scheduler: factory of each optimizer's learning-rate schedule (see
            :mod:`tasks.modules.optim`), stepped per optimizer step; None: constant.
        gan: the adversarial variant (:class:`Adversarial`), or None.
        sample_dir: where the validation sample grids are written as PNG.
        samples: images per sample grid.
        net_spec: the network's ``_target_`` and arguments, saved in checkpoints so that
            ``task=predict`` can rebuild it without the training config or pickled objects.
        pruner: a :class:`~masking.pruning.Pruner` whose masks are attached to ``net``
            (``task=prune_inpaint``): each step first sets the masks for that step, the loss gains
            the estimator's penalty, and the estimator's parameters (scores, gates, thresholds)
            are trained by ``mask_optimizer`` while the weights keep ``optimizer``.
        mask_optimizer: factory for the estimator parameters' optimizer.
        perceptual: LPIPS and FID of the validation composites, when their weights are local.
        coarse_side: the side of the training crops. Saved in checkpoints, so that inference
            (``task=predict``, ``task=serve``) fills images at least twice that size coarse to
            fine (:func:`~tasks.modules.inference.coarse_to_fine`); validation scores its
            composites the same way. ``None``: one plain pass at every size.
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
        scheduler: SchedulerFactory | None = None,
        gan: Adversarial | None = None,
        sample_dir: str | Path | None = None,
        samples: int = 8,
        net_spec: dict | None = None,
        pruner: Pruner | None = None,
        mask_optimizer: OptimizerFactory | None = None,
        perceptual: PerceptualMetrics | None = None,
        coarse_side: int | None = None,
    ) -> None:
        super().__init__()
        if coarse_side is not None:
            check_int("coarse_side", coarse_side, 8)
        self.coarse_side = coarse_side
        if pruner is not None and gan is not None:
            raise ValueError(
                "pruner: fine-tuning under a pruner trains the generator with the reconstruction "
                "loss only; pass no gan"
            )
        if pruner is not None and pruner.mask_parameters() and mask_optimizer is None:
            raise ValueError(f"mask_optimizer is required for the {pruner.method} pruner's masks")
        self.net, self.loss = net, loss
        self.discriminator = None if gan is None else gan.discriminator
        self.gan_weight = 0.0 if gan is None else float(gan.weight)
        self.d_optimizer_factory = None if gan is None else gan.optimizer
        self.pruner, self.mask_optimizer_factory = pruner, mask_optimizer
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.mask_generator, self.mask_seed, self.ramp_steps = mask_generator, mask_seed, ramp_steps
        self.eval_bins = list(eval_masks)
        # one (bins × per_bin) stack, so it moves with the module and is saved in no checkpoint
        self.register_buffer("eval_masks", torch.stack(list(eval_masks.values())), persistent=False)
        self.sample_dir = None if sample_dir is None else Path(sample_dir)
        self.samples = samples
        self.val_metrics = InpaintingMetrics()
        # LPIPS/FID: kept out of the module tree, so their networks stay out of checkpoints
        self.__dict__["perceptual"] = perceptual if perceptual and perceptual.enabled else None
        # the GAN and the pruner's masks have optimizers of their own, which Lightning's automatic
        # optimisation (one optimizer) cannot step
        self.automatic_optimization = gan is None and pruner is None
        self._mask_rng: torch.Generator | None = None
        self._val_seen = 0
        self._sample_rows: list[tuple[Tensor, ...]] = []
        self.validated_step: int | None = None  # the training step of the last validation
        self.net_spec = net_spec

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
            if not self.automatic_optimization:  # the pruner's masks have their own optimizer
                manual_step(self, loss, as_list(self.optimizers()), as_list(self.lr_schedulers()))
            return loss
        (g_opt, d_opt), schedulers = self.optimizers(), as_list(self.lr_schedulers())
        composite = mask_product(images, masks) + mask_product(outputs[-1], 1 - masks)
        g_adv = hinge_generator_loss(self.discriminator(composite, masks))
        g_total = loss + self.gan_weight * g_adv
        manual_step(self, g_total, [g_opt])
        d_loss = hinge_discriminator_loss(
            self.discriminator(images, masks), self.discriminator(composite.detach(), masks)
        )
        manual_step(self, d_loss, [d_opt], schedulers)
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
        self._sample_rows: list[tuple[Tensor, ...]] = []
        if self.perceptual is not None:  # not a submodule, so it does not follow the task's device
            self.perceptual.to(self.device)

    def _sample_positions(self) -> set[int] | None:
        """This process's validation images that go into the sample grid: ``samples`` of them
        spread evenly over all it sees (every photo of a small set, not the first batch's)."""
        loaders = getattr(self.trainer, "val_dataloaders", None)
        dataset = getattr(loaders, "dataset", None)
        try:
            total = len(dataset)
        except TypeError:
            return None
        local = -(-(total - self.global_rank) // self.trainer.world_size)
        n = min(self.samples, local)
        if n <= 1:
            return {0}
        return {round(k * (local - 1) / (n - 1)) for k in range(n)}

    def validation_step(self, images: Tensor, batch_idx: int) -> None:
        first = self._val_seen
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
        # the composite is scored as inference makes it: coarse to fine on large images
        levels = pyramid_levels(*images.shape[-2:], self.coarse_side)
        multiple = getattr(self.net, "size_multiple", 1) * 2**levels
        if levels and not images.shape[-1] % multiple and not images.shape[-2] % multiple:
            fill = coarse_to_fine(self.net, images, masks, levels)
        else:
            fill = outputs[-1].clamp(0, 1)
        composite = mask_product(images, masks) + mask_product(fill, 1 - masks)
        self.val_metrics.update(composite, images, masks, bins)
        if self.perceptual is not None:
            self.perceptual.update(composite, images)
        positions = self._sample_positions()
        for i in range(images.shape[0]):
            wanted = i < self.samples if positions is None else first + i in positions
            if wanted and len(self._sample_rows) < self.samples:
                self._sample_rows.append(
                    tuple(t[i].detach().float().cpu() for t in (images, masks, fill, composite))
                )

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
        if self._sample_rows:
            self._save_samples(*(torch.stack(t) for t in zip(*self._sample_rows)))
            self._sample_rows = []

    # -- samples ------------------------------------------------------------------------------

    def _save_samples(self, images, masks, fill, composite) -> None:
        n = min(self.samples, images.shape[0])
        grey = torch.full_like(images[:n], 0.5)
        masked = mask_product(images[:n], masks[:n]) + mask_product(grey, 1 - masks[:n])
        # rows: masked input | output | composite | target
        rows = [
            torch.cat(list(t[:n].clamp(0, 1).float().cpu()), dim=2)
            for t in (masked, fill, composite, images)
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

    def on_fit_start(self) -> None:
        # whatever mode the network was handed over in (a graph tracer, an evaluation, may leave
        # it in eval mode), it trains in train mode: BatchNorm statistics depend on it
        self.net.train()
        if self.discriminator is not None:
            self.discriminator.train()

    def configure_optimizers(self):
        if self.pruner is not None:
            optimizers = [self.optimizer_factory(self.pruner.weight_parameters())]
            masks = self.pruner.mask_parameters()
            if masks:
                optimizers.append(self.mask_optimizer_factory(masks))
        else:
            optimizers = [self.optimizer_factory(self.net.parameters())]
        if self.discriminator is not None:
            optimizers.append(self.d_optimizer_factory(self.discriminator.parameters()))
        steps = run_steps(self)
        schedulers = [build_scheduler(self.scheduler_factory, o, steps) for o in optimizers]
        schedulers = [s for s in schedulers if s is not None]
        if not self.automatic_optimization:
            return (optimizers, schedulers) if schedulers else optimizers
        (optimizer,) = optimizers
        if not schedulers:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedulers[0], "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the training masks continue exactly after a resume
        checkpoint["mask_rng_state"] = self.mask_rng().get_state()
        if self.net_spec is not None:
            checkpoint["net_spec"] = self.net_spec
        checkpoint["inference"] = {"coarse_side": self.coarse_side}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_resume(self, checkpoint)
        state = checkpoint.get("mask_rng_state")
        if state is not None:
            self.mask_rng().set_state(state)
