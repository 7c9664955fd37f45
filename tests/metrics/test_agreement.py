from __future__ import annotations

import numpy as np
import pytest

from mitoscope.metrics.agreement import agreement_table, by_agreement, leave_one_out_reference, unanimous
from mitoscope.metrics.classification import balanced_accuracy


def _votes() -> np.ndarray:
    """Five experts on 200 records: experts 1-4 follow the truth with 5 % errors, expert 5 with 30 %."""
    rng = np.random.default_rng(0)
    truth = (rng.random(200) < 0.3).astype(int)
    flips = rng.random((200, 5)) < np.array([0.05, 0.05, 0.05, 0.05, 0.30])
    return np.where(flips, 1 - truth[:, None], truth[:, None]).astype(float)


def test_leave_one_out_reference_skips_the_expert_ties_and_missing_votes() -> None:
    votes = np.array([[1, 1, 0, 0], [1, -1, 0, 0], [-1, -1, -1, 1]], dtype=float)
    # without expert 4: 1-1-0 → 1; 1-(missing)-0 → tie; only missing → none
    assert leave_one_out_reference(votes, 3).tolist() == [1, -1, -1]
    assert leave_one_out_reference(votes, 0).tolist() == [0, 0, 1]


def test_experts_are_scored_against_the_others_and_models_on_the_same_references() -> None:
    votes = _votes()
    expert_5 = votes[:, 4].astype(int)
    table = agreement_table(votes, {"like_expert_5": (expert_5, votes[:, 4])})
    experts = table["experts"]
    assert set(experts) == {f"expert_{k}" for k in range(1, 6)}
    # the noisy expert is the worst; by hand on its own reference
    worst = min(experts, key=lambda k: experts[k]["balanced_accuracy"])
    assert worst == "expert_5"
    ref = leave_one_out_reference(votes, 4)
    assert experts["expert_5"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy(ref[ref >= 0], expert_5[ref >= 0])
    )
    # a model that votes like expert 5 scores what expert 5 scores on expert 5's reference
    model = table["models"]["like_expert_5"]
    assert model["per_reference_balanced_accuracy"][4] == pytest.approx(
        experts["expert_5"]["balanced_accuracy"]
    )
    assert table["experts_mean_balanced_accuracy"] == pytest.approx(
        np.mean([e["balanced_accuracy"] for e in experts.values()])
    )


def test_by_agreement_splits_unanimous_and_disputed_records() -> None:
    votes = np.array([[1, 1, 1], [0, 0, -1], [1, 0, 1], [0, 1, 0]], dtype=float)
    assert unanimous(votes).tolist() == [True, True, False, False]
    targets = np.array([1, 0, 1, 0])
    decisions = np.array([1, 0, 0, 0])
    parts = by_agreement(targets, votes, decisions, np.array([0.9, 0.1, 0.4, 0.2]))
    assert parts["unanimous"]["n"] == 2 and parts["unanimous"]["balanced_accuracy"] == 1.0
    assert parts["disputed"]["n"] == 2 and parts["disputed"]["balanced_accuracy"] == 0.5
    assert parts["disputed"]["auroc"] == 1.0
