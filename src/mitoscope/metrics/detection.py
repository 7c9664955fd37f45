"""Detection metrics exactly as the MIDOG challenges compute them.

**F1** (MIDOG 2021/2022/2025 track 1). A prediction is a hit when it lies within ``radius_um`` = 7.5 µm (30 px at
0.25 µm/px) of a ground-truth mitotic figure. Matching per image is the greedy algorithm of
DIAGNijmegen/comic ``evalutils.scorers.score_detection`` (https://github.com/comic/evalutils,
``evalutils/scorers.py``), used by the MIDOG evaluation containers:

* a ball tree over the predictions is queried with every ground-truth point
  (``BallTree.query_radius(..., sort_results=True)``), so a prediction at *exactly* the radius is a hit
  (distance ``<=`` radius);
* ground-truth points are visited in their given order; each takes its nearest prediction not yet used
  (ties at equal distance are broken exactly as scikit-learn's ball tree orders them, because we use that same
  ball tree) or, if none is left in range, counts as a false negative;
* every prediction not used by some ground truth is a false positive: two predictions on one figure are
  1 TP + 1 FP, one prediction between two figures is 1 TP + 1 FN.

TP, FP and FN are **summed over all images** before precision, recall and F1 are computed (not averaged per
image). Hard negatives ("hard negative", category 2 in MIDOG++) are not targets: they never count as TP or FN,
and a prediction on one is an ordinary FP. Conventions for empty sets follow the MIDOG evaluation's ``eps``
formulas in the limit: precision is 0 without predictions, recall is 0 without targets, and F1 is 1 when there
are neither predictions nor targets (``(2·tp + eps) / (2·tp + fp + fn + eps)``).

Predictions: a table with ``x``, ``y`` (level-0 px), ``score`` and optionally ``label``. For F1
(:func:`midog_f1`) rows whose label marks them as not a mitosis (``"non-mitotic figure"``, ``"hard negative"``,
as in the MIDOG output JSON where F1 only uses ``name == "mitotic figure"``) are dropped, then rows with
``score < threshold`` when a threshold is given (``score >= threshold`` is kept). Score-sweeping metrics (AP,
FROC, :func:`best_threshold`) use every prediction and only its score, as MIDOG 2022's AP does.

**AP** (MIDOG 2022). Every point becomes a square box of ±``box_um`` = 11.25 µm; a detection matches a target at
IoU >= 0.5 (for equal squares, a pure horizontal or vertical offset of at most 7.5 µm). Matching and
accumulation follow COCO / pycocotools as called through torchmetrics ``MeanAveragePrecision`` in the MIDOG 2022
evaluation: per image, detections by descending score (stable sort) each take the unmatched target of highest
IoU >= 0.5; all detections of all images are then pooled and sorted by score; precision is made monotonically
non-increasing and averaged over the **101 recall points** 0, 0.01, …, 1 (``interpolation="coco101"``, the
default, what MIDOG reports). ``interpolation="all-point"`` gives the area under the monotone curve at every
recall change (VOC 2010+ style).

Examples:
    >>> import pandas as pd
    >>> gt = pd.DataFrame({"x": [100.0, 400.0], "y": [100.0, 400.0]})
    >>> pred = pd.DataFrame({"x": [110.0, 800.0], "y": [100.0, 800.0], "score": [0.9, 0.8]})
    >>> s = midog_f1({"img1": (pred, gt)})
    >>> s.tp, s.fp, s.fn, round(s.f1, 3)
    (1, 1, 1, 0.5)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.metrics.intervals import poisson_rate_interval, wilson_interval

#: Radius of a hit in the MIDOG challenges (µm).
MIDOG_RADIUS_UM = 7.5
#: Half side of the box around each point for MIDOG 2022 AP (µm).
MIDOG_AP_BOX_UM = 11.25
#: Prediction labels that mean "not a mitotic figure" (dropped before F1).
NEGATIVE_LABELS = frozenset(
    {"non-mitotic figure", "not mitotic figure", "hard negative", "imposter", "negative", "background"}
)
#: Ground-truth labels that are targets; anything else with a ``label`` column is ignored.
TARGET_LABELS = frozenset({"mitotic figure", "normal", "atypical"})

PerImage = Mapping[str, tuple[pd.DataFrame, pd.DataFrame]]
MppArg = float | Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class DetectionScore:
    """Counts and the derived precision, recall and F1 (see the module docstring for empty-set conventions)."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> DetectionScore:
        """Build a score from TP/FP/FN counts.

        Examples:
            >>> DetectionScore.from_counts(3, 1, 2).f1
            0.6666666666666666
        """
        tp, fp, fn = int(tp), int(fp), int(fn)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        denom = 2 * tp + fp + fn
        f1 = 2 * tp / denom if denom else 1.0
        return cls(tp, fp, fn, precision, recall, f1)

    def __add__(self, other: DetectionScore) -> DetectionScore:
        """Pool two scores (sum the counts)."""
        return DetectionScore.from_counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, float]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- matching


