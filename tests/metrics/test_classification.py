from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from mitoscope.metrics.classification import (
    auroc,
    balanced_accuracy,
    bootstrap_ci,
    classification_report,
    confusion,
    f1,
    join_predictions,
    sensitivity,
    specificity,
    threshold_probs,
    to_targets,
)

# 4 atypical, 6 normal; threshold 0.5 -> preds below
LABELS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
PROBS = [0.9, 0.8, 0.4, 0.55, 0.1, 0.2, 0.6, 0.3, 0.45, 0.05]
PREDS = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]


def test_hand_computed_values() -> None:
    assert confusion(LABELS, PREDS) == {"tp": 3, "fn": 1, "tn": 5, "fp": 1}
    assert sensitivity(LABELS, PREDS) == pytest.approx(3 / 4)
    assert specificity(LABELS, PREDS) == pytest.approx(5 / 6)
    assert balanced_accuracy(LABELS, PREDS) == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert f1(LABELS, PREDS) == pytest.approx(6 / 8)
    # positives 0.9, 0.8, 0.4, 0.55 vs negatives 0.1, 0.2, 0.6, 0.3, 0.45, 0.05:
    # 0.9, 0.8 beat all 6; 0.55 beats 5; 0.4 beats 4 -> 21 / 24
    assert auroc(LABELS, PROBS) == pytest.approx(21 / 24)
    assert threshold_probs(PROBS).tolist() == PREDS


def test_ties_count_half() -> None:
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auroc([0, 0, 1], [0.2, 0.7, 0.7]) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1).round(2)  # with ties
    pred = threshold_probs(p, 0.5)
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert sensitivity(y, pred) == pytest.approx(recall_score(y, pred))
    assert specificity(y, pred) == pytest.approx(recall_score(1 - y, 1 - pred))
    assert f1(y, pred) == pytest.approx(f1_score(y, pred))


def test_label_names_and_errors() -> None:
    assert to_targets(["Atypical", "normal", True, 0]).tolist() == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="position 1"):
        to_targets(["atypical", "maybe"])
    with pytest.raises(ValueError, match="not 0 or 1"):
        to_targets([1, -1])
    with pytest.raises(ValueError, match="2 labels but 3"):
        auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="threshold"):
        balanced_accuracy([0, 1], [0.2, 0.7])


def test_single_class_is_nan_not_crash() -> None:
    assert math.isnan(auroc([1, 1], [0.2, 0.9]))
    assert math.isnan(specificity([1, 1], [1, 0]))
    assert balanced_accuracy([1, 1], [1, 0]) == pytest.approx(0.5)


def test_bootstrap_ci_brackets_point_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.4 + rng.random(300) * 0.6, 0, 1)
    point = auroc(y, p)
    lo, hi = bootstrap_ci(y, p, "auroc", n=300, seed=3)
    assert lo < point < hi
    assert (lo, hi) == bootstrap_ci(y, p, "auroc", n=300, seed=3)
    assert hi - lo < 0.2
    blo, bhi = bootstrap_ci(y, p, "balanced_accuracy", n=200)
    assert blo <= balanced_accuracy(y, threshold_probs(p)) <= bhi
    # custom callable
    clo, chi = bootstrap_ci(y, p, lambda t, s: float(t.mean()), n=200)
    assert clo <= y.mean() <= chi
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(y, p, "kappa", n=5)


def test_report_overall_groups_and_ci() -> None:
    groups = ["a"] * 5 + ["b"] * 5
    rep = classification_report(LABELS, PROBS, groups=groups, n_bootstrap=50)
    assert rep["n"] == 10 and rep["n_atypical"] == 4 and rep["n_normal"] == 6
    assert rep["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert rep["auroc"] == pytest.approx(21 / 24)
    assert rep["tp"] == 3 and rep["fp"] == 1
    lo, hi = rep["balanced_accuracy_ci"]
    assert lo <= hi
    # group a: labels 1,1,1,1,0 preds 1,1,0,1,0 ; group b: all normal, one false positive
    a, b = rep["groups"]["a"], rep["groups"]["b"]
    assert a["sensitivity"] == pytest.approx(3 / 4) and a["specificity"] == 1.0
    assert b["n_atypical"] == 0 and math.isnan(b["auroc"]) and b["specificity"] == pytest.approx(4 / 5)
    rep2 = classification_report(LABELS, PROBS, threshold=0.35)
    assert rep2["sensitivity"] == 1.0 and rep2["threshold"] == 0.35
    assert "groups" not in rep2 and "auroc_ci" not in rep2


def test_report_with_hard_predictions() -> None:
    # e.g. a majority vote that disagrees with the thresholded mean probability on the last two cases
    preds = [1, 1, 0, 1, 0, 0, 1, 0, 1, 1]
    rep = classification_report(LABELS, PROBS, preds=preds, n_bootstrap=20)
    assert rep["specificity"] == pytest.approx(3 / 6) and rep["sensitivity"] == pytest.approx(3 / 4)
    assert rep["auroc"] == pytest.approx(21 / 24)
    with pytest.raises(ValueError, match="0/1"):
        classification_report(LABELS, PROBS, preds=PROBS)


def test_join_refuses_a_truth_that_lists_a_file_twice() -> None:
    import pandas as pd

    pred = pd.DataFrame({"file": ["/x/Normal/1.png"], "p_atypical": [0.2]})
    truth = pd.DataFrame(
        {"image": ["/d/Normal/1.png", "/d/Normal/1.png"], "page": [-1, -1], "target": [0, 1]}
    )
    with pytest.raises(ValueError, match=r"/d/Normal/1.png more than once"):
        join_predictions(pred, truth)
