"""Text for the language-model jobs: any text file or folder, or, by default, the Python standard
library's own source code, which every Python installation carries (no download, and not text we
wrote).

Files are split whole into training and held-out sets (a file's name decides, so a held-out file is
never seen in training); a byte-level BPE tokenizer is trained on the training files with Hugging
Face ``tokenizers``; both token streams and the tokenizer are cached under ``cache_dir``, keyed by
the files' contents and the settings. Training examples are the training stream cut into
sequences of ``seq_len`` tokens; perplexity is measured on the held-out stream cut the same way;
calibration sets for one-shot pruning are random windows of the training stream, seeded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sysconfig
import zlib
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from masking.checks import check_int
from masking.generators import keyed_generator
from masking.io import write_atomic

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
_CALIBRATION = 11  # keyed_generator purpose of calibration windows
_FORMAT = 1  # bump when the split or the encoding changes


def stdlib_root() -> Path:
    """The folder of the running Python's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The standard library's ``.py`` files, without its test suites and installed packages."""
    root = stdlib_root()
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = [
        p for p in sorted(root.rglob("*.py")) if not skip.intersection(p.relative_to(root).parts)
    ]
    if not files:
        raise FileNotFoundError(
            f"data: no Python source in the standard library folder {str(root)!r}; give a text "
            "file or folder with data.path=..."
        )
    return files


def text_files(path: str | Path) -> list[Path]:
    """``path`` itself (a file) or every file under it (a folder) that reads as UTF-8 text."""
    path = Path(path)
    if path.is_file():
        candidates = [path]
    elif path.is_dir():
        candidates = [p for p in sorted(path.rglob("*")) if p.is_file()]
    else:
        raise FileNotFoundError(f"data.path: no such file or folder: {str(path)!r}")
    files = [p for p in candidates if _is_text(p)]
    if not files:
        raise ValueError(f"data.path: {str(path)!r} holds no UTF-8 text file")
    return files


def _is_text(path: Path) -> bool:
    try:
        head = path.read_bytes()[:4096]
        head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return b"\0" not in head


def split_files(files: list[Path], root: Path, val_fraction: float) -> tuple[list, list]:
    """``(train, held_out)`` texts: a file is held out when the CRC-32 of its path relative to
    ``root`` falls in the first ``val_fraction`` of the range. A single file is split by lines
    instead: its last ``val_fraction`` of lines are held out."""
    texts = [(p, p.read_text(encoding="utf-8", errors="replace")) for p in files]
    if len(texts) == 1:
        lines = texts[0][1].splitlines(keepends=True)
        cut = len(lines) - max(1, round(val_fraction * len(lines)))
        return ["".join(lines[:cut])], ["".join(lines[cut:])]
    bound = val_fraction * 2**32
    train, val = [], []
    for path, text in texts:
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        (val if zlib.crc32(name.encode()) < bound else train).append(text)
    if not train or not val:
        raise ValueError(
            f"data: {len(files)} files give an empty {'training' if not train else 'held-out'} "
            f"split at val_fraction={val_fraction:g}; give more files or another fraction"
        )
    return train, val


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (every byte is a token, so any text encodes) of ``vocab_size``
    tokens, ``<|endoftext|>`` among them, trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode(tokenizer: Any, texts: list[str]) -> Tensor:
    """The texts as one int32 token stream, each followed by ``<|endoftext|>`` (when the
    tokenizer has it)."""
    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.int32)


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer saved as ``tokenizer.json`` (data: no code runs)."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own Exception type
        first = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise ValueError(f"tokenizer: {str(path)!r} is not a tokenizer.json: {first}") from None


class TextDataModule(LightningDataModule):
    """Token sequences of a text corpus for causal language modelling.

    Args:
        path: a text file or folder; None: the Python standard library's source (the default).
        vocab_size: tokens of the BPE tokenizer trained on the training files.
        seq_len: tokens per training and evaluation sequence.
        batch_size: sequences per training batch.
        val_fraction: share of the files held out (perplexity is measured on them).
        max_val_sequences: evaluation sequences used at most (the first ones).
        cache_dir: where the tokenizer and the token streams are kept.
        num_workers: DataLoader workers.
        tokenizer_file: a ``tokenizer.json`` to encode with (a pretrained model's own) instead
            of training one; ``vocab_size`` is then the tokenizer's.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        vocab_size: int = 4096,
        seq_len: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.1,
        max_val_sequences: int = 64,
        cache_dir: str = ".cache/text",
        num_workers: int = 0,
        tokenizer_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.vocab_size = check_int("data.vocab_size", vocab_size, 257)
        self.seq_len = check_int("data.seq_len", seq_len, 2)
        self.batch_size = check_int("data.batch_size", batch_size, 1)
        self.max_val_sequences = check_int("data.max_val_sequences", max_val_sequences, 1)
        if isinstance(val_fraction, bool) or not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction!r}")
        self.val_fraction = float(val_fraction)
        self.cache_dir = Path(cache_dir)
        self.num_workers = check_int("data.num_workers", num_workers, 0)
        self.tokenizer_file = None if tokenizer_file is None else Path(tokenizer_file)
        self.tokenizer: Any = None
        self.train_ids: Tensor | None = None
        self.val_ids: Tensor | None = None

    # --------------------------------------------------------------------------------- loading
    def describe(self) -> str:
        source = "the Python standard library's source" if self.path is None else self.path
        return f"{source} ({len(self.train_ids):,} training tokens, {len(self.val_ids):,} held out)"

    def setup(self, stage: str | None = None) -> None:
        if self.train_ids is not None:
            return
        if self.path is None:
            files, root = stdlib_files(), stdlib_root()
        else:
            files = text_files(self.path)
            root = Path(self.path) if Path(self.path).is_dir() else Path(self.path).parent
        digest = hashlib.sha256()
        for name in (_FORMAT, self.vocab_size, self.val_fraction):
            digest.update(repr(name).encode())
        if self.tokenizer_file is not None:
            digest.update(hashlib.sha256(self.tokenizer_file.read_bytes()).digest())
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        folder = self.cache_dir / f"tokens-{digest.hexdigest()[:16]}"
        if (folder / "tokens.pt").is_file() and (folder / "tokenizer.json").is_file():
            state = torch.load(folder / "tokens.pt", weights_only=True)
            self.train_ids, self.val_ids = state["train"], state["val"]
            self.tokenizer = load_tokenizer(folder / "tokenizer.json")
        else:
            train, val = split_files(files, root, self.val_fraction)
            if self.tokenizer_file is not None:
                self.tokenizer = load_tokenizer(self.tokenizer_file)
            else:
                log.info(
                    "Training a %d-token BPE tokenizer on %d texts", self.vocab_size, len(train)
                )
                self.tokenizer = train_tokenizer(train, self.vocab_size)
            self.train_ids, self.val_ids = (
                encode(self.tokenizer, train),
                encode(self.tokenizer, val),
            )
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / "tokenizer.json", self.tokenizer.to_str().encode())
            buffer = _serialised({"train": self.train_ids, "val": self.val_ids})
            write_atomic(folder / "tokens.pt", buffer)
            meta = {"files": len(files), "root": str(root), "train": len(self.train_ids)}
            write_atomic(folder / "source.json", json.dumps(meta, indent=2).encode())
        if len(self.val_ids) < self.seq_len:
            raise ValueError(
                f"data: the held-out text is {len(self.val_ids)} tokens, shorter than one "
                f"sequence (data.seq_len={self.seq_len})"
            )
        if len(self.train_ids) < self.seq_len * self.batch_size:
            raise ValueError(
                f"data: the training text is {len(self.train_ids)} tokens, shorter than one batch "
                f"of data.batch_size={self.batch_size} sequences of data.seq_len={self.seq_len}"
            )
        self.cache_folder = folder

    # --------------------------------------------------------------------------------- batches
    def _sequences(self, ids: Tensor, limit: int | None = None) -> Tensor:
        count = len(ids) // self.seq_len
        if limit is not None:
            count = min(count, limit)
        return ids[: count * self.seq_len].view(count, self.seq_len).long()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self._sequences(self.train_ids)),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        sequences = self._sequences(self.val_ids, self.max_val_sequences)
        return DataLoader(TensorDataset(sequences), batch_size=self.batch_size)

    def calibration(self, samples: int, seed: int, seq_len: int | None = None) -> Tensor:
        """``samples`` random windows of the training stream, ``(samples, seq_len)`` int64."""
        seq_len = self.seq_len if seq_len is None else seq_len
        check_int("calibration samples", samples, 1)
        if len(self.train_ids) <= seq_len:
            raise ValueError(
                f"calibration: the training text ({len(self.train_ids)} tokens) is shorter than "
                f"one sequence of {seq_len}"
            )
        g = keyed_generator(seed, _CALIBRATION)
        starts = torch.randint(0, len(self.train_ids) - seq_len, (samples,), generator=g)
        return torch.stack([self.train_ids[s : s + seq_len] for s in starts.tolist()]).long()

    def example_input(self, batch: int, seq_len: int | None = None) -> Tensor:
        """The first ``batch`` held-out sequences (repeated if needed), for tracing and timing."""
        seq_len = self.seq_len if seq_len is None else seq_len
        needed = batch * seq_len
        ids = self.val_ids.repeat(needed // len(self.val_ids) + 1)[:needed]
        return ids.view(batch, seq_len).long()


def _serialised(payload: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()
