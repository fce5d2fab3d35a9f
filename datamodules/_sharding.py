"""How this package's datamodules split their data between the processes of a distributed run.

Process ``rank`` of ``world_size`` takes every ``world_size``-th item starting at ``rank`` (the
convention of torch's ``DistributedSampler`` without shuffling). Training samplers keep the same
number of items on every process, so process ``r``'s ``j``-th batch of ``b`` holds the items
``r, r + W, ...`` of the single-process batch of ``b · W``: the same global batch, whatever the
number of processes.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DistributedSampler


def process_shard(datamodule: Any) -> tuple[int, int]:
    """``(rank, world_size)`` while a distributed trainer runs ``datamodule``, else ``(0, 1)``.

    Outside ``fit``/``validate`` (an evaluation loop after training, a benchmark) every process
    sees all the data.
    """
    from pytorch_lightning.trainer.states import TrainerStatus

    trainer = getattr(datamodule, "trainer", None)
    if trainer is None or trainer.state.status != TrainerStatus.RUNNING:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


class ShardedSampler(DistributedSampler):
    """Base of this package's samplers, which yield this process's share (:meth:`shard`) of
    each epoch's keys.

    A ``DistributedSampler`` subclass, so that Lightning does not wrap it in its own distributed
    sampler (which would shuffle the order and shard it a second time). The sampler counts its own
    epochs, which the datamodule restores from checkpoints, so ``set_epoch`` does nothing.

    Args:
        rank, world_size: this process and the number of processes.
        even: cut every process to the same number of items (training: every process must take
            the same number of optimizer steps); validation keeps them all.
    """

    # DistributedSampler.__init__ needs a dataset and an initialised process group; this class
    # only takes its type and the (num_replicas, rank) attributes
    def __init__(self, rank: int = 0, world_size: int = 1, *, even: bool = True) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank!r}")
        self.rank, self.num_replicas, self.even = int(rank), int(world_size), even

    def set_epoch(self, epoch: int) -> None:
        pass

    def shard(self, keys: list[int]) -> list[int]:
        """This process's share of ``keys``."""
        mine = keys[self.rank :: self.num_replicas]
        return mine[: len(keys) // self.num_replicas] if self.even else mine

    def shard_length(self, total: int) -> int:
        if self.even:
            return total // self.num_replicas
        return len(range(self.rank, total, self.num_replicas))


class ShardSampler(ShardedSampler):
    """Items ``0 ... size - 1`` in order, this process's share (validation)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rank, world_size, even=False)
        self.size = size

    def __iter__(self):
        return iter(self.shard(list(range(self.size))))

    def __len__(self) -> int:
        return self.shard_length(self.size)
