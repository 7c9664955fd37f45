"""``atypical_single``: single-task atypical-vs-normal baseline (backbone → 3-FC head, weighted BCE).

Also holds :class:`AtypicalClassifier`, the base every atypical classifier shares: the eval/train output
contract, ``required_targets`` and ``build_kwargs`` (what to write into a checkpoint contract).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from mitoscope.models.backbones import Pretrained, backbone_normalization, create_backbone
from mitoscope.models.backbones import num_features as _num_features
from mitoscope.models.heads import MLPHead, check_images, check_targets, label_target, vote_fraction_target
from mitoscope.models.losses import mixup_batch, weighted_bce
from mitoscope.models.registry import register_model


class AtypicalClassifier(nn.Module):
    """Base of the atypical-vs-normal classifiers.

    Contract: ``model(images)`` in eval mode returns a dict with ``"logits"`` ``(N,)`` and ``"prob"`` ``(N,)``
    = P(atypical); in train mode ``model(images, targets)`` returns a dict of named, unweighted losses.
    ``images`` are float ``(N, 3, H, W)`` normalised with ``model.mean`` / ``model.std``.

    Attributes:
        required_targets: target keys the training forward needs (the dataset produces them).
        build_kwargs: keyword arguments that rebuild this model with ``create_model(architecture, **kw)``.
        architecture: the registered name.
        mean, std: input normalisation the backbone expects.
    """

    architecture: str = ""
    required_targets: set[str]
    build_kwargs: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min_input_size: int = 32

    def forward(self, images: Tensor, targets: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Predictions (eval mode) or named losses (train mode)."""
        check_images(images, in_chans=3, min_size=self.min_input_size, model=self.architecture)
        if self.training:
            check_targets(targets, self.required_targets, images.shape[0], model=self.architecture)
            assert targets is not None
            return self._losses(images, targets)
        return self._predict(images)

    def _predict(self, images: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _losses(self, images: Tensor, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError


class AtypicalSingle(AtypicalClassifier):
    """Backbone (pooled features) → fully connected head (512-256-1 by default) → P(atypical).

    Args:
        backbone: timm name (pooled features).
        pretrained: see :func:`mitoscope.models.backbones.create_backbone`.
        dropout: dropout after each hidden FC layer.
        hidden: hidden widths of the head.
        pos_weight: weight of the atypical class in the BCE (``n_normal / n_atypical`` from the training data).
        drop_path_rate: stochastic depth of the backbone (when it supports it).
        frozen_stages: freeze the backbone's stem and first stages
            (:func:`mitoscope.models.backbones.freeze_stages`).
        soft_labels: train on the share of experts who voted atypical (needs the ``experts`` votes, as
            AMi-Br has) instead of the 0/1 majority label: patches the experts disagree on count as uncertain.
        mixup_alpha: blend training images and their targets pairwise, ``λ ~ Beta(mixup_alpha, mixup_alpha)``
            (:func:`~mitoscope.models.losses.mixup_batch`); 0 turns it off.

    Examples:
        >>> m = AtypicalSingle(backbone="test_resnet").eval()
        >>> sorted(m(torch.zeros(2, 3, 64, 64)))
        ['logits', 'prob']
    """

    architecture = "atypical_single"

    def __init__(
        self,
        *,
        backbone: str = "resnetv2_50",
        pretrained: Pretrained = False,
        dropout: float = 0.3,
        hidden: Sequence[int] = (512, 256),
        pos_weight: float = 1.0,
        drop_path_rate: float = 0.0,
        frozen_stages: int = 0,
        soft_labels: bool = False,
        mixup_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        if mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0, got {mixup_alpha}")
        extra: dict[str, Any] = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        extra["frozen_stages"] = frozen_stages
        self.backbone = create_backbone(backbone, pretrained=pretrained, **extra)
        self.head = MLPHead(_num_features(self.backbone), hidden=hidden, out_features=1, dropout=dropout)
        self.pos_weight = float(pos_weight)
        self.mean, self.std = backbone_normalization(backbone, pretrained)
        self.soft_labels = bool(soft_labels)
        self.mixup_alpha = float(mixup_alpha)
        self.required_targets = {"label", "experts"} if soft_labels else {"label"}

    def _logits(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images)).squeeze(1)

    def _predict(self, images: Tensor) -> dict[str, Tensor]:
        logits = self._logits(images)
        return {"logits": logits, "prob": torch.sigmoid(logits)}

    def _losses(self, images: Tensor, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        n = images.shape[0]
        if self.soft_labels:
            label = vote_fraction_target(targets, n, model=self.architecture)
        else:
            label = label_target(targets, n, model=self.architecture)
        images, label = mixup_batch(images, label, self.mixup_alpha)
        return {"loss_cls": weighted_bce(self._logits(images), label, self.pos_weight)}


@register_model("atypical_single", arguments_of=AtypicalSingle)
def atypical_single(**kwargs: Any) -> AtypicalSingle:
    """Single-task baseline: timm backbone → FC 512 → FC 256 → 1 logit, BCE weighted by ``pos_weight``.

    Keyword arguments: those of :class:`AtypicalSingle`; every one (defaults included) is recorded in
    ``build_kwargs`` so a checkpoint rebuilds the same model.

    Examples:
        >>> from mitoscope.models.registry import create_model
        >>> m = create_model("atypical_single", backbone="test_resnet").train()
        >>> sorted(m(torch.zeros(2, 3, 64, 64), {"label": torch.tensor([0.0, 1.0])}))
        ['loss_cls']
    """
    return build_recorded(AtypicalSingle, **kwargs)


ClassifierT = TypeVar("ClassifierT", bound=AtypicalClassifier)


def build_recorded(cls: type[ClassifierT], /, **kwargs: Any) -> ClassifierT:
    """Build ``cls(**kwargs)`` and record in ``build_kwargs`` every argument that rebuilds it from a checkpoint.

    Defaults are recorded too (a checkpoint must not change meaning when a default changes); sequences are stored
    as lists. ``pretrained`` is recorded as ``False``: a model rebuilt from a checkpoint gets its weights from the
    checkpoint and must not fetch them again. An unknown argument raises ``TypeError``.

    Examples:
        >>> m = build_recorded(AtypicalSingle, backbone="test_resnet", hidden=(8,), pretrained=False)
        >>> m.build_kwargs["hidden"], m.build_kwargs["dropout"], m.build_kwargs["pretrained"]
        ([8], 0.3, False)
    """
    arguments = inspect.signature(cls).bind(**kwargs)
    arguments.apply_defaults()
    model = cls(**kwargs)
    model.build_kwargs = {
        key: list(value) if isinstance(value, tuple) else value for key, value in arguments.arguments.items()
    }
    model.build_kwargs["pretrained"] = False
    return model
