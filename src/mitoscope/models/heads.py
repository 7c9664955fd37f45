"""Heads of the classifier models, the hardness classes of expert votes, and input checks shared by the models."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn


class MLPHead(nn.Module):
    """Fully connected layers with ReLU and dropout, e.g. ``in → 512 → 256 → 1``.

    Args:
        in_features: input width.
        hidden: widths of the hidden layers (each Linear → ReLU → Dropout).
        out_features: outputs of the last Linear layer.
        dropout: dropout probability after each hidden layer (and before it when ``input_dropout``).

    Examples:
        >>> head = MLPHead(64, hidden=(512, 256), out_features=1)
        >>> head(torch.zeros(2, 64)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden: Sequence[int] = (512, 256),
        out_features: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layers to ``(N, in_features)`` in float32 (see :func:`in_float32`)."""
        return in_float32(self.layers, x)


def in_float32(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` in float32 even inside an autocast region.

    Heads are cheap; running them in full precision keeps logits (and so probabilities, thresholds and rankings)
    free of bf16/fp16 rounding when the backbone runs in mixed precision.

    Examples:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     in_float32(nn.Linear(2, 1), torch.ones(3, 2, dtype=torch.bfloat16)).dtype
        torch.float32
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return module(x.float())


def _valid_votes(votes: Iterable[object]) -> list[int]:
    out = []
    for v in votes:
        if v is None:
            continue
        f = float(v)  # type: ignore[arg-type]
        if math.isnan(f) or f < 0:
            continue
        out.append(1 if f >= 0.5 else 0)
    return out


def hardness_class(votes: Iterable[object], n_classes: int = 2, *, label: float | None = None) -> int:
    """Hardness class of one sample from its expert votes (1 = atypical, 0 = normal; -1/None/NaN = missing).

    * ``n_classes=2``: 0 = easy (all available votes agree), 1 = hard (the experts disagree).
    * ``n_classes=4`` (agreement pattern): 0 = unanimous normal, 1 = normal by majority with dissent,
      2 = atypical by majority with dissent, 3 = unanimous atypical.

    A tie (e.g. two experts, one vote each way) is hard; its side comes from ``label`` when given, else
    atypical. Fewer than one valid vote counts as easy (side from ``label``, else normal).

    Examples:
        >>> hardness_class([1, 1, 1]), hardness_class([1, 0, 1]), hardness_class([0, 0, -1])
        (0, 1, 0)
        >>> [hardness_class(v, 4) for v in ([0, 0, 0], [0, 1, 0], [1, 0, 1], [1, 1, 1])]
        [0, 1, 2, 3]
    """
    if n_classes not in (2, 4):
        raise ValueError(f"n_classes must be 2 or 4, got {n_classes}")
    valid = _valid_votes(votes)
    positive = sum(valid)
    negative = len(valid) - positive
    hard = positive > 0 and negative > 0
    if n_classes == 2:
        return int(hard)
    if positive > negative:
        atypical = True
    elif negative > positive:
        atypical = False
    else:
        atypical = bool(label >= 0.5) if label is not None else bool(valid)
    if atypical:
        return 2 if hard else 3
    return 1 if hard else 0


def check_images(images: object, *, in_chans: int = 3, min_size: int = 1, model: str = "model") -> Tensor:
    """Check that ``images`` is a float ``(N, in_chans, H, W)`` tensor and return it.

    Examples:
        >>> check_images(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"{model}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{model}: images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(
            f"{model}: images must be a float tensor normalised with mean/std, got {images.dtype}"
        )
    if images.shape[1] != in_chans:
        raise ValueError(f"{model}: expected {in_chans} input channels, got {images.shape[1]}")
    if min(images.shape[2:]) < min_size:
        raise ValueError(
            f"{model}: images must be at least {min_size}×{min_size}, got {tuple(images.shape[2:])}"
        )
    return images


def check_targets(
    targets: Mapping[str, Tensor] | None, required: Iterable[str], n: int, *, model: str = "model"
) -> Mapping[str, Tensor]:
    """Check that ``targets`` holds every key in ``required`` with batch size ``n``.

    Examples:
        >>> list(check_targets({"label": torch.zeros(2)}, {"label"}, 2))
        ['label']
    """
    if targets is None:
        raise ValueError(f"{model}: training mode needs targets with keys {sorted(required)}")
    if not isinstance(targets, Mapping):
        raise TypeError(f"{model}: targets must be a dict of tensors, got {type(targets).__name__}")
    missing = [k for k in sorted(required) if k not in targets]
    if missing:
        raise ValueError(f"{model}: targets lack {missing} (required: {sorted(required)})")
    for key in required:
        value = targets[key]
        if not isinstance(value, Tensor):
            raise TypeError(f"{model}: target {key!r} must be a tensor, got {type(value).__name__}")
        if value.ndim == 0 or value.shape[0] != n:
            raise ValueError(
                f"{model}: target {key!r} has shape {tuple(value.shape)}, expected batch size {n}"
            )
    return targets


def label_target(targets: Mapping[str, Tensor], n: int, *, model: str = "model") -> Tensor:
    """The ``label`` target as float ``(N,)`` 0/1."""
    label = targets["label"].reshape(-1)
    if label.shape[0] != n:
        raise ValueError(f"{model}: target 'label' must be (N,), got {tuple(targets['label'].shape)}")
    label = label.float()
    if label.numel() and (bool((label < 0).any()) or bool((label > 1).any())):
        raise ValueError(f"{model}: target 'label' must hold 0/1 values")
    return label


def vote_fraction_target(targets: Mapping[str, Tensor], n: int, *, model: str = "model") -> Tensor:
    """Soft label ``(N,)``: the share of the experts who voted atypical (the 0/1 ``label`` where none voted).

    ``targets["experts"]`` is ``(N, E)`` with 1 atypical, 0 normal and -1 (or NaN) for a missing vote.

    Examples:
        >>> t = {"label": torch.tensor([1.0, 0.0]), "experts": torch.tensor([[1.0, 1.0, 0.0], [-1.0, -1.0, -1.0]])}
        >>> [round(v, 3) for v in vote_fraction_target(t, 2).tolist()]
        [0.667, 0.0]
    """
    label = label_target(targets, n, model=model)
    votes = torch.nan_to_num(targets["experts"].float(), nan=-1.0).reshape(n, -1)
    valid = votes >= 0
    n_valid = valid.sum(dim=1)
    share = (votes.clamp(min=0) * valid).sum(dim=1) / n_valid.clamp(min=1)
    return torch.where(n_valid > 0, share, label)


def prob_to_logit(prob: Tensor, eps: float = 1e-6) -> Tensor:
    """Inverse sigmoid with clamping, for models whose probability is not a single logit's sigmoid."""
    return torch.logit(prob.clamp(eps, 1 - eps))
