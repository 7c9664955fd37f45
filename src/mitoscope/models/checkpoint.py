"""Checkpoints that carry their contract (after torchvision ``Weights`` / TIAToolbox ``ModelIOConfigABC``).

A checkpoint is a ``torch.save``d dict::

    {"format": "mitoscope-checkpoint", "version": 1,
     "contract": {...},            # ModelContract as a dict
     "state_dict": {...},          # model weights
     "extra": {...}}               # optional: optimizer state, epoch, metrics (training runs)
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mitoscope import __version__
from mitoscope.models.registry import create_model
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError

CHECKPOINT_FORMAT = "mitoscope-checkpoint"
CHECKPOINT_VERSION = 1


@dataclasses.dataclass
class ModelContract:
    """Everything inference needs to use a model without asking again."""

    architecture: str
    kwargs: dict[str, Any]
    task: str  # "classification" or "detection"
    input_size: int
    mpp: float = 0.25
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    class_names: tuple[str, ...] = ("normal", "atypical")
    thresholds: dict[str, float] = dataclasses.field(default_factory=lambda: {"default": 0.5})
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    code_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for saving."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelContract:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        for key in ("mean", "std", "class_names"):
            if key in kept:
                kept[key] = tuple(kept[key])
        return cls(**kept)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    contract: ModelContract,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically save ``model`` weights together with ``contract``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "contract": contract.to_dict(),
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU, checking that it is a mitoscope checkpoint.

    Loading never executes code from the file: ``torch.load(weights_only=True)`` accepts tensors and plain
    Python values only, so a crafted pickle from a stranger is refused with an error instead of run.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("checkpoint file not found", path=path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch's zip format or a bare pickle
        raise InputError(
            "not a mitoscope model (neither a checkpoint nor a bundled model's files)", path=path
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            "refusing to load: the file holds Python objects beyond tensors and plain values, which could run "
            f"code on this machine ({str(exc).splitlines()[0]})",
            path=path,
        ) from exc
    except Exception as exc:  # corrupt or not a torch file
        raise InputError(f"cannot read checkpoint ({exc})", path=path) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError("not a mitoscope checkpoint (no 'format' key)", path=path)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(
            f"checkpoint format version {payload.get('version')!r} is not supported by mitoscope {__version__} "
            f"(it reads version {CHECKPOINT_VERSION})",
            path=path,
        )
    return payload


def is_bundle_path(path: str | os.PathLike[str]) -> bool:
    """True for a bundled model's name (no such path on disk) or its ``.json`` / ``.safetensors`` file.

    Examples:
        >>> is_bundle_path("mitoscope-detector"), is_bundle_path("run/best.pt"), is_bundle_path("m.safetensors")
        (True, False, True)
    """
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        return True
    if p.suffix.lower() == ".json" and p.is_file():
        head = p.read_text(encoding="utf-8", errors="replace")[:4096]
        return '"mitoscope-bundled-model"' in head
    text = str(path)
    return bool(text) and "/" not in text and os.sep not in text and not p.suffix and not p.exists()


def load_model(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelContract]:
    """Rebuild the model a checkpoint (or a bundled model: its name or its files) describes, load its weights,
    and return it in eval mode."""
    if is_bundle_path(path):
        from mitoscope.models import pretrained  # lazy: models.pretrained imports this module (cycle)

        p = Path(path)
        if p.suffix.lower() in (".json", ".safetensors"):
            return pretrained.load_bundle(p.with_suffix(".json"), device=device)
        return pretrained.load_bundled(str(path), device=device)
    payload = read_checkpoint(path)
    contract = ModelContract.from_dict(payload["contract"])
    try:
        model = create_model(contract.architecture, **contract.kwargs)
    except (KeyError, TypeError) as exc:
        raise InputError(
            f"cannot build architecture {contract.architecture!r} (written by mitoscope {contract.code_version}): "
            f"{exc}",
            path=path,
        ) from exc
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(
            f"the weights do not fit architecture {contract.architecture!r} with its recorded arguments "
            f"(written by mitoscope {contract.code_version}): {first}",
            path=path,
        ) from exc
    model.to(device).eval()
    return model, contract
