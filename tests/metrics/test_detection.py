"""MIDOG detection metrics on hand-made point sets whose scores are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mitoscope.metrics.detection import (
    DetectionScore,
    average_precision,
    best_threshold,
    f1_by_group,
    froc,
    match_points,
    midog_f1,
    per_image_scores,
    precision_recall_curve,
    score_detection,
    summarize,
    threshold_sweep,
)


def pts(xy, scores=None, labels=None) -> pd.DataFrame:
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})
    if scores is not None:
        frame["score"] = np.asarray(scores, dtype=float)
    if labels is not None:
        frame["label"] = labels
    return frame


def test_exact_counts_simple():
    gt = pts([[100, 100], [400, 400], [800, 100]])
    pred = pts([[110, 100], [405, 395], [1000, 1000]], [0.9, 0.8, 0.7])
    s = midog_f1({"a": (pred, gt)})
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)


def test_duplicates_on_one_figure_are_one_tp_one_fp():
    gt = pts([[50, 50]])
    pred = pts([[52, 50], [48, 51]], [0.9, 0.9])
    s = midog_f1({"a": (pred, gt)})
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)


def test_one_prediction_between_two_figures_is_one_tp_one_fn():
    gt = pts([[0, 0], [20, 0]])
    pred = pts([[10, 0]], [1.0])
    s = midog_f1({"a": (pred, gt)})
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)


def test_exactly_at_radius_is_a_hit_like_evalutils():
    # evalutils uses BallTree.query_radius, which includes points at distance == r.
    gt = pts([[0, 0], [1000, 1000]])
    pred = pts([[30, 0], [1000 + 18, 1000 + 24]], [1, 1])  # both exactly 30 px = 7.5 µm away at 0.25 µm/px
    assert midog_f1({"a": (pred, gt)}).tp == 2
    just_outside = pts([[30.001, 0]], [1])
    s = midog_f1({"a": (just_outside, gt.iloc[:1])})
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)


def test_radius_scales_with_mpp():
    gt = pts([[0, 0]])
    pred = pts([[20, 0]], [1])
    assert midog_f1({"a": (pred, gt)}, mpp=0.25).tp == 1  # 5 µm
    assert midog_f1({"a": (pred, gt)}, mpp=0.5).tp == 0  # 10 µm
    assert midog_f1({"a": (pred, gt)}, mpp={"a": 0.375}).tp == 1  # 7.5 µm exactly
    assert midog_f1({"a": (pred, gt)}, radius_um=4.0).tp == 0


def test_greedy_in_ground_truth_order_not_optimal_assignment():
    # GT A at 0 takes its nearest prediction (at 6), leaving GT B at 15 with nothing free within 10 px:
    # an optimal assignment would pair A with -9 and B with 6 for 2 TPs; evalutils' greedy order gives 1.
    gt = pts([[0, 0], [15, 0]])
    pred = pts([[6, 0], [-9, 0]], [1, 1])
    gt_hit, pred_hit = match_points(gt.to_numpy(), pred[["x", "y"]].to_numpy(), radius=10)
    assert gt_hit.tolist() == [True, False]
    assert pred_hit.tolist() == [True, False]
    # Reversing the ground-truth order changes the result, as in evalutils.
    gt_hit, _ = match_points(gt.to_numpy()[::-1], pred[["x", "y"]].to_numpy(), radius=10)
    assert gt_hit.tolist() == [True, True]


def test_ties_at_equal_distance_use_one_prediction_each():
    gt = pts([[0, 0], [0, 0]])
    pred = pts([[10, 0], [-10, 0]], [1, 1])
    s = score_detection(gt.to_numpy(), pred[["x", "y"]].to_numpy(), radius=30)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)


def test_hard_negatives_are_not_targets_and_predictions_on_them_are_fp():
    gt = pts([[0, 0], [500, 500]], labels=["mitotic figure", "hard negative"])
    pred = pts([[0, 0], [500, 500]], [0.9, 0.9])
    s = midog_f1({"a": (pred, gt)})
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    gt_target = gt.assign(target=[1, 0]).drop(columns="label")
    assert midog_f1({"a": (pred, gt_target)}) == s


def test_threshold_drops_low_scores_first_and_keeps_equal():
    gt = pts([[0, 0]])
    pred = pts([[0, 0], [300, 300]], [0.5, 0.49])
    s = midog_f1({"a": (pred, gt)}, threshold=0.5)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    s = midog_f1({"a": (pred, gt)}, threshold=0.51)
    assert (s.tp, s.fp, s.fn) == (0, 0, 1)


def test_negative_prediction_labels_are_dropped_for_f1_but_not_for_ap():
    gt = pts([[0, 0]])
    pred = pts([[0, 0], [300, 300]], [0.9, 0.4], labels=["mitotic figure", "non-mitotic figure"])
    s = midog_f1({"a": (pred, gt)})
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    curve = precision_recall_curve({"a": (pred, gt)})
    assert len(curve) == 2


def test_empty_images():
    empty = pts(np.zeros((0, 2)), [])
    gt = pts([[0, 0]])
    assert midog_f1({"a": (empty, empty)}) == DetectionScore(0, 0, 0, 0.0, 0.0, 1.0)
    s = midog_f1({"a": (empty, gt)})
    assert (s.tp, s.fp, s.fn, s.f1) == (0, 0, 1, 0.0)
    s = midog_f1({"a": (pts([[0, 0]], [1.0]), empty)})
    assert (s.tp, s.fp, s.fn, s.precision, s.f1) == (0, 1, 0, 0.0, 0.0)
    assert midog_f1({}).f1 == 1.0
    assert math.isnan(average_precision({"a": (pts([[0, 0]], [1.0]), empty)}))


def test_pooling_differs_from_averaging_per_image():
    # Image a: 1 TP, 0 FP, 0 FN (F1 1). Image b: 1 TP, 3 FP, 3 FN (F1 0.25).
    a = (pts([[0, 0]], [1]), pts([[0, 0]]))
    gt_b = pts([[0, 0], [200, 0], [400, 0], [600, 0]])
    pred_b = pts([[0, 0], [0, 900], [200, 900], [400, 900]], [1, 1, 1, 1])
    per_image = {"a": a, "b": (pred_b, gt_b)}
    pooled = midog_f1(per_image)
    assert (pooled.tp, pooled.fp, pooled.fn) == (2, 3, 3)
    assert pooled.f1 == pytest.approx(4 / 10)
    per = per_image_scores(per_image)
    assert per["f1"].tolist() == pytest.approx([1.0, 0.25])
    assert per["f1"].mean() == pytest.approx(0.625)
    assert per["f1"].mean() != pytest.approx(pooled.f1)


def test_f1_by_group_pools_within_groups():
    gt = pts([[0, 0]])
    hit = (pts([[0, 0]], [1]), gt)
    miss = (pts([[500, 500]], [1]), gt)
    res = f1_by_group({"a": hit, "b": miss, "c": hit}, {"a": "x", "b": "x", "c": "y"})
    assert list(res) == ["x", "y"]
    assert (res["x"].tp, res["x"].fp, res["x"].fn) == (1, 1, 1)
    assert res["y"].f1 == 1.0
    with pytest.raises(ValueError, match="no group"):
        f1_by_group({"a": hit}, {})


def test_best_threshold_and_sweep():
    gt = pts([[0, 0], [100, 0], [200, 0]])
    pred = pts([[0, 0], [100, 0], [600, 0], [200, 0], [900, 0]], [0.9, 0.8, 0.7, 0.6, 0.1])
    sweep = threshold_sweep({"a": (pred, gt)})
    assert sweep["threshold"].tolist() == [0.1, 0.6, 0.7, 0.8, 0.9]
    # at 0.6: TP 3, FP 1 -> F1 6/7; at 0.8: TP 2 FN 1 -> 0.8; at 0.1: 3 TP 2 FP -> 0.75
    assert sweep.set_index("threshold").loc[0.6, "f1"] == pytest.approx(6 / 7)
    t, s = best_threshold({"a": (pred, gt)})
    assert t == 0.6
    assert (s.tp, s.fp, s.fn) == (3, 1, 0)
    t, _ = best_threshold({"a": (pred, gt)}, thresholds=[0.05, 0.5, 0.95])
    assert t == 0.5


def test_average_precision_coco101_and_all_point():
    gt = pts([[0, 0], [200, 0]])
    pred = pts([[0, 0], [500, 0], [200, 0]], [0.9, 0.5, 0.3])
    assert average_precision({"a": (pred, gt)}, interpolation="all-point") == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 101 points: recall 0..0.5 (51 points) at precision 1, 0.51..1 (50 points) at 2/3.
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert average_precision({"a": (pred, gt)}) == pytest.approx(expected)
    perfect = pts([[0, 0], [200, 0]], [0.9, 0.8])
    assert average_precision({"a": (perfect, gt)}) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="interpolation"):
        average_precision({"a": (pred, gt)}, interpolation="11pt")


def test_ap_box_iou_matches_7_5_um_offset():
    gt = pts([[0, 0]])
    # ±11.25 µm boxes = ±45 px at 0.25 µm/px; IoU 0.5 exactly at a 30 px horizontal shift.
    assert average_precision({"a": (pts([[30, 0]], [1]), gt)}) == pytest.approx(1.0)
    assert average_precision({"a": (pts([[31, 0]], [1]), gt)}) == pytest.approx(0.0)
    # diagonal 21.2 px (= 30 px distance) has IoU < 0.5: AP is stricter than the radius criterion
    d = 30 / math.sqrt(2)
    assert average_precision({"a": (pts([[d, d]], [1]), gt)}) == pytest.approx(0.0)
    assert midog_f1({"a": (pts([[d, d]], [1]), gt)}).tp == 1


def test_ap_is_pooled_over_images():
    gt = pts([[0, 0]])
    per_image = {"a": (pts([[0, 0]], [0.2]), gt), "b": (pts([[900, 900]], [0.9]), pts(np.zeros((0, 2))))}
    # pooled order: FP (0.9, image b) then TP (0.2): precision at recall 1 is 0.5
    assert average_precision(per_image, interpolation="all-point") == pytest.approx(0.5)


def test_froc_per_image_and_per_area():
    gt = pts([[0, 0], [100, 0]])
    pred = pts([[0, 0], [500, 0], [100, 0]], [0.9, 0.5, 0.2])
    per_image = {"a": (pred, gt), "b": (pts(np.zeros((0, 2)), []), pts(np.zeros((0, 2))))}
    res = froc(per_image, area_mm2={"a": 1.0, "b": 3.0})
    assert res["threshold"].tolist() == [0.2, 0.5, 0.9]
    assert res["sensitivity"].tolist() == [1.0, 0.5, 0.5]
    assert res["fp_per_image"].tolist() == [0.5, 0.5, 0.0]
    assert res["fp_per_mm2"].tolist() == [0.25, 0.25, 0.0]
    assert froc(per_image)["fp_per_mm2"].isna().all()


def test_summarize_table_has_overall_and_groups():
    gt = pts([[0, 0]])
    per_image = {"a": (pts([[0, 0]], [0.9]), gt), "b": (pts([[400, 0]], [0.9]), gt)}
    table = summarize(per_image, groups={"a": "g1", "b": "g2"})
    assert table["group"].tolist() == ["overall", "g1", "g2"]
    assert table["f1"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert table["ap"].tolist() == pytest.approx([51 / 101, 1.0, 0.0])


def test_bad_input_names_the_image():
    with pytest.raises(ValueError, match=r"'img7'.*'y'"):
        midog_f1({"img7": (pd.DataFrame({"x": [1.0]}), pts([[0, 0]]))})
    with pytest.raises(ValueError, match="img8"):
        midog_f1({"img8": (pts([[np.nan, 0]], [1]), pts([[0, 0]]))})


def test_ap_equals_pycocotools_when_installed():
    """Golden check against pycocotools COCOeval (what torchmetrics' map_50 runs in the MIDOG 2022 evaluation)."""
    import contextlib
    import io

    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    for _ in range(5):
        per_image, images, anns, dets = {}, [], [], []
        half = 45.0  # 11.25 µm at 0.25 µm/px
        for i in range(4):
            gt = rng.uniform(0, 1000, (int(rng.integers(1, 12)), 2))
            hit = gt[rng.random(len(gt)) < 0.7]
            pred = np.vstack(
                [hit + rng.normal(0, 12, hit.shape), rng.uniform(0, 1000, (int(rng.integers(0, 8)), 2))]
            )
            scores = rng.random(len(pred)).round(2)  # ties on purpose
            per_image[f"im{i}"] = (pts(pred, scores), pts(gt))
            images.append({"id": i + 1, "width": 1000, "height": 1000})
            for x, y in gt:
                box = [x - half, y - half, 2 * half, 2 * half]
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": box,
                             "area": 4 * half * half, "iscrowd": 0})  # fmt: skip
            for (x, y), s in zip(pred, scores, strict=True):
                dets.append({"image_id": i + 1, "category_id": 1, "bbox": [x - half, y - half, 2 * half, 2 * half],
                             "score": float(s)})  # fmt: skip
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": 1, "name": "mitotic figure"}],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
            ev = COCOeval(coco, coco.loadRes(dets), "bbox")
            ev.params.iouThrs = np.array([0.5])
            ev.params.maxDets = [1_000_000]
            ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
            ev.evaluate()
            ev.accumulate()
        reference = float(np.mean(ev.eval["precision"][0, :, 0, 0, -1]))
        assert average_precision(per_image) == pytest.approx(reference, abs=1e-12)


