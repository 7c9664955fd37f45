"""Thin helpers over ``torch.distributed`` for runs launched by ``torchrun``.

Launch any training command with ``torchrun --standalone --nproc_per_node N -m mitoscope ...``;
:func:`init_distributed` reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
starts a process group (NCCL on CUDA, Gloo on CPU). Without those variables everything here degrades to a
single process, so library code can call these helpers unconditionally.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    is_distributed: bool = False


def is_initialized() -> bool:
    """True when a ``torch.distributed`` process group is active."""
    return dist.is_available() and dist.is_initialized()


def get_info() -> DistInfo:
    """The current :class:`DistInfo` (a single process when no group is active).

    Examples:
        >>> get_info().world_size >= 1
        True
    """
    if not is_initialized():
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        is_distributed=True,
    )


def init_distributed(backend: str | None = None, *, device: str | None = None) -> DistInfo:
    """Start the process group described by torchrun's environment variables, if any.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when CUDA is used, Gloo otherwise.
        device: ``"cpu"`` forces Gloo even on a GPU machine.

    Returns:
        The :class:`DistInfo` of this process; ``is_distributed`` is False outside torchrun (or with
        ``WORLD_SIZE=1``), in which case nothing is initialised.

    Examples:
        >>> init_distributed().is_distributed  # not under torchrun
        False
    """
    if is_initialized():
        return get_info()
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1 or "RANK" not in os.environ:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return get_info()


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return get_info().rank == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_initialized():
        dist.barrier()


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process).

    Examples:
        >>> all_gather_object({"n": 1})
        [{'n': 1}]
    """
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
    if not is_initialized():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: dict[str, float], weight: float = 1.0) -> dict[str, float]:
    """Weighted mean of ``values`` over the ranks (each rank's ``weight`` is e.g. its batch count)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    buf = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        buf = buf.cuda()
    dist.all_reduce(buf)
    total = float(buf[-1])
    return {k: float(buf[i]) / max(total, 1e-12) for i, k in enumerate(keys)}


def cleanup() -> None:
    """Destroy the process group if one is active."""
    if is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of ``items`` (strided, disjoint, together covering all items).

    Examples:
        >>> shard(list(range(7)), 1, 3)
        [1, 4]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    return list(items[rank::world_size])


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (the model itself otherwise)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model