def match_points(gt_xy: np.ndarray, pred_xy: np.ndarray, *, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy evalutils matching; return ``(gt_hit, pred_hit)`` boolean arrays.

    Args:
        gt_xy: ``(N, 2)`` ground-truth points, visited in this order.
        pred_xy: ``(M, 2)`` predicted points.
        radius: Hit radius in the same unit; a prediction at exactly ``radius`` is a hit.

    Returns:
        ``gt_hit[i]`` is True when target ``i`` was matched (TP), ``pred_hit[j]`` when prediction ``j`` was used.

    Examples:
        >>> g, p = match_points(np.array([[0.0, 0.0]]), np.array([[30.0, 0.0], [5.0, 0.0]]), radius=30)
        >>> g.tolist(), p.tolist()
        ([True], [False, True])
    """
    gt_xy = np.asarray(gt_xy, dtype=float).reshape(-1, 2)
    pred_xy = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
    gt_hit = np.zeros(len(gt_xy), dtype=bool)
    pred_hit = np.zeros(len(pred_xy), dtype=bool)
    if len(gt_xy) == 0 or len(pred_xy) == 0:
        return gt_hit, pred_hit
    from sklearn.neighbors import BallTree

    hits = BallTree(pred_xy).query_radius(gt_xy, r=radius, return_distance=True, sort_results=True)[0]
    for i, candidates in enumerate(hits):
        for j in candidates:
            if not pred_hit[j]:
                pred_hit[j] = True
                gt_hit[i] = True
                break
    return gt_hit, pred_hit


def score_detection(gt_xy: np.ndarray, pred_xy: np.ndarray, *, radius: float) -> DetectionScore:
    """TP/FP/FN of one image by :func:`match_points` (evalutils ``score_detection``).

    Examples:
        >>> score_detection(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [2.0, 0.0]]), radius=30).fp
        1
    """
    gt_hit, pred_hit = match_points(gt_xy, pred_xy, radius=radius)
    tp = int(gt_hit.sum())
    return DetectionScore.from_counts(tp, len(pred_hit) - tp, len(gt_hit) - tp)


# --------------------------------------------------------------------------------------------- inputs


def _xy(frame: pd.DataFrame, what: str, image: str) -> np.ndarray:
    for col in ("x", "y"):
        if col not in frame.columns:
            raise ValueError(
                f"{what} of image {image!r} has no {col!r} column (columns: {list(frame.columns)})"
            )
    xy = frame[["x", "y"]].to_numpy(dtype=float)
    if len(xy) and not np.isfinite(xy).all():
        raise ValueError(f"{what} of image {image!r} has missing or infinite coordinates")
    return xy


def gt_targets(gt: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ground-truth table that are targets (mitotic figures; hard negatives dropped).

    Uses ``target == 1`` when the table has a ``target`` column, else ``label`` in :data:`TARGET_LABELS`,
    else every row.

    Examples:
        >>> gt = pd.DataFrame({"x": [1.0, 2.0], "y": [1.0, 2.0], "label": ["mitotic figure", "hard negative"]})
        >>> len(gt_targets(gt))
        1
    """
    if "target" in gt.columns:
        return gt[gt["target"].astype(int) == 1]
    if "label" in gt.columns:
        return gt[gt["label"].astype(str).str.lower().isin(TARGET_LABELS)]
    return gt


def _scores(pred: pd.DataFrame, image: str) -> np.ndarray:
    if "score" not in pred.columns:
        return np.ones(len(pred))
    scores = pred["score"].to_numpy(dtype=float)
    if len(scores) and not np.isfinite(scores).all():
        raise ValueError(f"predictions of image {image!r} have missing scores")
    return scores


