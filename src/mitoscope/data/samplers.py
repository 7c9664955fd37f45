"""Class-balanced sampling, deterministic and epoch-settable, with a distributed variant.

A sampler only emits indices: it reads the labels once and knows nothing of images (MONAI / timm style).
Every rank of a distributed run draws the same global sequence from ``(seed, epoch)`` and keeps its own
strided shard, so the shards are disjoint and every rank sees the same number of samples per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


def class_balanced_weights(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-sample weights ``1 / count(class)``, normalised to sum to 1 (each class gets equal mass).

    Examples:
        >>> class_balanced_weights([0, 0, 0, 1]).round(3).tolist()
        [0.167, 0.167, 0.167, 0.5]
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("labels must be a non-empty 1-D sequence")
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse].astype(np.float64)
    return w / w.sum()


class ClassBalancedSampler(Sampler[int]):
    """Draw indices with replacement so that every class is equally likely (``WeightedRandomSampler``-like).

    Deterministic: the draw of epoch ``e`` depends only on ``(seed, e)``; call :meth:`set_epoch` each epoch.

    Args:
        labels: class of each sample (any hashable values; e.g. the catalog's ``target``).
        num_samples: samples per epoch over all ranks (default: ``len(labels)``).
        seed: base seed.
        rank: this process's rank (0 outside distributed runs).
        world_size: number of ranks (1 outside distributed runs).

    Examples:
        >>> s = ClassBalancedSampler([0] * 90 + [1] * 10, seed=0)
        >>> s.set_epoch(1); idx = list(s)
        >>> len(idx), bool(0.35 < np.mean(np.array(idx) >= 90) < 0.65)
        (100, True)
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world size {world_size}")
        self.weights = torch.as_tensor(class_balanced_weights(labels), dtype=torch.float64)
        total = len(self.weights) if num_samples is None else int(num_samples)
        if total <= 0:
            raise ValueError(f"num_samples must be positive, got {total}")
        self.rank, self.world_size = rank, world_size
        self.num_samples = math.ceil(total / world_size)  # per rank
        self.total_size = self.num_samples * world_size
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draw = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        return iter(draw[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


class DistributedClassBalancedSampler(ClassBalancedSampler):
    """:class:`ClassBalancedSampler` that takes rank and world size from the active process group.

    Examples:
        >>> len(DistributedClassBalancedSampler([0, 1, 1, 1]))  # single process: the whole epoch
        4
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if active else 1
        if rank is None:
            rank = dist.get_rank() if active else 0
        super().__init__(labels, num_samples=num_samples, seed=seed, rank=rank, world_size=world_size)


class ShardedSequentialSampler(Sampler[int]):
    """Each rank's strided share of ``range(n)`` in order, without padding (for evaluation).

    Examples:
        >>> list(ShardedSequentialSampler(5, rank=1, world_size=2))
        [1, 3]
    """

    def __init__(self, n: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochTaggedSampler(Sampler[tuple[int, int]]):
    """Wrap a sampler so that it yields ``(index, epoch)``: the dataset learns the epoch from the index itself.

    With ``persistent_workers=True`` the DataLoader workers keep their copy of the dataset (and its patch cache)
    across epochs, so ``dataset.set_epoch`` in the main process would not reach them; the epoch travelling
    with each index keeps the per-sample augmentation RNG ``(seed, epoch, index)`` right in every worker.

    Examples:
        >>> s = EpochTaggedSampler(ShardedSequentialSampler(3))
        >>> s.set_epoch(2); list(s)
        [(0, 2), (1, 2), (2, 2)]
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch`` here and in the wrapped sampler (when it has ``set_epoch``)."""
        self.epoch = int(epoch)
        inner = getattr(self.sampler, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((int(i), epoch) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
