"""``atypical_experts``: expert-aware atypical classifier after Kotte et al. (MIDOG 2025 Track 2).

A timm backbone (default ``resnet50``) gives pooled features → shared FC 512 + ReLU + dropout →

* one binary head per expert (``n_experts``: 3 for AMi-Br / MIDOG25, 5 for AtNorM-MD), each trained with a
  sigmoid focal loss on that expert's vote; missing votes (``-1`` or NaN in ``targets["experts"]``) are masked
  out of the loss;
* a hardness head (``hardness_classes``: 2 = easy/hard, 4 = agreement pattern, see
  :func:`mitoscope.models.heads.hardness_class`) with a focal loss (sigmoid for 2 classes, softmax for 4).

The objective is ``θ·L_experts + (1 − θ)·L_hardness`` with ``θ = theta`` (0.5 in the paper). The training dict
returns the two parts **already multiplied** by ``θ`` and ``1 − θ`` (``loss_experts``, ``loss_hard``), so
summing it gives the paper's objective.

Options:

* ``input_mode="rgb_hed"``: the model receives the usual normalised RGB, un-normalises it, computes the
  haematoxylin/eosin/DAB optical densities differentiably (:func:`mitoscope.data.stain.rgb_to_hed_torch`),
  standardises them with a BatchNorm and feeds the 6-channel stack to the backbone (``in_chans=6``; pretrained
  first convolutions are adapted). Datasets stay RGB-only.
* ``context_crop=80``: a second pass of the central ``80×80`` crop, up-sampled to the input size, through the
  same backbone; its pooled features are concatenated with the full view's before the shared FC.

Eval: ``prob`` = mean of the expert heads' probabilities, ``logits`` = its logit, ``prob_experts`` ``(N, E)``,
``prob_hard`` ``(N,)`` = P(hard) and ``prob_hardness`` ``(N, K)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mitoscope.data.stain import rgb_to_hed_torch
from mitoscope.models.architectures.atypical_single import AtypicalClassifier, build_recorded
from mitoscope.models.backbones import Pretrained, backbone_normalization, create_backbone
from mitoscope.models.backbones import num_features as _num_features
from mitoscope.models.heads import in_float32, prob_to_logit
from mitoscope.models.losses import sigmoid_focal_loss, softmax_focal_loss
from mitoscope.models.registry import register_model

INPUT_MODES = ("rgb", "rgb_hed")


class AtypicalExperts(AtypicalClassifier):
    """Per-expert heads + hardness head on a shared FC layer (see the module docstring).

    Args:
        backbone: timm name (pooled features).
        pretrained: see :func:`mitoscope.models.backbones.create_backbone`.
        dropout: dropout after the shared FC layer.
        n_experts: number of expert heads (3 AMi-Br / MIDOG25, 5 AtNorM-MD).
        hardness_classes: 2 (easy / hard) or 4 (agreement pattern, see ``hardness_class``).
        alpha: focal-loss α (weight of the positive class of the binary heads).
        gamma: focal-loss γ.
        theta: weight of the expert loss; ``1 - theta`` weighs the hardness loss.
        input_mode: ``"rgb"`` or ``"rgb_hed"`` (adds HED channels computed inside the model).
        in_chans: optional check: 3 for ``"rgb"``, 6 for ``"rgb_hed"`` (the model input is always RGB).
        context_crop: side of the central crop of the context branch (e.g. 80), or ``None``.
        hidden: width of the shared FC layer.
        mean, std: input normalisation (defaults: :func:`backbone_normalization`); the HED branch undoes it.
        drop_path_rate: stochastic depth of the backbone (when supported).
        frozen_stages: freeze the backbone's stem and first stages
            (:func:`mitoscope.models.backbones.freeze_stages`).

    Examples:
        >>> m = AtypicalExperts(backbone="test_resnet", n_experts=5).eval()
        >>> out = m(torch.zeros(2, 3, 64, 64))
        >>> tuple(out["prob_experts"].shape), tuple(out["prob"].shape)
        ((2, 5), (2,))
    """

    architecture = "atypical_experts"
    _mean: Tensor
    _std: Tensor

    def __init__(
        self,
        *,
        backbone: str = "resnet50",
        pretrained: Pretrained = False,
        dropout: float = 0.5,
        n_experts: int = 3,
        hardness_classes: int = 2,
        alpha: float = 0.25,
        gamma: float = 2.0,
        theta: float = 0.5,
        input_mode: str = "rgb",
        in_chans: int | None = None,
        context_crop: int | None = None,
        hidden: int = 512,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        drop_path_rate: float = 0.0,
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        backbone_chans = 3 if input_mode == "rgb" else 6
        if in_chans is not None and in_chans != backbone_chans:
            raise ValueError(f"in_chans={in_chans} does not fit input_mode={input_mode!r} ({backbone_chans})")
        if n_experts < 1:
            raise ValueError(f"n_experts must be >= 1, got {n_experts}")
        if hardness_classes not in (2, 4):
            raise ValueError(f"hardness_classes must be 2 or 4, got {hardness_classes}")
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must lie in [0, 1], got {theta}")
        if context_crop is not None and context_crop < 8:
            raise ValueError(f"context_crop must be >= 8 px or None, got {context_crop}")
        extra: dict[str, Any] = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        extra["frozen_stages"] = frozen_stages
        self.backbone = create_backbone(backbone, pretrained=pretrained, in_chans=backbone_chans, **extra)
        default_mean, default_std = backbone_normalization(backbone, pretrained)
        self.mean = tuple(float(v) for v in (mean if mean is not None else default_mean))
        self.std = tuple(float(v) for v in (std if std is not None else default_std))
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.input_mode = input_mode
        self.hed_norm = nn.BatchNorm2d(3) if input_mode == "rgb_hed" else None
        self.context_crop = context_crop
        width = _num_features(self.backbone) * (2 if context_crop else 1)
        self.shared = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.expert_head = nn.Linear(hidden, n_experts)
        self.hard_head = nn.Linear(hidden, 1 if hardness_classes == 2 else hardness_classes)
        self.n_experts = n_experts
        self.hardness_classes = hardness_classes
        self.alpha, self.gamma, self.theta = float(alpha), float(gamma), float(theta)
        self.required_targets = {"label", "experts", "hard"}
        if context_crop:
            self.min_input_size = max(self.min_input_size, context_crop)

    def _backbone_input(self, images: Tensor) -> Tensor:
        if self.hed_norm is None:
            return images
        rgb = (images * self._std + self._mean).clamp(0.0, 1.0)
        return torch.cat([images, self.hed_norm(rgb_to_hed_torch(rgb))], dim=1)

    def _features(self, images: Tensor) -> Tensor:
        feats = self.backbone(self._backbone_input(images))
        if self.context_crop:
            size = images.shape[-2:]
            c = self.context_crop
            top, left = (size[0] - c) // 2, (size[1] - c) // 2
            centre = images[..., top : top + c, left : left + c]
            centre = F.interpolate(centre, size=size, mode="bilinear", align_corners=False)
            feats = torch.cat([feats, self.backbone(self._backbone_input(centre))], dim=1)
        return in_float32(self.shared, feats)

    def _heads(self, images: Tensor) -> tuple[Tensor, Tensor]:
        z = self._features(images)
        return in_float32(self.expert_head, z), in_float32(self.hard_head, z)

    def _predict(self, images: Tensor) -> dict[str, Tensor]:
        expert_logits, hard_logits = self._heads(images)
        prob_experts = torch.sigmoid(expert_logits)
        prob = prob_experts.mean(dim=1)
        if self.hardness_classes == 2:
            p_hard = torch.sigmoid(hard_logits[:, 0])
            prob_hardness = torch.stack([1 - p_hard, p_hard], dim=1)
        else:
            prob_hardness = torch.softmax(hard_logits, dim=1)
            p_hard = prob_hardness[:, 1] + prob_hardness[:, 2]
        return {
            "logits": prob_to_logit(prob),
            "prob": prob,
            "prob_experts": prob_experts,
            "prob_hard": p_hard,
            "prob_hardness": prob_hardness,
        }

    def _losses(self, images: Tensor, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        n = images.shape[0]
        experts = targets["experts"].float()
        if tuple(experts.shape) != (n, self.n_experts):
            raise ValueError(
                f"{self.architecture}: target 'experts' must be (N, {self.n_experts}) with -1 for a missing vote, "
                f"got {tuple(experts.shape)}"
            )
        valid = torch.isfinite(experts) & (experts >= 0)
        if bool(((experts[valid] != 0) & (experts[valid] != 1)).any()):
            raise ValueError(f"{self.architecture}: expert votes must be 0, 1 or -1 (missing)")
        hard = targets["hard"].reshape(-1).long()
        if hard.shape[0] != n or bool((hard < 0).any()) or bool((hard >= self.hardness_classes).any()):
            raise ValueError(
                f"{self.architecture}: target 'hard' must be (N,) classes in [0, {self.hardness_classes - 1}]"
            )
        expert_logits, hard_logits = self._heads(images)
        loss_experts = sigmoid_focal_loss(
            expert_logits, torch.nan_to_num(experts, nan=-1.0), alpha=self.alpha, gamma=self.gamma, mask=valid
        )
        if self.hardness_classes == 2:
            loss_hard = sigmoid_focal_loss(
                hard_logits[:, 0], hard.float(), alpha=self.alpha, gamma=self.gamma
            )
        else:
            loss_hard = softmax_focal_loss(hard_logits, hard, gamma=self.gamma)
        return {"loss_experts": self.theta * loss_experts, "loss_hard": (1.0 - self.theta) * loss_hard}


@register_model("atypical_experts", arguments_of=AtypicalExperts)
def atypical_experts(**kwargs: Any) -> AtypicalExperts:
    """Expert-aware classifier (Kotte et al.): per-expert focal heads + hardness head, ``θ``-weighted.

    Keyword arguments: those of :class:`AtypicalExperts`; every one (defaults included) is recorded in
    ``build_kwargs`` so a checkpoint rebuilds the same model.

    Examples:
        >>> from mitoscope.models.registry import create_model
        >>> m = create_model("atypical_experts", backbone="test_resnet").train()
        >>> t = {"label": torch.tensor([0.0, 1.0]), "experts": torch.tensor([[0.0, 0, -1], [1, 0, 1]]),
        ...      "hard": torch.tensor([0, 1])}
        >>> sorted(m(torch.zeros(2, 3, 64, 64), t))
        ['loss_experts', 'loss_hard']
    """
    model = build_recorded(AtypicalExperts, **kwargs)
    model.build_kwargs.update(mean=list(model.mean), std=list(model.std))  # the resolved normalisation
    return model