def _positive_predictions(pred: pd.DataFrame) -> pd.DataFrame:
    if "label" not in pred.columns:
        return pred
    return pred[~pred["label"].astype(str).str.lower().isin(NEGATIVE_LABELS)]


@dataclasses.dataclass
class _Image:
    name: str
    gt: np.ndarray  # (N, 2) targets
    pred: np.ndarray  # (M, 2) in input order (evalutils tie-breaking depends on it)
    scores: np.ndarray  # (M,)
    radius: float  # px


def _mpp_of(mpp: MppArg, image: str) -> float:
    if isinstance(mpp, Mapping):
        if image not in mpp:
            raise ValueError(f"no mpp given for image {image!r}")
        return float(mpp[image])
    return float(mpp)


def _prepare(per_image: PerImage, *, radius_um: float, mpp: MppArg, respect_labels: bool) -> list[_Image]:
    images = []
    for name, (pred, gt) in per_image.items():
        if pred is None:
            pred = pd.DataFrame({"x": [], "y": [], "score": []})
        if respect_labels:
            pred = _positive_predictions(pred)
        xy = _xy(pred, "predictions", name)
        scores = _scores(pred, name)
        targets = _xy(gt_targets(gt), "ground truth", name)
        radius = radius_um / _mpp_of(mpp, name)
        images.append(_Image(str(name), targets, xy, scores, radius))
    return images


def _count_at(images: Iterable[_Image], threshold: float | None) -> dict[str, DetectionScore]:
    out = {}
    for im in images:
        pred = im.pred if threshold is None else im.pred[im.scores >= threshold]
        out[im.name] = score_detection(im.gt, pred, radius=im.radius)
    return out


# --------------------------------------------------------------------------------------------- F1


def per_image_scores(
    per_image: PerImage,
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: MppArg = 0.25,
    threshold: float | None = None,
) -> pd.DataFrame:
    """One row per image: ``image, tp, fp, fn, precision, recall, f1``.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> per_image_scores({"a": (gt.assign(score=1.0), gt)})["f1"].tolist()
        [1.0]
    """
    images = _prepare(per_image, radius_um=radius_um, mpp=mpp, respect_labels=True)
    scores = _count_at(images, threshold)
    rows = [{"image": name, **s.to_dict()} for name, s in scores.items()]
    return pd.DataFrame(rows, columns=["image", "tp", "fp", "fn", "precision", "recall", "f1"])


def midog_f1(
    per_image: PerImage,
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: MppArg = 0.25,
    threshold: float | None = None,
) -> DetectionScore:
    """MIDOG F1: evalutils matching per image, TP/FP/FN pooled over all images.

    Args:
        per_image: ``{image: (predictions, ground_truth)}``; predictions have ``x, y`` and optionally ``score``
            and ``label``; ground truth has ``x, y`` and optionally ``label``/``target`` (hard negatives ignored).
        radius_um: Hit radius in µm.
        mpp: Microns per pixel of the coordinates (one value or one per image).
        threshold: Drop predictions with ``score < threshold`` first (None keeps all).

    Returns:
        The pooled :class:`DetectionScore`.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> pred = pd.DataFrame({"x": [29.0, 0.0], "y": [0.0, 0.0], "score": [0.9, 0.2]})
        >>> midog_f1({"a": (pred, gt)}, threshold=0.5).f1
        1.0
    """
    images = _prepare(per_image, radius_um=radius_um, mpp=mpp, respect_labels=True)
    total = DetectionScore.from_counts(0, 0, 0)
    for score in _count_at(images, threshold).values():
        total = total + score
    return total


