"""The MIDOG 2025 evaluators' arithmetic: golden numbers of the Track 1 evaluation container's own example, and
Track 2 against scikit-learn (which that evaluator calls)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

from mitoscope.io.challenge import TRACK1
from mitoscope.metrics.challenge import (
    Track1Case,
    Track2Case,
    froc_auc,
    score_outputs,
    score_track1,
    score_track2,
)

# The example of DeepMicroscopy/MIDOG25_T1_evaluation_docker (ground_truth.json, three jobs' mitotic-figures.json)
# and its test/output/metrics.json. One point of 007.tiff lay at (130.1, 115.5) mm, which today's evaluator
# rejects as pixel coordinates; at (5, 5) mm it is the same false positive.
GT = {
    "007.tiff": ([[0.374850364, 0.756961752]], 0, "hotspot"),
    "140.tiff": (
        [[0.6732737644102278, 0.6380649407634927], [0.701136862260162, 0.5339582751605569],
         [0.004306115122262555, 0.017097810044277795]], 0, "challenging",
    ),
    "201.tiff": (
        [[0.6596242342527185, 0.6275941892514884], [0.6869224531269846, 0.5251959312989827],
         [0.004218815644204747, 0.016817232145484504]], 1, "random",
    ),
}  # fmt: skip
PRED = {
    "007.tiff": [[0.374850364, 0.756961752, 0.92], [5.0, 5.0, 0.92]],
    "140.tiff": [
        [0.701136862260162, 0.5339582751605569, 0.85],
        [0.004106115122262555, 0.017197810044277794, 0.52],
    ],
    "201.tiff": [[0.04, 0.8, 0.92], [1.3, 1.1, 0.4]],
}
EXPECTED = {  # metrics.json of the evaluation container (AP from torchmetrics in float32)
    "precision": 0.49999991666668053, "recall": 0.4285713673469475, "f1_score": 0.46153850295857674,
    "AP": 0.3148514926433563, "tumor_0_precision": 0.7499998125000469, "tumor_0_f1": 0.7500000312499961,
    "tumor_0_AP": 0.6287128925323486, "tumor_1_f1": 1.99999960000008e-07, "tumor_1_AP": 0.0,
    "roi_type_hotspot_recall": 0.9999990000010001, "roi_type_hotspot_f1": 0.6666667777777407,
    "roi_type_hotspot_AP": 1.0, "roi_type_challenging_f1": 0.800000039999992,
    "roi_type_challenging_AP": 0.6633663177490234, "roi_type_random_AP": 0.0,
    # FROC: the evaluator's calc_froc_score on the same input (evaluated outside the test suite)
    "froc_auc": 3.085142654404265, "tumor_0_froc_auc": 1.857142392857259,
    "roi_type_hotspot_froc_auc": 6.938768571435511,
}  # fmt: skip


def _cases() -> list[Track1Case]:
    cases = []
    for name, (gt, domain, roi) in GT.items():
        p = np.array(PRED[name])
        pts = pd.DataFrame(
            {"x": p[:, 0] * 1000, "y": p[:, 1] * 1000, "score": p[:, 2], "label": "mitotic figure"}
        )
        cases.append(Track1Case(name, pts, np.array(gt) * 1000, str(domain), roi))
    return cases


def test_track1_matches_the_evaluation_container() -> None:
    res = score_track1(_cases())
    for key, value in EXPECTED.items():
        assert res["aggregates"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    per_image = {r["image"]: r["metrics"] for r in res["results"]}
    assert per_image["140.tiff"] == {"true_positives": 2, "false_negatives": 1, "false_positives": 0}


def test_track1_below_threshold_points_count_for_ap_and_froc_only() -> None:
    gt = np.array([[0.0, 0.0], [100.0, 0.0]])
    pts = pd.DataFrame(
        {
            "x": [0.0, 100.0],
            "y": [0.0, 0.0],
            "score": [0.9, 0.3],
            "label": ["mitotic figure", "non-mitotic figure"],
        }
    )
    agg = score_track1([Track1Case("a", pts, gt, "0")])["aggregates"]
    assert agg["recall"] == pytest.approx(0.5, rel=1e-5)  # F1 counts "mitotic figure" only
    assert agg["AP"] == pytest.approx(1.0)  # AP ranks every point by its probability
    # no false positive at any threshold: every FROC point sits at 0 FP/image and, as in the evaluator, the
    # curve right of it takes the sensitivity of the last point after the sort (the highest threshold: 0.5)
    assert agg["froc_auc"] == pytest.approx(4.0, rel=1e-5)
    assert math.isnan(froc_auc([Track1Case("a", pts.iloc[:0], gt, "0")]))


def test_track2_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    cases = []
    for k in range(4):
        n = 16 if k < 3 else 5
        y = (rng.random(n) < 0.3).astype(int)
        s = np.clip(0.4 * y + rng.random(n) * 0.7, 0, 1)
        cases.append(Track2Case(f"stack_{k}.tiff", y, [str(k % 2)] * n, (s >= 0.5).astype(int), s))
    agg = score_track2(cases)["aggregates"]
    y = np.concatenate([c.truth for c in cases])
    p = np.concatenate([c.pred for c in cases])
    s = np.concatenate([c.score for c in cases])
    sens, spec = recall_score(y, p), recall_score(y, p, pos_label=0)
    assert agg["overall_balanced_accuracy"] == pytest.approx((sens + spec) / 2)
    assert agg["overall_roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert agg["overall_accuracy"] == pytest.approx(accuracy_score(y, p))
    dom = np.array([d for c in cases for d in c.domains])
    for d in ("0", "1"):
        m = dom == d
        assert agg[f"domain_{d}"]["roc_auc"] == pytest.approx(roc_auc_score(y[m], s[m]))
        ba = (recall_score(y[m], p[m]) + recall_score(y[m], p[m], pos_label=0)) / 2
        assert agg[f"domain_{d}"]["balanced_accuracy"] == pytest.approx(ba)


def test_score_outputs_reads_the_evaluator_layout(tmp_path: Path) -> None:
    jobs = []
    for k, name in enumerate(GT):
        pk = f"job-{k}"
        points = [
            {"name": "mitotic figure", "point": [x, y, 0], "probability": sc} for x, y, sc in PRED[name]
        ]
        out = tmp_path / pk / "output" / TRACK1.output_file
        out.parent.mkdir(parents=True)
        out.write_text(json.dumps({"type": "Multiple points", "points": points}))
        jobs.append(
            {
                "pk": pk,
                "inputs": [{"image": {"name": name}, "interface": {"slug": TRACK1.input_slug}}],
                "outputs": [{"interface": {"slug": TRACK1.output_slug, "relative_path": TRACK1.output_file}}],
            }
        )
    (tmp_path / "predictions.json").write_text(json.dumps(jobs))
    truth = {
        n: {"annotations": [[x, y, 0] for x, y in g], "tumor domain": d, "roi type": r}
        for n, (g, d, r) in GT.items()
    }
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    res = score_outputs(tmp_path, tmp_path / "gt.json")
    assert res["track"] == "track1" and res["missing"] == []
    assert res["aggregates"]["f1_score"] == pytest.approx(EXPECTED["f1_score"])
    truth["999.tiff"] = {"annotations": [], "tumor domain": 2}
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    with pytest.raises(ValueError, match="no output for 1 ground-truth image"):
        score_outputs(tmp_path, tmp_path / "gt.json")
    assert score_outputs(tmp_path, tmp_path / "gt.json", partial=True)["missing"] == ["999.tiff"]
