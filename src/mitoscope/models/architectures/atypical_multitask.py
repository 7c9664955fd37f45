"""``atypical_multitask``: multi-task atypical classifier after Percannella et al. (MIDOG 2025 Track 2).

A timm feature-pyramid backbone (default ``resnetv2_50``, the pre-activation ResNet-50) feeds

* a classification head: global average pooling of the deepest map → three fully connected layers with ReLU
  and dropout (512-256-1) → one logit, trained with BCE whose positive weight is ``pos_weight`` (set it to
  ``n_normal / n_atypical`` of the training data for class weights inversely proportional to frequency);
* decoder (a), mitosis segmentation: U-Net-like, three ×2 up-sampling blocks with skip connections, one output
  channel, trained with binary Dice against ``targets["mask"]``;
* decoder (b), pixel-level classification: same shape, **three classes** — 0 background, 1 normal figure,
  2 atypical figure — whose target is ``mask × (1 + label)``; trained with multi-class soft Dice over the two
  foreground classes (background left out of the average).

``aux_heads=False`` builds the classifier without decoders; :meth:`AtypicalMultitask.without_aux` turns a trained
model into that smaller inference model (its state dict loads into ``aux_heads=False``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mitoscope.models.architectures.atypical_single import AtypicalClassifier, build_recorded
from mitoscope.models.backbones import Pretrained, backbone_normalization, create_backbone, feature_channels
from mitoscope.models.decoders import UNetDecoder
from mitoscope.models.heads import MLPHead, check_images, label_target
from mitoscope.models.losses import dice_loss, weighted_bce
from mitoscope.models.registry import register_model

PIXEL_CLASSES = ("background", "normal", "atypical")


class AtypicalMultitask(AtypicalClassifier):
    """Backbone + 3-FC classification head + two U-Net-like auxiliary decoders (see the module docstring).

    Args:
        backbone: timm name supporting ``features_only`` (≥ 4 feature levels).
        pretrained: see :func:`mitoscope.models.backbones.create_backbone`.
        dropout: dropout of the FC head.
        hidden: hidden widths of the FC head.
        pos_weight: BCE weight of the atypical class (``n_normal / n_atypical``).
        aux_heads: build the two decoders (training); ``False`` for a lean inference model.
        decoder_channels: widths of the three up-sampling blocks.
        drop_path_rate: stochastic depth of the backbone (when supported).
        frozen_stages: freeze the backbone's stem and first stages
            (:func:`mitoscope.models.backbones.freeze_stages`).

    Examples:
        >>> m = AtypicalMultitask(backbone="test_resnet", decoder_channels=(16, 16, 16)).eval()
        >>> out = m(torch.zeros(1, 3, 64, 64), return_maps=True)
        >>> sorted(out), tuple(out["pix_prob"].shape)
        (['logits', 'pix_prob', 'prob', 'seg_prob'], (1, 3, 64, 64))
    """

    architecture = "atypical_multitask"

    def __init__(
        self,
        *,
        backbone: str = "resnetv2_50",
        pretrained: Pretrained = False,
        dropout: float = 0.3,
        hidden: Sequence[int] = (512, 256),
        pos_weight: float = 1.0,
        aux_heads: bool = True,
        decoder_channels: Sequence[int] = (256, 128, 64),
        drop_path_rate: float = 0.0,
        frozen_stages: int = 0,
    ) -> None:
        super().__init__()
        extra: dict[str, Any] = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        extra["frozen_stages"] = frozen_stages
        self.encoder = create_backbone(backbone, pretrained=pretrained, features_only=True, **extra)
        channels = feature_channels(self.encoder)
        if len(channels) < len(decoder_channels) + 1:
            raise ValueError(
                f"backbone {backbone!r} gives {len(channels)} feature maps; the decoders need "
                f"{len(decoder_channels) + 1}"
            )
        self.head = MLPHead(channels[-1], hidden=hidden, out_features=1, dropout=dropout)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.aux_heads = bool(aux_heads)
        self.seg_decoder: UNetDecoder | None = None
        self.pix_decoder: UNetDecoder | None = None
        if self.aux_heads:
            self.seg_decoder = UNetDecoder(channels, out_channels=1, decoder_channels=decoder_channels)
            self.pix_decoder = UNetDecoder(
                channels, out_channels=len(PIXEL_CLASSES), decoder_channels=decoder_channels
            )
        self.pos_weight = float(pos_weight)
        self.mean, self.std = backbone_normalization(backbone, pretrained)
        self.required_targets = {"label", "mask"} if self.aux_heads else {"label"}

    def forward(
        self, images: Tensor, targets: Mapping[str, Tensor] | None = None, *, return_maps: bool = False
    ) -> dict[str, Tensor]:
        """Eval: ``logits``, ``prob`` (+ ``seg_prob`` ``(N,1,H,W)`` and ``pix_prob`` ``(N,3,H,W)`` when
        ``return_maps`` and the decoders exist). Train: ``loss_cls`` (+ ``loss_seg``, ``loss_pix``)."""
        if self.training:
            return super().forward(images, targets)
        check_images(images, in_chans=3, min_size=self.min_input_size, model=self.architecture)
        feats = self.encoder(images)
        logits = self.head(self.pool(feats[-1]).flatten(1)).squeeze(1)
        out = {"logits": logits, "prob": torch.sigmoid(logits)}
        if return_maps and self.seg_decoder is not None and self.pix_decoder is not None:
            size = images.shape[-2:]
            out["seg_prob"] = torch.sigmoid(self.seg_decoder(feats, size))
            out["pix_prob"] = torch.softmax(self.pix_decoder(feats, size), dim=1)
        return out

    def _losses(self, images: Tensor, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        n = images.shape[0]
        label = label_target(targets, n, model=self.architecture)
        feats = self.encoder(images)
        logits = self.head(self.pool(feats[-1]).flatten(1)).squeeze(1)
        losses = {"loss_cls": weighted_bce(logits, label, self.pos_weight)}
        if self.seg_decoder is None or self.pix_decoder is None:
            return losses
        mask = targets["mask"]
        expected = (n, 1, *images.shape[-2:])
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"{self.architecture}: target 'mask' must be (N, 1, H, W) = {expected}, got {tuple(mask.shape)}"
            )
        mask = (mask > 0.5).float()
        size = images.shape[-2:]
        losses["loss_seg"] = dice_loss(self.seg_decoder(feats, size), mask)
        pixel_target = (mask[:, 0] * (1 + label.view(-1, 1, 1))).long()
        losses["loss_pix"] = dice_loss(self.pix_decoder(feats, size), pixel_target, include_background=False)
        return losses

    def without_aux(self) -> AtypicalMultitask:
        """A copy without the decoders, for inference (loads with ``aux_heads=False``).

        Examples:
            >>> m = AtypicalMultitask(backbone="test_resnet", decoder_channels=(8, 8, 8))
            >>> small = m.without_aux()
            >>> small.aux_heads, small.build_kwargs["aux_heads"], len(small.state_dict()) < len(m.state_dict())
            (False, False, True)
        """
        clone = copy.deepcopy(self)
        clone.seg_decoder = None
        clone.pix_decoder = None
        clone.aux_heads = False
        clone.required_targets = {"label"}
        clone.build_kwargs = {**getattr(self, "build_kwargs", {}), "aux_heads": False}
        return clone


def export_inference_model(model: nn.Module) -> nn.Module:
    """The model to save for inference: without auxiliary decoders when it has them, else ``model`` itself.

    Examples:
        >>> export_inference_model(nn.Identity()).__class__.__name__
        'Identity'
    """
    strip = getattr(model, "without_aux", None)
    return strip() if callable(strip) else model


@register_model("atypical_multitask", arguments_of=AtypicalMultitask)
def atypical_multitask(**kwargs: Any) -> AtypicalMultitask:
    """Multi-task classifier (Percannella et al.): 3-FC head + segmentation and pixel-class U-Net decoders.

    Keyword arguments: those of :class:`AtypicalMultitask`; every one (defaults included) is recorded in
    ``build_kwargs`` so a checkpoint rebuilds the same model.

    Examples:
        >>> from mitoscope.models.registry import create_model
        >>> m = create_model("atypical_multitask", backbone="test_resnet", decoder_channels=(8, 8, 8)).train()
        >>> t = {"label": torch.tensor([0.0, 1.0]), "mask": torch.zeros(2, 1, 64, 64)}
        >>> sorted(m(torch.zeros(2, 3, 64, 64), t))
        ['loss_cls', 'loss_pix', 'loss_seg']
    """
    return build_recorded(AtypicalMultitask, **kwargs)