def f1_by_group(
    per_image: PerImage,
    groups: Mapping[str, str],
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: MppArg = 0.25,
    threshold: float | None = None,
) -> dict[str, DetectionScore]:
    """Pooled MIDOG F1 for each group of images (e.g. tumour type / domain), in sorted group order.

    Args:
        per_image: As for :func:`midog_f1`.
        groups: ``{image: group}``; every image must have a group.
        radius_um: Hit radius in µm.
        mpp: Microns per pixel.
        threshold: Score threshold.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> none = gt.iloc[:0].assign(score=[])
        >>> res = f1_by_group({"a": (gt.assign(score=1.0), gt), "b": (none, gt)}, {"a": "dog", "b": "cat"})
        >>> {k: v.f1 for k, v in res.items()}
        {'cat': 0.0, 'dog': 1.0}
    """
    missing = [name for name in per_image if name not in groups]
    if missing:
        raise ValueError(f"no group given for images {missing[:5]}")
    images = _prepare(per_image, radius_um=radius_um, mpp=mpp, respect_labels=True)
    out: dict[str, DetectionScore] = {}
    for name, score in _count_at(images, threshold).items():
        key = str(groups[name])
        out[key] = out.get(key, DetectionScore.from_counts(0, 0, 0)) + score
    return dict(sorted(out.items()))


def _candidate_thresholds(images: list[_Image], max_thresholds: int) -> np.ndarray:
    scores = np.unique(np.concatenate([*(im.scores for im in images), np.empty(0)]))
    if len(scores) > max_thresholds:
        scores = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, max_thresholds), method="nearest"))
    return scores


def threshold_sweep(
    per_image: PerImage,
    *,
    thresholds: Iterable[float] | None = None,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: MppArg = 0.25,
    max_thresholds: int = 256,
) -> pd.DataFrame:
    """Pooled TP/FP/FN, precision, recall and F1 at each score threshold (``score >= t`` kept).

    Labels are ignored; every prediction competes by its score. Default thresholds: the distinct scores
    (at most ``max_thresholds``, taken at score quantiles).

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> pred = pd.DataFrame({"x": [0.0, 100.0], "y": [0.0, 0.0], "score": [0.9, 0.3]})
        >>> threshold_sweep({"a": (pred, gt)})[["threshold", "f1"]].values.tolist()
        [[0.3, 0.6666666666666666], [0.9, 1.0]]
    """
    images = _prepare(per_image, radius_um=radius_um, mpp=mpp, respect_labels=False)
    ts = (
        _candidate_thresholds(images, max_thresholds)
        if thresholds is None
        else np.asarray(sorted(float(t) for t in thresholds))
    )
    counts = np.zeros((len(ts), 3), dtype=np.int64)  # tp, fp, fn per threshold
    for im in images:
        counts += _sweep_image(im, ts)
    rows = [
        {"threshold": float(t), **DetectionScore.from_counts(*c).to_dict()}
        for t, c in zip(ts, counts, strict=True)
    ]
    return pd.DataFrame(rows, columns=["threshold", "tp", "fp", "fn", "precision", "recall", "f1"])


def _sweep_image(im: _Image, thresholds: np.ndarray) -> np.ndarray:
    """``(len(thresholds), 3)`` TP/FP/FN of one image at every threshold, exactly as :func:`score_detection`.

    The ball tree is queried once with all predictions; at each threshold the greedy pass skips predictions
    below it. Restricting the sorted candidate lists gives the same order as a tree built on the kept subset
    unless two candidates of one target lie at exactly the same distance (the tree's tie order may then depend
    on the subset): such images fall back to one tree per threshold.
    """
    out = np.zeros((len(thresholds), 3), dtype=np.int64)
    n_pred, n_gt = len(im.pred), len(im.gt)
    kept_counts = np.array([int(np.sum(im.scores >= t)) for t in thresholds], dtype=np.int64)
    if n_gt == 0 or n_pred == 0:
        out[:, 1] = kept_counts
        out[:, 2] = n_gt
        return out
    from sklearn.neighbors import BallTree

    hits, dists = BallTree(im.pred).query_radius(im.gt, r=im.radius, return_distance=True, sort_results=True)
    if any(len(d) > 1 and np.any(np.diff(d) == 0) for d in dists):
        for k, t in enumerate(thresholds):
            score = score_detection(im.gt, im.pred[im.scores >= t], radius=im.radius)
            out[k] = (score.tp, score.fp, score.fn)
        return out
    for k, t in enumerate(thresholds):
        keep = im.scores >= t
        used = np.zeros(n_pred, dtype=bool)
        tp = 0
        for candidates in hits:
            for j in candidates:
                if keep[j] and not used[j]:
                    used[j] = True
                    tp += 1
                    break
        out[k] = (tp, kept_counts[k] - tp, n_gt - tp)
    return out