def test_threshold_sweep_equals_scoring_each_threshold_separately():
    """The one-query sweep must give exactly what ``midog_f1`` gives per threshold, ties on a pixel grid included."""
    rng = np.random.default_rng(1)
    per_image = {}
    for i in range(12):
        gt = rng.uniform(0, 1500, (8, 2))
        pred = np.vstack([gt + rng.normal(0, 15, gt.shape), rng.uniform(0, 1500, (20, 2)), gt[:3] + 5.0])
        per_image[f"f{i}"] = (pts(pred, rng.random(len(pred)).round(2)), pts(gt))
    for i in range(6):  # integer coordinates: equal distances happen
        gt = rng.integers(0, 120, (10, 2))
        pred = rng.integers(0, 120, (25, 2))
        per_image[f"g{i}"] = (pts(pred, rng.random(len(pred)).round(1)), pts(gt))
    sweep = threshold_sweep(per_image, max_thresholds=40)
    for row in sweep.itertuples():
        s = midog_f1(per_image, threshold=row.threshold)
        assert (row.tp, row.fp, row.fn) == (s.tp, s.fp, s.fn)


def test_tissue_errors_split_duplicates_from_tissue_errors_and_predict_slide_f1() -> None:
    from mitoscope.metrics.detection import TissueErrors, tissue_errors

    # 0.25 µm/px: 7.5 µm = 30 px, 12 µm = 48 px
    gt = pd.DataFrame({"x": [100.0, 1000.0], "y": [100.0, 100.0], "label": "mitotic figure"})
    pred = pd.DataFrame(
        {
            "x": [102.0, 140.0, 100.0, 3000.0, 5000.0],  # hit, duplicate (40 px), far away x2 ...
            "y": [100.0, 100.0, 160.0, 3000.0, 5000.0],  # ... and one at 60 px (beyond 48 px: a tissue error)
            "score": [0.9, 0.8, 0.7, 0.6, 0.1],
        }
    )
    e = tissue_errors({"a": (pred, gt)}, areas_mm2={"a": 2.0}, mpp=0.25, threshold=0.5)
    assert (e.figures, e.tp, e.duplicates, e.tissue_fp) == (2, 1, 1, 2)
    assert e.recall == 0.5 and e.duplicates_per_figure == 0.5 and e.fp_per_mm2 == 1.0
    # precision = R·M / (R·M + dup·M + FP) at M = 10: 5 / (5 + 5 + 1)
    p = 5 / 11
    assert e.expected_f1(10) == pytest.approx(2 * p * 0.5 / (p + 0.5))
    assert e.to_dict()["expected_f1_at_10"] == pytest.approx(e.expected_f1(10))
    assert TissueErrors(0, 0, 0, 0, 1.0).expected_f1(5) == 0.0
    with pytest.raises(ValueError, match="no tissue area"):
        tissue_errors({"a": (pred, gt)}, areas_mm2={}, mpp=0.25)


