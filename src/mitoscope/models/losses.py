"""Losses of the classifier models: focal (sigmoid and softmax), Dice (binary and multi-class), weighted BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str, mask: Tensor | None) -> Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if mask is not None:
        mask = mask.to(loss.dtype)
        loss = loss * mask
        if reduction == "mean":
            # mean over the kept entries; 0 (with a gradient path) when nothing is kept
            return loss.sum() / mask.sum().clamp_min(1.0)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    """Binary focal loss (Lin et al. 2017) on logits, as ``torchvision.ops.sigmoid_focal_loss``.

    Args:
        logits: raw scores, any shape.
        targets: 0/1 floats of the same shape.
        alpha: weight of the positive class (``1 - alpha`` for negatives); ``None`` or a negative value
            disables it.
        gamma: focusing exponent (0 gives plain BCE).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        mask: optional 0/1 (or bool) tensor of the same shape; entries with 0 are left out (and ``"mean"``
            averages over the kept entries only — used for missing expert votes).

    Examples:
        >>> round(float(sigmoid_focal_loss(torch.zeros(2), torch.tensor([0.0, 1.0]), alpha=None, gamma=0.0)), 4)
        0.6931
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    targets = targets.to(logits.dtype)
    if mask is not None:
        # missing targets may hold placeholders such as -1: keep the arithmetic finite
        targets = torch.where(mask.bool(), targets, torch.zeros_like(targets))
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction, mask)


def softmax_focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    alpha: float | Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    mask: Tensor | None = None,
) -> Tensor:
    """Multi-class focal loss: ``-α_y (1 - p_y)^γ log p_y`` over softmax probabilities.

    Args:
        logits: ``(N, C)`` or ``(N, C, ...)`` raw scores.
        targets: ``(N,)`` / ``(N, ...)`` integer class indices.
        alpha: ``None``, one scalar for all classes, or a ``(C,)`` tensor of class weights.
        gamma: focusing exponent (0 gives cross-entropy).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        mask: optional 0/1 tensor shaped like ``targets``; 0 leaves the entry out.

    Examples:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> y = torch.tensor([0, 1])
        >>> bool(torch.isclose(softmax_focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y)))
        True
    """
    if logits.ndim < 2 or logits.shape[0] != targets.shape[0] or logits.shape[2:] != targets.shape[1:]:
        raise ValueError(
            f"softmax focal loss needs logits (N, C, ...) and targets (N, ...), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    targets = targets.long()
    if mask is not None:
        targets = torch.where(mask.bool(), targets, torch.zeros_like(targets))
    n_classes = logits.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        raise ValueError(
            f"class targets must lie in [0, {n_classes - 1}], got {targets.min()}..{targets.max()}"
        )
    log_p = F.log_softmax(logits, dim=1)
    log_p_t = log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
    loss = -((1 - log_p_t.exp()) ** gamma) * log_p_t
    if alpha is not None:
        loss = alpha.to(loss)[targets] * loss if isinstance(alpha, Tensor) else float(alpha) * loss
    return _reduce(loss, reduction, mask)


def dice_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    eps: float = 1.0,
    include_background: bool = True,
) -> Tensor:
    """Soft Dice loss ``1 - (2|P∩T| + eps) / (|P| + |T| + eps)``, pooled over the batch.

    Binary when ``logits`` has one channel (sigmoid; ``targets`` 0/1 of the same shape); multi-class when it has
    ``C > 1`` channels (softmax; ``targets`` integer classes ``(N, H, W)`` or ``(N, 1, H, W)``, or one-hot
    ``(N, C, H, W)``), averaging the per-class losses. Sums run over the whole batch so that patches without a
    foreground do not dominate.

    Args:
        logits: ``(N, C, H, W)`` (or ``(N, C, ...)``) raw scores.
        targets: see above.
        eps: smoothing added to numerator and denominator.
        include_background: multi-class only; ``False`` leaves class 0 out of the average.

    Examples:
        >>> t = torch.zeros(1, 1, 4, 4); t[..., :2, :2] = 1
        >>> float(dice_loss(torch.where(t > 0, 20.0, -20.0), t)) < 1e-3
        True
    """
    if logits.ndim < 3:
        raise ValueError(f"dice loss needs logits (N, C, H, W), got {tuple(logits.shape)}")
    logits = logits.float()  # sums over every pixel: never in bf16/fp16
    n_classes = logits.shape[1]
    if n_classes == 1:
        if targets.shape != logits.shape:
            raise ValueError(
                f"binary dice: targets {tuple(targets.shape)} must match logits {tuple(logits.shape)}"
            )
        probs = torch.sigmoid(logits)
        onehot = targets.to(probs.dtype)
    else:
        probs = torch.softmax(logits, dim=1)
        if targets.shape == logits.shape and targets.is_floating_point():
            onehot = targets.to(probs.dtype)
        else:
            if targets.ndim == logits.ndim and targets.shape[1] == 1:
                targets = targets[:, 0]
            if targets.shape != logits.shape[:1] + logits.shape[2:]:
                raise ValueError(
                    f"multi-class dice: targets {tuple(targets.shape)} do not fit logits {tuple(logits.shape)}"
                )
            onehot = F.one_hot(targets.long(), n_classes).movedim(-1, 1).to(probs.dtype)
    dims = [0, *range(2, logits.ndim)]
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    per_class = 1 - (2 * inter + eps) / (denom + eps)
    if n_classes > 1 and not include_background:
        per_class = per_class[1:]
    return per_class.mean()


def weighted_bce(logits: Tensor, targets: Tensor, pos_weight: float | Tensor = 1.0) -> Tensor:
    """Binary cross-entropy on logits with the positive class weighted by ``pos_weight``.

    Set ``pos_weight = n_negative / n_positive`` for class weights inversely proportional to class frequency.

    Examples:
        >>> float(weighted_bce(torch.zeros(2), torch.tensor([1.0, 0.0]), 3.0)) > float(
        ...     weighted_bce(torch.zeros(2), torch.tensor([1.0, 0.0]), 1.0))
        True
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=weight)


def mixup_batch(images: Tensor, targets: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al. 2018): each image and its target blended with those of another image of the batch.

    One ``λ ~ Beta(alpha, alpha)`` per batch (torch's global generator, so seeded runs repeat), a random pairing;
    ``alpha <= 0`` returns the inputs unchanged. Targets must be probabilities (0/1 labels or soft labels).

    Examples:
        >>> x, y = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)]), torch.tensor([0.0, 1.0])
        >>> _ = torch.manual_seed(0)
        >>> mx, my = mixup_batch(x, y, 0.4)
        >>> bool(torch.allclose(mx.mean(dim=(1, 2, 3)), my))  # each blend keeps image and target in step
        True
    """
    if alpha <= 0:
        return images, targets
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(images.shape[0], device=images.device)
    mixed_images = images.mul(lam).add_(images[order], alpha=1.0 - lam)
    return mixed_images, targets * lam + targets[order] * (1.0 - lam)


def class_pos_weight(labels: Tensor | list[int] | list[float]) -> float:
    """``n_negative / n_positive`` of 0/1 ``labels`` (1.0 when one class is absent).

    Examples:
        >>> class_pos_weight([0, 0, 0, 1])
        3.0
    """
    y = torch.as_tensor(labels, dtype=torch.float64).flatten()
    pos = float((y > 0.5).sum())
    neg = float(y.numel() - pos)
    if pos == 0 or neg == 0:
        return 1.0
    return neg / pos
