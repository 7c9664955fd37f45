"""Heads and hardness classes."""

from __future__ import annotations

import math

import pytest
import torch

from mitoscope.models.heads import MLPHead, check_images, check_targets, hardness_class


def test_mlp_head_shape_and_layers() -> None:
    head = MLPHead(32, hidden=(512, 256), out_features=1, dropout=0.2)
    assert head(torch.zeros(4, 32)).shape == (4, 1)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [512, 256, 1]


@pytest.mark.parametrize(
    "votes,two,four",
    [
        ((0, 0, 0), 0, 0),
        ((0, 1, 0), 1, 1),
        ((1, 0, 1), 1, 2),
        ((1, 1, 1), 0, 3),
        ((1, 1, -1), 0, 3),
        ((0, 0, None), 0, 0),
        ((1, 0, math.nan), 1, 2),  # tie without label: atypical side
        ((0, 0, 0, 1, 1), 1, 1),
        ((1, 1, 1, 1, 0), 1, 2),
        ((), 0, 0),
    ],
)
def test_hardness_class_table(votes, two, four) -> None:
    assert hardness_class(votes, 2) == two
    assert hardness_class(votes, 4) == four


def test_hardness_tie_uses_label_and_bad_n_classes() -> None:
    assert hardness_class((1, 0), 4, label=0.0) == 1
    assert hardness_class((1, 0), 4, label=1.0) == 2
    with pytest.raises(ValueError, match="2 or 4"):
        hardness_class((1, 0), 3)


def test_input_checks_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        check_images(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="float"):
        check_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        check_images(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="lack"):
        check_targets({"label": torch.zeros(2)}, {"label", "mask"}, 2)
    with pytest.raises(ValueError, match="batch size"):
        check_targets({"label": torch.zeros(3)}, {"label"}, 2)
