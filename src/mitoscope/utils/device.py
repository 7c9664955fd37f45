"""Which torch device a ``--device`` option means."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mitoscope.utils.errors import InputError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available (the local rank's GPU under torchrun), else CPU; else ``torch.device``.

    A CUDA device on a machine without CUDA is an :class:`InputError` (a ``ValueError``) that says so.

    Examples:
        >>> resolve_device("cpu").type
        'cpu'
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    import torch  # here, not at the top: the command-line tools start without torch

    if isinstance(device, torch.device):
        return device
    rank_gpu = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        return torch.device("cuda", rank_gpu) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return torch.device("cuda", rank_gpu) if device == "cuda" else dev
