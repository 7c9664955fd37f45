"""Losses: focal against torchvision, masking, Dice, weighted BCE."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from mitoscope.models.losses import (
    class_pos_weight,
    dice_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
    weighted_bce,
)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (-1.0, 1.5), (0.75, 3.0)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_focal_matches_torchvision(alpha, gamma, reduction) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g) * 3
    targets = (torch.rand(6, 4, generator=g) > 0.5).float()
    ours = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    ref = tv_focal(logits, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(ours, ref)


def test_sigmoid_focal_mask_ignores_missing_entries() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]], requires_grad=True)
    targets = torch.tensor([[1.0, -1.0, 0.0]])  # -1 = missing vote
    mask = targets >= 0
    loss = sigmoid_focal_loss(logits, targets, mask=mask)
    ref = tv_focal(logits[mask], targets[mask], reduction="mean")
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert logits.grad is not None and logits.grad[0, 1] == 0
    nothing = sigmoid_focal_loss(logits, targets, mask=torch.zeros_like(mask))
    assert float(nothing.detach()) == 0.0


def test_softmax_focal_reduces_to_cross_entropy_and_focuses() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 4, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    torch.testing.assert_close(softmax_focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y))
    assert softmax_focal_loss(logits, y, gamma=2.0) < F.cross_entropy(logits, y)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(
        softmax_focal_loss(logits, y, gamma=0.0, alpha=w, reduction="sum"),
        F.cross_entropy(logits, y, weight=w, reduction="sum"),
    )


def test_softmax_focal_rejects_bad_classes() -> None:
    with pytest.raises(ValueError, match="class targets"):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="logits"):
        softmax_focal_loss(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


def test_binary_dice() -> None:
    t = torch.zeros(2, 1, 8, 8)
    t[0, :, 2:6, 2:6] = 1
    perfect = torch.where(t > 0, 30.0, -30.0)
    assert float(dice_loss(perfect, t)) < 1e-4
    assert float(dice_loss(-perfect, t)) > 0.9
    with pytest.raises(ValueError, match="binary dice"):
        dice_loss(perfect, t[:, 0])


def test_multiclass_dice_index_and_onehot_targets() -> None:
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    y[0, :4] = 1
    y[0, 6:] = 2
    onehot = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    perfect = onehot * 40 - 20
    assert float(dice_loss(perfect, y)) < 1e-4
    assert float(dice_loss(perfect, y[:, None])) < 1e-4
    assert float(dice_loss(perfect, onehot)) < 1e-4
    wrong = perfect.roll(1, dims=1)
    assert float(dice_loss(wrong, y, include_background=False)) > 0.9


def test_weighted_bce_and_pos_weight() -> None:
    logits = torch.tensor([0.3, -1.2, 2.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(
        weighted_bce(logits, y, 2.5),
        F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(2.5)),
    )
    assert class_pos_weight([0, 0, 0, 1, 1]) == 1.5
    assert class_pos_weight([0, 0]) == 1.0
    with pytest.raises(ValueError, match="shape"):
        weighted_bce(logits, y[:2])