def best_threshold(
    per_image: PerImage,
    *,
    thresholds: Iterable[float] | None = None,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: MppArg = 0.25,
    max_thresholds: int = 256,
) -> tuple[float, DetectionScore]:
    """The score threshold that maximises pooled MIDOG F1 (ties: the highest such threshold).

    Use on validation data to tune a detector's threshold.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> pred = pd.DataFrame({"x": [0.0, 100.0], "y": [0.0, 0.0], "score": [0.9, 0.3]})
        >>> t, s = best_threshold({"a": (pred, gt)})
        >>> t, s.f1
        (0.9, 1.0)
    """
    sweep = threshold_sweep(
        per_image, thresholds=thresholds, radius_um=radius_um, mpp=mpp, max_thresholds=max_thresholds
    )
    if sweep.empty:
        images = _prepare(per_image, radius_um=radius_um, mpp=mpp, respect_labels=False)
        total = DetectionScore.from_counts(0, 0, 0)
        for score in _count_at(images, None).values():
            total = total + score
        return 0.5, total
    best = sweep["f1"].to_numpy()
    idx = int(np.flatnonzero(best == best.max())[-1])
    row = sweep.iloc[idx]
    return float(row["threshold"]), DetectionScore.from_counts(row["tp"], row["fp"], row["fn"])


# --------------------------------------------------------------------------------------------- AP


def _box_iou(a: np.ndarray, b: np.ndarray, half: float) -> np.ndarray:
    """IoU of equal squares of half side ``half`` centred at ``a`` (N, 2) and ``b`` (M, 2)."""
    side = 2.0 * half
    ox = np.clip(side - np.abs(a[:, None, 0] - b[None, :, 0]), 0.0, None)
    oy = np.clip(side - np.abs(a[:, None, 1] - b[None, :, 1]), 0.0, None)
    inter = ox * oy
    return inter / (2.0 * side * side - inter)


