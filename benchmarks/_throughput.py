"""A Lightning callback that times a training run batch by batch, for ``device_check.py``.

Each batch's time splits into the wait for data (from the end of one batch to the start of the
next: the loader and the transfer to the device) and the step itself (forward, backward and the
optimizer, synchronised with the device at the batch's end, so the GPU's work is counted where it
happens). The first ``warmup`` batches (compilation, cuDNN's autotuning, allocator growth) are left
out. At the end of training the totals go to ``path`` as JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


def _sync(module: pl.LightningModule) -> None:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class Throughput(pl.Callback):
    def __init__(self, path: str, warmup: int = 5) -> None:
        self.path = Path(path)
        self.warmup = warmup
        self.waits: list[float] = []
        self.steps: list[float] = []
        self.images = 0
        self._ended: float | None = None
        self._started = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        _sync(module)
        now = time.perf_counter()
        if self._ended is not None and batch_idx >= self.warmup:
            self.waits.append(now - self._ended)
        self._started = now

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        _sync(module)
        self._ended = time.perf_counter()
        if batch_idx >= self.warmup:
            self.steps.append(self._ended - self._started)
            images = batch[0] if isinstance(batch, tuple | list) else batch
            self.images += int(images.shape[0])

    def on_train_end(self, trainer, module) -> None:
        wait, step = sum(self.waits), sum(self.steps)
        total = wait + step
        report = {
            "timed_batches": len(self.steps),
            "images": self.images,
            "images_per_s": self.images / total if total else None,
            "step_images_per_s": self.images / step if step else None,
            "data_wait_fraction": wait / total if total else None,
            "median_step_ms": 1e3 * sorted(self.steps)[len(self.steps) // 2]
            if self.steps
            else None,
            "bottleneck": None if not total else ("data" if wait / total > 0.3 else "device"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(report, indent=2) + "\n")
