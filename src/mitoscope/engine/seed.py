"""Seeds and random-number-generator state, so that runs repeat and resume exactly."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Examples:
        >>> seed_everything(3); a = torch.rand(1)
        >>> seed_everything(3); bool(torch.equal(a, torch.rand(1)))
        True
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Snapshot of every global generator (to store in a checkpoint).

    Examples:
        >>> s = get_rng_state(); a = torch.rand(1); set_rng_state(s); bool(torch.equal(a, torch.rand(1)))
        True
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state_plain(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state_plain() -> list[Any]:
    """NumPy's legacy global state as plain Python values, so checkpoints load with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot made by :func:`get_rng_state` (missing parts are left alone)."""
    if "python" in state:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state(
            (name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))
        )
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        # a different number of GPUs: keep the fresh state
        with contextlib.suppress(RuntimeError, ValueError):
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: seed ``random`` and NumPy from torch's per-worker seed."""
    seed = torch.initial_seed() % (2**32)
    random.seed(seed + worker_id)
    np.random.seed((seed + worker_id) % (2**32))