def _coco_match(im: _Image, half: float, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools ``evaluateImg`` for one image: scores sorted descending and which detections are TPs."""
    order = np.argsort(-im.scores, kind="mergesort")
    pred, scores = im.pred[order], im.scores[order]
    is_tp = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(im.gt) == 0:
        return scores, is_tp
    ious = _box_iou(pred, im.gt, half)
    gt_used = np.zeros(len(im.gt), dtype=bool)
    for d in range(len(pred)):
        best, match = min(iou_threshold, 1 - 1e-10), -1
        for g in range(len(im.gt)):
            if gt_used[g] or ious[d, g] < best:
                continue
            best, match = ious[d, g], g
        if match >= 0:
            gt_used[match] = True
            is_tp[d] = True
    return scores, is_tp


def precision_recall_curve(
    per_image: PerImage,
    *,
    box_um: float = MIDOG_AP_BOX_UM,
    mpp: MppArg = 0.25,
    iou_threshold: float = 0.5,
) -> pd.DataFrame:
    """Pooled precision–recall points (COCO matching), one row per detection in descending score order.

    Columns: ``score, tp, fp, precision, recall``; ``attrs["n_targets"]`` holds the number of targets.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> pred = pd.DataFrame({"x": [0.0, 500.0], "y": [0.0, 0.0], "score": [0.9, 0.3]})
        >>> precision_recall_curve({"a": (pred, gt)})["precision"].tolist()
        [1.0, 0.5]
    """
    images = _prepare(per_image, radius_um=1.0, mpp=mpp, respect_labels=False)
    scores, hits = [], []
    n_targets = 0
    for im in images:
        half = box_um / _mpp_of(mpp, im.name)
        sorted_scores, is_tp = _coco_match(im, half, iou_threshold)
        hits.append(is_tp)
        scores.append(sorted_scores)
        n_targets += len(im.gt)
    all_scores = np.concatenate([*scores, np.empty(0)])
    all_hits = np.concatenate([*hits, np.empty(0, dtype=bool)])
    order = np.argsort(-all_scores, kind="mergesort")
    tp = np.cumsum(all_hits[order]).astype(float)
    fp = np.cumsum(~all_hits[order]).astype(float)
    precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
    recall = tp / n_targets if n_targets else np.zeros_like(tp)
    frame = pd.DataFrame(
        {"score": all_scores[order], "tp": tp, "fp": fp, "precision": precision, "recall": recall}
    )
    frame.attrs["n_targets"] = n_targets
    return frame


def average_precision(
    per_image: PerImage,
    *,
    box_um: float = MIDOG_AP_BOX_UM,
    mpp: MppArg = 0.25,
    iou_threshold: float = 0.5,
    interpolation: str = "coco101",
) -> float:
    """MIDOG 2022 AP: ±``box_um`` boxes, IoU >= 0.5, pooled over images (NaN when there are no targets).

    Args:
        per_image: As for :func:`midog_f1` (all predictions are used, by score; labels are ignored).
        box_um: Half side of the square around each point, µm.
        mpp: Microns per pixel.
        iou_threshold: IoU for a match.
        interpolation: ``"coco101"`` (mean interpolated precision at recall 0, 0.01, …, 1, as pycocotools and
            torchmetrics compute ``map_50``) or ``"all-point"`` (area under the monotone PR curve).

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0, 200.0], "y": [0.0, 0.0]})
        >>> pred = pd.DataFrame({"x": [0.0, 500.0, 200.0], "y": [0.0, 0.0, 0.0], "score": [0.9, 0.5, 0.3]})
        >>> round(average_precision({"a": (pred, gt)}, interpolation="all-point"), 4)
        0.8333
    """
    if interpolation not in ("coco101", "all-point"):
        raise ValueError(f"interpolation must be 'coco101' or 'all-point', got {interpolation!r}")
    curve = precision_recall_curve(per_image, box_um=box_um, mpp=mpp, iou_threshold=iou_threshold)
    if curve.attrs["n_targets"] == 0:
        return math.nan
    rc = curve["recall"].to_numpy()
    pr = curve["precision"].to_numpy().copy()
    for i in range(len(pr) - 1, 0, -1):  # monotone non-increasing precision envelope
        pr[i - 1] = max(pr[i - 1], pr[i])
    if interpolation == "coco101":
        rec_thresholds = np.linspace(0.0, 1.0, 101)
        q = np.zeros(len(rec_thresholds))
        inds = np.searchsorted(rc, rec_thresholds, side="left")
        valid = inds < len(pr)
        q[valid] = pr[inds[valid]]
        return float(q.mean())
    mrec = np.concatenate([[0.0], rc])
    mpre = np.concatenate([[pr[0] if len(pr) else 0.0], pr])
    return float(np.sum((mrec[1:] - mrec[:-1]) * mpre[1:]))


# --------------------------------------------------------------------------------------------- FROC


def froc(
    per_image: PerImage,
    *,
    thresholds: Iterable[float] | None = None,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: MppArg = 0.25,
    area_mm2: Mapping[str, float] | None = None,
    max_thresholds: int = 256,
) -> pd.DataFrame:
    """FROC points: sensitivity vs false positives per image (and per mm² when areas are given).

    Columns: ``threshold, sensitivity, fp_per_image, fp_per_mm2`` (NaN without ``area_mm2``), ``tp, fp, fn``;
    one row per threshold, ascending.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> pred = pd.DataFrame({"x": [0.0, 100.0], "y": [0.0, 0.0], "score": [0.9, 0.3]})
        >>> froc({"a": (pred, gt), "b": (pred.iloc[:0], gt.iloc[:0])})[["sensitivity", "fp_per_image"]].values.tolist()
        [[1.0, 0.5], [1.0, 0.0]]
    """
    sweep = threshold_sweep(
        per_image, thresholds=thresholds, radius_um=radius_um, mpp=mpp, max_thresholds=max_thresholds
    )
    n_images = max(len(per_image), 1)
    total_area = math.nan
    if area_mm2 is not None:
        missing = [name for name in per_image if name not in area_mm2]
        if missing:
            raise ValueError(f"no tissue area given for images {missing[:5]}")
        total_area = float(sum(float(area_mm2[name]) for name in per_image))
    pos = sweep["tp"] + sweep["fn"]
    out = pd.DataFrame(
        {
            "threshold": sweep["threshold"],
            "sensitivity": np.where(pos > 0, sweep["tp"] / pos.where(pos > 0, 1), 0.0),
            "fp_per_image": sweep["fp"] / n_images,
            "fp_per_mm2": sweep["fp"] / total_area if total_area and total_area > 0 else math.nan,
            "tp": sweep["tp"],
            "fp": sweep["fp"],
            "fn": sweep["fn"],
        }
    )
    return out


def summarize(
    per_image: PerImage,
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    mpp: MppArg = 0.25,
    threshold: float | None = None,
    groups: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """A table of TP, FP, FN, precision, recall, F1 and AP: one ``overall`` row plus one per group.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> summarize({"a": (gt.assign(score=0.9), gt)})[["group", "f1", "ap"]].values.tolist()
        [['overall', 1.0, 1.0]]
    """
    rows: list[dict[str, Any]] = []
    overall = midog_f1(per_image, radius_um=radius_um, mpp=mpp, threshold=threshold)
    box_um = MIDOG_AP_BOX_UM * radius_um / MIDOG_RADIUS_UM
    rows.append(
        {
            "group": "overall",
            "images": len(per_image),
            **overall.to_dict(),
            "ap": average_precision(per_image, box_um=box_um, mpp=mpp),
        }
    )
    if groups:
        by_group = f1_by_group(per_image, groups, radius_um=radius_um, mpp=mpp, threshold=threshold)
        for name, score in by_group.items():
            subset = {k: v for k, v in per_image.items() if str(groups[k]) == name}
            rows.append(
                {
                    "group": name,
                    "images": len(subset),
                    **score.to_dict(),
                    "ap": average_precision(subset, box_um=box_um, mpp=mpp),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- slide-density view

#: Unmatched detections this close to a target (µm) count as duplicates of it, farther ones as tissue errors.
DUPLICATE_RADIUS_UM = 12.0


@dataclasses.dataclass(frozen=True)
class TissueErrors:
    """What a detector's errors mean on a real slide, whose figure density is far below a test set's.

    MIDOG F1 on a set with a figure every few cells says little about a slide with a handful per mm². The
    errors are split by kind: ``duplicates`` are unmatched detections within :data:`DUPLICATE_RADIUS_UM` of a
    figure (a second point on it: anaphase halves, an offset centre), which scale with the figure count;
    ``tissue_fp`` are the other unmatched detections, which scale with the tissue area. From the two rates
    :meth:`expected_f1` predicts the F1 on a slide of any density.
    """

    figures: int
    tp: int
    duplicates: int
    tissue_fp: int
    tissue_mm2: float

    @property
    def recall(self) -> float:
        """Matched figures / figures."""
        return self.tp / self.figures if self.figures else math.nan

    @property
    def duplicates_per_figure(self) -> float:
        """Duplicate detections per annotated figure."""
        return self.duplicates / self.figures if self.figures else math.nan

    @property
    def fp_per_mm2(self) -> float:
        """Detections away from every figure, per mm² of tissue."""
        return self.tissue_fp / self.tissue_mm2 if self.tissue_mm2 > 0 else math.nan

    @property
    def recall_interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the recall."""
        return wilson_interval(self.tp, self.figures)

    @property
    def fp_per_mm2_interval(self) -> tuple[float, float]:
        """95 % exact Poisson interval of the tissue false positives per mm² (one detection on a small test set
        moves the rate a lot: this says how much)."""
        return poisson_rate_interval(self.tissue_fp, self.tissue_mm2)

    def expected_f1(
        self, figures_per_mm2: float, *, recall: float | None = None, fp_per_mm2: float | None = None
    ) -> float:
        """F1 on a slide with ``figures_per_mm2``: precision = R·M / (R·M + dup·M + FP/mm²) (``recall`` and
        ``fp_per_mm2`` replace the measured ones when given).

        Examples:
            >>> e = TissueErrors(figures=100, tp=90, duplicates=1, tissue_fp=2, tissue_mm2=1.0)
            >>> round(e.expected_f1(10), 3)
            0.853
        """
        m = float(figures_per_mm2)
        r = self.recall if recall is None else float(recall)
        fp = self.fp_per_mm2 if fp_per_mm2 is None else float(fp_per_mm2)
        hits = r * m
        found = hits + self.duplicates_per_figure * m + fp
        precision = hits / found if found > 0 else 0.0
        total = precision + r
        return 2 * precision * r / total if total > 0 else 0.0

    def expected_f1_range(self, figures_per_mm2: float) -> tuple[float, float]:
        """The expected F1 with recall and FP/mm² both at the pessimistic, then both at the optimistic, end of
        their 95 % intervals: a deliberately wide range, what a small test set can vouch for.

        Examples:
            >>> e = TissueErrors(figures=100, tp=90, duplicates=1, tissue_fp=2, tissue_mm2=1.0)
            >>> [round(v, 3) for v in e.expected_f1_range(10)]
            [0.646, 0.955]
        """
        (r_low, r_high), (fp_low, fp_high) = self.recall_interval, self.fp_per_mm2_interval
        return (
            self.expected_f1(figures_per_mm2, recall=r_low, fp_per_mm2=fp_high),
            self.expected_f1(figures_per_mm2, recall=r_high, fp_per_mm2=fp_low),
        )

    def to_dict(self, densities: Sequence[float] = (5.0, 10.0)) -> dict[str, float]:
        """Counts, rates with their 95 % intervals (``<name>_low``, ``<name>_high``) and the expected F1 at each
        density (``expected_f1_at_<d>``, with :meth:`expected_f1_range`), JSON-ready."""
        (r_low, r_high), (fp_low, fp_high) = self.recall_interval, self.fp_per_mm2_interval
        out: dict[str, float] = {
            **dataclasses.asdict(self),
            "recall": self.recall,
            "recall_low": r_low,
            "recall_high": r_high,
            "duplicates_per_figure": self.duplicates_per_figure,
            "fp_per_mm2": self.fp_per_mm2,
            "fp_per_mm2_low": fp_low,
            "fp_per_mm2_high": fp_high,
        }
        for d in densities:
            low, high = self.expected_f1_range(d)
            out[f"expected_f1_at_{d:g}"] = self.expected_f1(d)
            out[f"expected_f1_at_{d:g}_low"] = low
            out[f"expected_f1_at_{d:g}_high"] = high
        return out


