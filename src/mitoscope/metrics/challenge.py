"""The MIDOG 2025 evaluation containers' arithmetic, on a folder of container outputs and a ground-truth file.

**Track 1** (DeepMicroscopy ``MIDOG25_T1_evaluation_docker``, ``evaluate.py``). Per image, the points named
``mitotic figure`` are matched to the ground truth within 7.5 µm (evalutils ``score_detection``,
:func:`mitoscope.metrics.detection.score_detection`); TP/FP/FN are summed over images and
``precision = tp / (tp + fp + eps)``, ``recall = tp / (tp + fn + eps)``, ``f1 = (2tp + eps) / (2tp + fp + fn + eps)``
with ``eps = 1e-6``. ``AP`` uses every point by its probability: ±11.25 µm boxes, IoU >= 0.5, COCO 101-point
(:func:`mitoscope.metrics.detection.average_precision`, torchmetrics ``map_50`` in the evaluator). ``froc_auc``
(:func:`froc_auc`) is the area under sensitivity vs mean false positives per image over 0–8 FP/image, at 40
thresholds spaced evenly between the lowest and the highest probability — an area, not normalised (at most 8).
Each metric is also reported per tumour domain (``tumor_<d>_…``) and per ROI type (``roi_type_<t>_…``, only the
types present; the evaluator lists all three).

**Track 2** (``MIDOG25_T2_evaluation_docker``). The ``class`` of each page is the decision, ``confidence`` the
score: pooled sensitivity, specificity, balanced accuracy, accuracy and AUROC (``overall_…``), and per tumour domain
(``domain_<d>``) the same with scikit-learn's convention that a recall without positives is 0.

Where the evaluators would divide by zero or fail (no atypical figure at all, one class in a domain for AUROC, no
prediction for FROC), the value here is NaN (``null`` in JSON).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.io.challenge import (
    TRACK1,
    collect_outputs,
    ground_truth_track,
    read_track1_truth,
    read_track2_truth,
    validate_track1_output,
    validate_track2_output,
)
from mitoscope.io.midog_outputs import read_track1_json, read_track2_json
from mitoscope.metrics.classification import auroc, confusion
from mitoscope.metrics.detection import average_precision, score_detection
from mitoscope.utils.errors import InputError

#: ``eps`` of the Track 1 evaluator's precision / recall / F1.
EPS = 1e-6
#: Track 1 hit radius and AP box half side, µm (coordinates here are µm: mm × 1000).
RADIUS_UM = 7.5
BOX_UM = 11.25
FROC_MAX_FP = 8
FROC_THRESHOLDS = 40


@dataclasses.dataclass
class Track1Case:
    """One image: its points (``x, y`` in µm, ``score``, ``label``), ground-truth targets (N, 2) in µm, domain."""

    image: str
    points: pd.DataFrame
    truth: np.ndarray
    domain: str
    roi_type: str | None = None


@dataclasses.dataclass
class Track2Case:
    """One stack: ground-truth 0/1 (atypical = 1), domain per page, decisions 0/1 and P(atypical) per page."""

    image: str
    truth: np.ndarray
    domains: list[str]
    pred: np.ndarray
    score: np.ndarray


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    return {
        "precision": tp / (tp + fp + EPS),
        "recall": tp / (tp + fn + EPS),
        "f1": (2 * tp + EPS) / (2 * tp + fp + fn + EPS),
    }


def froc_auc(
    cases: Sequence[Track1Case],
    *,
    radius_um: float = RADIUS_UM,
    max_fp: float = FROC_MAX_FP,
    n_thresholds: int = FROC_THRESHOLDS,
) -> float:
    """FROC score of the MIDOG 2025 Track 1 evaluator (``calc_froc_score``): NaN without any point.

    Every point (whatever its name) with ``score >= t`` counts at threshold ``t``; sensitivity is pooled
    ``tp / (tp + fn + 1e-6)``, false positives are averaged over all images; the curve, sorted by FP/image, is
    interpolated at 50 points in ``[0, max_fp]`` (0 left of it, the last sensitivity right of it) and integrated by
    the trapezoidal rule.

    Examples:
        >>> pts = pd.DataFrame({"x": [0.0, 100.0], "y": [0.0, 0.0], "score": [0.9, 0.3]})
        >>> found = Track1Case("a", pts, np.array([[0.0, 0.0]]), "0")
        >>> missed = Track1Case("b", pts.iloc[:0], np.array([[5000.0, 0.0]]), "0")
        >>> round(froc_auc([found, missed]), 3)  # sensitivity 0.5 from 0 to 8 FP/image
        4.0
    """
    if not any(len(c.points) for c in cases):
        return math.nan
    scores = np.concatenate([c.points["score"].to_numpy(dtype=float) for c in cases if len(c.points)])
    lo, hi = float(scores.min()), float(scores.max())
    thresholds = [lo] if lo == hi else np.linspace(lo, hi, n_thresholds).tolist()
    recalls, fppi = [], []
    for t in thresholds:
        tp = fn = 0
        fps = []
        for c in cases:
            s = c.points["score"].to_numpy(dtype=float)
            xy = c.points[["x", "y"]].to_numpy(dtype=float)[s >= t]
            res = score_detection(c.truth.reshape(-1, 2), xy.reshape(-1, 2), radius=radius_um)
            tp, fn = tp + res.tp, fn + res.fn
            fps.append(res.fp)
        recalls.append(tp / (tp + fn + EPS))
        fppi.append(float(np.mean(fps)))
    fppi_arr, recall_arr = np.array(fppi), np.array(recalls)
    order = np.argsort(fppi_arr)
    x_eval = np.linspace(0, max_fp, 50)
    rec = np.interp(x_eval, fppi_arr[order], recall_arr[order], left=0, right=recall_arr[order][-1])
    return float(np.trapezoid(rec, x_eval))


def _ap(cases: Sequence[Track1Case]) -> float:
    per_image = {c.image: (c.points, pd.DataFrame(c.truth.reshape(-1, 2), columns=["x", "y"])) for c in cases}
    return average_precision(per_image, box_um=BOX_UM, mpp=1.0) if per_image else math.nan


def score_track1(cases: Sequence[Track1Case]) -> dict[str, Any]:
    """``{"results": [per image], "aggregates": {...}}`` with the Track 1 evaluator's keys (see the module).

    Examples:
        >>> pts = pd.DataFrame({"x": [0.0, 500.0], "y": [0.0, 0.0], "score": [0.9, 0.4],
        ...                     "label": ["mitotic figure", "non-mitotic figure"]})
        >>> agg = score_track1([Track1Case("a", pts, np.array([[3.0, 0.0]]), "0", "hotspot")])["aggregates"]
        >>> round(agg["f1_score"], 4), agg["AP"], round(agg["tumor_0_f1"], 4)
        (1.0, 1.0, 1.0)
    """
    results: list[dict[str, Any]] = []
    counts: list[tuple[int, int, int]] = []
    for c in cases:
        positive = c.points["label"].astype(str) == "mitotic figure"
        xy = c.points.loc[positive, ["x", "y"]].to_numpy(dtype=float).reshape(-1, 2)
        s = score_detection(c.truth.reshape(-1, 2), xy, radius=RADIUS_UM)
        counts.append((s.tp, s.fp, s.fn))
        results.append(
            {
                "image": c.image,
                "tumor_domain": c.domain,
                "roi_type": c.roi_type,
                "n_points": len(c.points),
                "metrics": {"true_positives": s.tp, "false_negatives": s.fn, "false_positives": s.fp},
            }
        )

    def block(subset: list[int]) -> dict[str, float]:
        tp, fp, fn = (sum(counts[i][k] for i in subset) for k in range(3))
        chosen = [cases[i] for i in subset]
        return {**_prf(tp, fp, fn), "AP": _ap(chosen), "froc_auc": froc_auc(chosen)}

    agg: dict[str, float] = {}
    if results:
        overall = block(list(range(len(cases))))
        agg = {
            "precision": overall["precision"],
            "recall": overall["recall"],
            "f1_score": overall["f1"],
            "froc_auc": overall["froc_auc"],
            "AP": overall["AP"],
        }
        for prefix, key in (("tumor", "domain"), ("roi_type", "roi_type")):
            values = sorted({str(getattr(c, key)) for c in cases if getattr(c, key) is not None})
            for v in values:
                sub = block([i for i, c in enumerate(cases) if str(getattr(c, key)) == v])
                for metric in ("precision", "recall", "f1", "AP", "froc_auc"):
                    agg[f"{prefix}_{v}_{metric}"] = sub[metric]
    return {"results": results, "aggregates": agg}


def _recall0(tp: int, fn: int) -> float:
    return tp / (tp + fn) if tp + fn else 0.0  # scikit-learn recall_score's zero_division


def _ratio_nan(num: int, den: int) -> float:
    return num / den if den else math.nan


def score_track2(cases: Sequence[Track2Case]) -> dict[str, Any]:
    """``{"results": [per stack], "aggregates": {...}}`` with the Track 2 evaluator's keys (see the module).

    Examples:
        >>> case = Track2Case("s", np.array([1, 0, 0, 1]), ["6"] * 4, np.array([1, 0, 1, 0]),
        ...                   np.array([0.9, 0.1, 0.6, 0.4]))
        >>> agg = score_track2([case])["aggregates"]
        >>> agg["overall_balanced_accuracy"], agg["overall_roc_auc"], agg["domain_6"]["balanced_accuracy"]
        (0.5, 0.75, 0.5)
    """
    results = []
    for c in cases:
        counts = confusion(c.truth, c.pred)
        results.append({"image": c.image, "pages": len(c.truth), **counts})
    if not cases:
        return {"results": results, "aggregates": {}}
    y = np.concatenate([c.truth for c in cases]).astype(int)
    p = np.concatenate([c.pred for c in cases]).astype(int)
    s = np.concatenate([c.score for c in cases]).astype(float)
    dom = np.array([d for c in cases for d in c.domains], dtype=object)
    tot = confusion(y, p)
    sens = _ratio_nan(tot["tp"], tot["tp"] + tot["fn"])
    spec = _ratio_nan(tot["tn"], tot["tn"] + tot["fp"])
    agg: dict[str, Any] = {
        "overall_sensitivity": sens,
        "overall_specificity": spec,
        "overall_balanced_accuracy": (sens + spec) / 2,
        "overall_roc_auc": auroc(y, s),
        "overall_accuracy": (tot["tp"] + tot["tn"]) / len(y),
    }
    for d in sorted(set(dom.tolist()), key=lambda v: (len(str(v)), str(v))):
        m = dom == d
        cm = confusion(y[m], p[m])
        d_sens, d_spec = _recall0(cm["tp"], cm["fn"]), _recall0(cm["tn"], cm["fp"])
        agg[f"domain_{d}"] = {
            "sensitivity": d_sens,
            "specificity": d_spec,
            "balanced_accuracy": (d_sens + d_spec) / 2,
            "accuracy": (cm["tp"] + cm["tn"]) / int(m.sum()),
            "roc_auc": auroc(y[m], s[m]),
        }
    return {"results": results, "aggregates": agg}


def score_outputs(
    outputs_dir: str | os.PathLike[str], ground_truth: str | os.PathLike[str], *, partial: bool = False
) -> dict[str, Any]:
    """Score a folder of container outputs against an evaluator's ``ground_truth.json`` (track from its format).

    Args:
        outputs_dir: see :func:`mitoscope.io.challenge.collect_outputs` for the two layouts.
        ground_truth: the evaluation container's ground truth (Track 1: dict by image; Track 2: list).
        partial: score only the images that have an output (default: a missing one is an error).

    Returns:
        ``{"track", "results", "aggregates", "missing"}`` (``missing``: ground-truth images without output).

    Examples:
        >>> score_outputs("no/such/dir", "no/such/gt.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: no/such/gt.json: cannot read: ...
    """
    track = ground_truth_track(ground_truth)
    if track is TRACK1:
        truth: dict[str, dict[str, Any]] = read_track1_truth(ground_truth)
    else:
        truth = read_track2_truth(ground_truth)
    found = collect_outputs(outputs_dir, track, list(truth))
    missing = [name for name in truth if name not in found]
    if missing and not partial:
        raise InputError(
            f"no output for {len(missing)} ground-truth image(s): {missing[:5]} (--partial scores the others)",
            path=outputs_dir,
        )
    names = [name for name in truth if name in found]
    if track is TRACK1:
        scored = score_track1([_track1_case(name, found[name], truth[name]) for name in names])
    else:
        scored = score_track2([_track2_case(name, found[name], truth[name]) for name in names])
    return {"track": track.name, **scored, "missing": missing}


def _track1_case(name: str, path: Path, truth: dict[str, Any]) -> Track1Case:
    validate_track1_output(path)
    points = read_track1_json(path, mpp=1.0)  # mm → µm
    gt = np.array([[float(a[0]) * 1000.0, float(a[1]) * 1000.0] for a in truth["annotations"]]).reshape(-1, 2)
    roi = truth.get("roi type")
    return Track1Case(name, points, gt, str(truth["tumor domain"]), None if roi is None else str(roi))


def _track2_case(name: str, path: Path, truth: dict[str, Any]) -> Track2Case:
    validate_track2_output(path)
    table = read_track2_json(path)
    if len(table) != len(truth["labels"]):
        raise InputError(
            f"{len(table)} results but the ground truth of {name!r} has {len(truth['labels'])} pages",
            path=path,
        )
    return Track2Case(
        name,
        np.array([1 if lab == "atypical" else 0 for lab in truth["labels"]]),
        [str(d) for d in truth["tumordomains"]],
        (table["label"] == "atypical").to_numpy().astype(int),
        table["p_atypical"].to_numpy(dtype=float),
    )


def format_metrics(metrics: dict[str, Any]) -> str:
    """The aggregates of :func:`score_outputs` as ``key: value`` lines (nested per-domain dicts on one line).

    Examples:
        >>> print(format_metrics({"aggregates": {"f1_score": 0.5, "domain_1": {"roc_auc": math.nan}}}))
        f1_score: 0.5000
        domain_1: roc_auc nan
    """

    def fmt(value: Any) -> str:
        return "nan" if value is None or value != value else f"{value:.4f}"

    lines = []
    for key, value in metrics["aggregates"].items():
        if isinstance(value, dict):
            lines.append(f"{key}: " + ", ".join(f"{k} {fmt(v)}" for k, v in value.items()))
        else:
            lines.append(f"{key}: {fmt(value)}")
    return "\n".join(lines)