def test_tissue_errors_carry_intervals_that_narrow_with_more_tissue_and_contain_the_estimate() -> None:
    from mitoscope.metrics.detection import TissueErrors

    small = TissueErrors(figures=50, tp=40, duplicates=0, tissue_fp=1, tissue_mm2=0.3)
    large = TissueErrors(figures=5000, tp=4000, duplicates=0, tissue_fp=100, tissue_mm2=30.0)
    for e in (small, large):
        d = e.to_dict()
        assert d["recall_low"] < d["recall"] < d["recall_high"]
        assert d["fp_per_mm2_low"] < d["fp_per_mm2"] < d["fp_per_mm2_high"]
        assert d["expected_f1_at_10_low"] < d["expected_f1_at_10"] < d["expected_f1_at_10_high"]
    width = {k: e.fp_per_mm2_interval[1] - e.fp_per_mm2_interval[0] for k, e in (("s", small), ("l", large))}
    assert width["l"] < width["s"] / 5
    # no false detection on 0.31 mm² still allows about 12 per mm² (exact Poisson, 95 %)
    zero = TissueErrors(figures=10, tp=10, duplicates=0, tissue_fp=0, tissue_mm2=0.31)
    assert zero.fp_per_mm2_interval[0] == 0.0 and zero.fp_per_mm2_interval[1] == pytest.approx(
        3.689 / 0.31, rel=1e-3
    )
    assert zero.recall_interval[1] == pytest.approx(1.0)