def tissue_errors(
    per_image: PerImage,
    *,
    areas_mm2: Mapping[str, float],
    mpp: MppArg = 0.25,
    threshold: float | None = None,
    radius_um: float = MIDOG_RADIUS_UM,
    duplicate_radius_um: float = DUPLICATE_RADIUS_UM,
) -> TissueErrors:
    """Pool the errors of ``per_image`` (as for :func:`midog_f1`) by kind: see :class:`TissueErrors`.

    Args:
        per_image: ``{image: (predictions, ground_truth)}``.
        areas_mm2: tissue area of each image in mm² (the whole image for mosaics of tissue patches).
        mpp: microns per pixel of the coordinates (one value or one per image).
        threshold: drop predictions with ``score < threshold`` first.
        radius_um: hit radius (MIDOG: 7.5 µm).
        duplicate_radius_um: unmatched detections within this distance of a target are duplicates.

    Examples:
        >>> gt = pd.DataFrame({"x": [0.0], "y": [0.0]})
        >>> pred = pd.DataFrame({"x": [1.0, 40.0, 400.0], "y": [0.0, 0.0, 0.0]})
        >>> e = tissue_errors({"a": (pred, gt)}, areas_mm2={"a": 0.5})
        >>> e.tp, e.duplicates, e.tissue_fp, e.fp_per_mm2
        (1, 1, 1, 2.0)
    """
    from scipy.spatial import cKDTree

    images = _prepare(per_image, radius_um=radius_um, mpp=mpp, respect_labels=True)
    figures = tp = duplicates = tissue_fp = 0
    area = 0.0
    for im in images:
        if im.name not in areas_mm2:
            raise ValueError(f"no tissue area given for image {im.name!r}")
        area += float(areas_mm2[im.name])
        pred = im.pred if threshold is None else im.pred[im.scores >= threshold]
        gt_hit, pred_hit = match_points(im.gt, pred, radius=im.radius)
        figures += len(gt_hit)
        tp += int(gt_hit.sum())
        unmatched = pred[~pred_hit]
        if len(unmatched) and len(im.gt):
            dup_radius = im.radius * duplicate_radius_um / radius_um
            near = np.isfinite(cKDTree(im.gt).query(unmatched, distance_upper_bound=dup_radius)[0])
        else:
            near = np.zeros(len(unmatched), dtype=bool)
        duplicates += int(near.sum())
        tissue_fp += int((~near).sum())
    return TissueErrors(figures, tp, duplicates, tissue_fp, area)
