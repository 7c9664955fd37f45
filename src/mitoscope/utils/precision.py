"""The arithmetic of an inference run: one vocabulary (``auto``, ``fp32``, ``bf16``, ``fp16``) for every model."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The arithmetic an inference run uses: ``"auto"`` → bf16 on a CPU with native bf16 (AVX512-BF16 or AMX),
    fp16 on CUDA, fp32 otherwise; explicit choices are checked.

    Examples:
        >>> resolve_precision("fp32", "cpu")
        'fp32'
        >>> resolve_precision("int8", "cpu")
        Traceback (most recent call last):
        ...
        ValueError: precision must be one of auto, fp32, bf16, fp16, got 'int8'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
        return precision
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def precision_context(precision: str, device: torch.device | str) -> torch.autocast:
    """Autocast for a resolved precision (disabled for fp32).

    Examples:
        >>> with precision_context("bf16", "cpu"):
        ...     torch.ones(2, 2) @ torch.ones(2, 2)
        tensor([[2., 2.],
                [2., 2.]], dtype=torch.bfloat16)
    """
    device = torch.device(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32")
