"""The small job configurations the job, sweep and tooling tests run, and reading their files."""

from __future__ import annotations

import json
from pathlib import Path

# the default inpainting job, scaled to seconds: a 3-level U-Net of width 8 on 32-px crops
INPAINT_FAST = [
    "task=inpaint",
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "data.crop_size=32",
    "data.batch_size=4",
    "data.samples_per_epoch=8",
    "data.max_val_crops=8",
    "data.val_size=64",
    "data.val_repeats=6",
    "task.eval_masks_per_bin=2",
    "net.depth=3",
    "net.base_width=8",
]


def prune_fast(tmp_path: Path) -> list[str]:
    """The default pruning job on a width-8 ResNet and 16-px digits, its dense model cached in
    ``tmp_path``."""
    return [
        "task=prune",
        "logger=none",
        "net.width=8",
        "data.size=16",
        "data.batch_size=32",
        "task.dense_epochs=1",
        "task.finetune_epochs=2",
        "+trainer.limit_train_batches=8",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "task.latency.onnxruntime=false",
        "task.latency.batches=[1,4]",
        f"task.cache_dir={tmp_path / 'cache'}",
    ]


def prune_inpaint_fast(tmp_path: Path, *extra: str) -> list[str]:
    """The inpainting pruning job on a 3-level width-8 U-Net, its dense model cached in
    ``tmp_path``."""
    return [
        "task=prune_inpaint",
        "logger=none",
        "net.depth=3",
        "net.base_width=8",
        "data.crop_size=32",
        "data.batch_size=8",
        "data.samples_per_epoch=64",
        "data.max_val_crops=12",
        "data.val_size=64",
        "data.val_repeats=6",
        "task.eval_masks_per_bin=2",
        "task.dense_steps=12",
        "task.finetune_steps=8",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "task.latency.onnxruntime=false",
        "task.latency.batches=[1,2]",
        f"task.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def prune_lm_fast(tmp_path: Path, *extra: str) -> list[str]:
    """The language-model pruning job on a 2-layer Llama (grouped-query attention, width 32) and
    the standard library's ``email`` package as its text, its dense model and tokens cached in
    ``tmp_path``."""
    import email

    return [
        "task=prune_lm",
        "logger=none",
        f"data.path={Path(email.__file__).parent}",
        "data.vocab_size=384",
        "data.seq_len=32",
        "data.batch_size=8",
        "data.val_fraction=0.2",
        "data.max_val_sequences=8",
        f"data.cache_dir={tmp_path / 'text'}",
        "net.hidden_size=32",
        "net.intermediate_size=64",
        "net.num_hidden_layers=2",
        "net.num_attention_heads=4",
        "net.num_key_value_heads=2",
        "task.dense_steps=8",
        "task.calibration.samples=8",
        "task.calibration.batch_size=4",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "task.latency.batches=[1,2]",
        f"task.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]
