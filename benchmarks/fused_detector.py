"""Several detection passes fused into one detector (rule 33 in benchmarks/README.md): flipped views of a model
(test-time augmentation), several models (an ensemble), or both. Measured, not adopted: it stays here.

Any detector following torchvision's convention in eval mode (list of CHW images → list of ``{"boxes",
"scores", "labels"}``) can be a member. Each member sees each view of the batch; its boxes are mapped back to
the input. Points (box centres) of all passes are grouped greedily, the highest score first: every pass's best
point within ``radius_px`` joins the group, and the group's score is the sum of its passes' scores over the
number of passes, so a pass that put no point there adds 0 (the rule of weighted boxes fusion, Solovyev et al.,
2021). A group's box is the score-weighted mean of its passes' boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

#: The views a pass may see: each is its own inverse.
VIEWS = ("identity", "hflip", "vflip", "rot180")
_FLIP_DIMS = {"identity": (), "hflip": (-1,), "vflip": (-2,), "rot180": (-2, -1)}


def view_images(images: Tensor, view: str) -> Tensor:
    """``images`` (…, H, W) as ``view`` sees them."""
    dims = _FLIP_DIMS[view]
    return images.flip(dims) if dims else images


def unview_boxes(boxes: Tensor, view: str, width: int, height: int) -> Tensor:
    """Boxes (K, 4) xyxy found in ``view`` of a ``width`` × ``height`` image, in the image's own frame.

    Examples:
        >>> unview_boxes(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), "hflip", 10, 10).tolist()
        [[8.0, 1.0, 10.0, 3.0]]
    """
    out = boxes.clone()
    if view in ("hflip", "rot180"):
        out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    if view in ("vflip", "rot180"):
        out[:, 1], out[:, 3] = height - boxes[:, 3], height - boxes[:, 1]
    return out


def fuse_passes(
    passes: Sequence[tuple[np.ndarray, np.ndarray]], radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the ``(boxes (K, 4), scores (K,))`` of several passes over one image: ``(boxes, scores)``, by
    descending score (see the module docstring).

    Examples:
        >>> a = (np.array([[0.0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.8, 0.6]))
        >>> b = (np.array([[2.0, 0, 12, 10]]), np.array([0.4]))
        >>> boxes, scores = fuse_passes([a, b], radius=5)
        >>> scores.round(2).tolist(), boxes[0].round(2).tolist()
        ([0.6, 0.3], [0.67, 0.0, 10.67, 10.0])
    """
    boxes = np.concatenate([np.asarray(b, dtype=float).reshape(-1, 4) for b, _ in passes])
    scores = np.concatenate([np.asarray(s, dtype=float).reshape(-1) for _, s in passes])
    owner = np.concatenate([np.full(len(np.reshape(s, -1)), i) for i, (_, s) in enumerate(passes)])
    if len(scores) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    from scipy.spatial import cKDTree

    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    tree = cKDTree(centres)
    taken = np.zeros(len(scores), dtype=bool)
    fused_boxes, fused_scores = [], []
    for i in np.argsort(-scores, kind="mergesort"):
        if taken[i]:
            continue
        near = np.asarray([j for j in tree.query_ball_point(centres[i], r=radius) if not taken[j]], dtype=int)
        taken[near] = True  # a pass's other points here are the same figure
        best = np.asarray([_best_of(near[owner[near] == p], scores) for p in np.unique(owner[near])])
        weights = scores[best]
        fused_boxes.append((boxes[best] * weights[:, None]).sum(axis=0) / weights.sum())
        fused_scores.append(weights.sum() / len(passes))
    order = np.argsort(-np.asarray(fused_scores), kind="mergesort")
    return np.asarray(fused_boxes)[order], np.asarray(fused_scores)[order]


def _best_of(indices: np.ndarray, scores: np.ndarray) -> int:
    return int(indices[np.argmax(scores[indices])])


class FusedDetector(nn.Module):
    """``members`` × ``views`` passes fused into one detector (module docstring); eval only.

    Examples:
        >>> class Fixed(nn.Module):
        ...     def forward(self, images):
        ...         box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
        ...         return [{"boxes": box, "scores": torch.tensor([0.8]), "labels": torch.tensor([1])}
        ...                 for _ in images]
        >>> fused = FusedDetector([Fixed()], views=("identity", "hflip"), radius_px=3).eval()
        >>> out = fused([torch.zeros(3, 8, 8)])
        >>> out[0]["scores"].tolist()  # the box sits in a corner: its flip finds it elsewhere
        [0.4000000059604645, 0.4000000059604645]
    """

    def __init__(
        self, members: Sequence[nn.Module], *, views: Sequence[str] = ("identity",), radius_px: float = 15.0
    ) -> None:
        super().__init__()
        unknown = sorted(set(views) - set(VIEWS))
        if not members or not views or unknown:
            raise ValueError(f"need at least one member and one view of {VIEWS}; unknown views: {unknown}")
        self.members = nn.ModuleList(members)
        self.views = tuple(views)
        self.radius_px = float(radius_px)

    @property
    def passes(self) -> int:
        """Forward passes per tile: members × views."""
        return len(self.members) * len(self.views)

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Fused detections per image (label 1: mitotic figure)."""
        if self.training:
            raise RuntimeError("a fused detector only predicts: train its members")
        batch = torch.stack(list(images))
        height, width = int(batch.shape[-2]), int(batch.shape[-1])
        per_image: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(batch))]
        for member in self.members:
            for view in self.views:
                outputs = member(list(view_images(batch, view).unbind(0)))
                for found, out in zip(per_image, outputs, strict=True):
                    boxes, scores = _mitoses(out)
                    found.append((unview_boxes(boxes, view, width, height).numpy(), scores.numpy()))
        results = []
        for found in per_image:
            boxes, scores = fuse_passes(found, self.radius_px)
            results.append(
                {
                    "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.as_tensor(scores, dtype=torch.float32),
                    "labels": torch.ones(len(scores), dtype=torch.int64),
                }
            )
        return results


def _mitoses(out: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    boxes = out["boxes"].detach().float().cpu().reshape(-1, 4)
    scores = out["scores"].detach().float().cpu().reshape(-1)
    if "labels" in out and len(boxes):
        keep = out["labels"].detach().cpu().reshape(-1) == 1
        boxes, scores = boxes[keep], scores[keep]
    return boxes, scores
