"""Classification metrics for atypical vs normal mitotic figures.

Every function takes ground-truth ``labels`` (``1``/``0`` integers, booleans or the label names
``"atypical"``/``"normal"``) and either hard predictions (``preds``, 0/1) or scores (``probs``,
P(atypical) in ``[0, 1]``). Positive class = atypical. The headline metric of MIDOG 2025 Track 2 is the
balanced accuracy; AUROC is reported beside it because it does not depend on the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ArrayLike = Sequence[Any] | np.ndarray

_NAMES = {"atypical": 1, "normal": 0, "mitotic figure": 1, "hard negative": 0}


def to_targets(labels: ArrayLike) -> np.ndarray:
    """Convert labels (0/1, booleans, or ``"atypical"``/``"normal"`` names) to an int array of 0/1.

    Raises:
        ValueError: for unknown names, unlabelled rows (``-1``) or other values.

    Examples:
        >>> to_targets(["atypical", "normal", 1, 0]).tolist()
        [1, 0, 1, 0]
    """
    out = np.empty(len(labels), dtype=np.int64)
    for i, value in enumerate(labels):
        if isinstance(value, str):
            key = value.strip().lower()
            if key not in _NAMES:
                raise ValueError(f"label {value!r} at position {i} is not one of {sorted(_NAMES)}")
            out[i] = _NAMES[key]
        else:
            num = int(value)
            if num not in (0, 1) or float(value) != num:
                raise ValueError(f"label {value!r} at position {i} is not 0 or 1")
            out[i] = num
    return out


def _pair(labels: ArrayLike, values: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = to_targets(labels)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(y) != len(v):
        raise ValueError(f"{len(y)} labels but {len(v)} {what}")
    if np.isnan(v).any():
        raise ValueError(f"{what} contain NaN")
    return y, v


def _hard(labels: ArrayLike, preds: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, p = _pair(labels, preds, "predictions")
    if not np.isin(p, (0.0, 1.0)).all():
        raise ValueError("predictions must be 0/1; threshold probabilities first")
    return y, p.astype(np.int64)


def confusion(labels: ArrayLike, preds: ArrayLike) -> dict[str, int]:
    """Counts of true/false positives/negatives (positive = atypical).

    Examples:
        >>> confusion([1, 1, 0, 0], [1, 0, 0, 1])
        {'tp': 1, 'fn': 1, 'tn': 1, 'fp': 1}
    """
    y, p = _hard(labels, preds)
    return {
        "tp": int(((y == 1) & (p == 1)).sum()),
        "fn": int(((y == 1) & (p == 0)).sum()),
        "tn": int(((y == 0) & (p == 0)).sum()),
        "fp": int(((y == 0) & (p == 1)).sum()),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def sensitivity(labels: ArrayLike, preds: ArrayLike) -> float:
    """Recall of the atypical class, TP / (TP + FN); NaN without atypical labels.

    Examples:
        >>> sensitivity([1, 1, 1, 0], [1, 1, 0, 0])
        0.6666666666666666
    """
    c = confusion(labels, preds)
    return _ratio(c["tp"], c["tp"] + c["fn"])


def specificity(labels: ArrayLike, preds: ArrayLike) -> float:
    """Recall of the normal class, TN / (TN + FP); NaN without normal labels.

    Examples:
        >>> specificity([1, 0, 0, 0, 0], [1, 0, 0, 0, 1])
        0.75
    """
    c = confusion(labels, preds)
    return _ratio(c["tn"], c["tn"] + c["fp"])


def balanced_accuracy(labels: ArrayLike, preds: ArrayLike) -> float:
    """Mean of sensitivity and specificity (the MIDOG 2025 Track 2 metric).

    With only one class present it is that class's recall (as scikit-learn computes it).

    Examples:
        >>> balanced_accuracy([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1])
        0.625
    """
    sens, spec = sensitivity(labels, preds), specificity(labels, preds)
    known = [v for v in (sens, spec) if not math.isnan(v)]
    return float(np.mean(known)) if known else math.nan


def f1(labels: ArrayLike, preds: ArrayLike) -> float:
    """F1 score of the atypical class, 2TP / (2TP + FP + FN); NaN when there is nothing to score.

    Examples:
        >>> f1([1, 1, 0, 0], [1, 0, 1, 0])
        0.5
    """
    c = confusion(labels, preds)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])


def _auroc_arrays(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)  # average ranks for ties: Mann-Whitney U with ties counted as one half
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(labels: ArrayLike, probs: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney form, ties count one half); NaN with a single class.

    Examples:
        >>> auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y, s = _pair(labels, probs, "probabilities")
    return _auroc_arrays(y, s)


def threshold_probs(probs: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """0/1 predictions: 1 where ``prob >= threshold``.

    Examples:
        >>> threshold_probs([0.2, 0.5, 0.9]).tolist()
        [0, 1, 1]
    """
    return (np.asarray(probs, dtype=np.float64) >= threshold).astype(np.int64)


MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _named_metric(name: str, threshold: float) -> MetricFn:
    hard = {
        "balanced_accuracy": balanced_accuracy,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": f1,
    }
    if name == "auroc":
        return _auroc_arrays
    if name in hard:
        fn = hard[name]
        return lambda y, p: fn(y, threshold_probs(p, threshold))
    raise ValueError(f"unknown metric {name!r}; expected 'auroc' or one of {sorted(hard)}")


def bootstrap_ci(
    labels: ArrayLike,
    probs: ArrayLike,
    metric: str | MetricFn,
    n: int = 1000,
    seed: int = 0,
    *,
    threshold: float = 0.5,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric`` (cases resampled with replacement).

    Args:
        labels: ground truth (0/1 or names).
        probs: P(atypical) per case.
        metric: ``"balanced_accuracy"``, ``"auroc"``, ``"sensitivity"``, ``"specificity"``, ``"f1"``, or a
            callable ``f(targets, probs) -> float``.
        n: number of bootstrap resamples.
        seed: random seed (the interval is reproducible).
        threshold: threshold for the metrics that need hard predictions.
        level: coverage of the interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no resample gives a finite value.

    Examples:
        >>> lo, hi = bootstrap_ci([0, 1] * 50, [0.2, 0.7] * 50, "auroc", n=100)
        >>> (lo, hi)
        (1.0, 1.0)
    """
    y, s = _pair(labels, probs, "probabilities")
    fn = _named_metric(metric, threshold) if isinstance(metric, str) else metric
    if len(y) == 0 or n <= 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        value = fn(y[idx], s[idx])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def _summary(
    y: np.ndarray, s: np.ndarray, pred: np.ndarray, threshold: float, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    counts = confusion(y, pred)
    out: dict[str, Any] = {
        "n": len(y),
        "n_atypical": int(y.sum()),
        "n_normal": int(len(y) - y.sum()),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "auroc": _auroc_arrays(y, s),
        "sensitivity": sensitivity(y, pred),
        "specificity": specificity(y, pred),
        "f1": f1(y, pred),
        "accuracy": _ratio(counts["tp"] + counts["tn"], len(y)),
        **counts,
    }
    if n_bootstrap > 0:
        # the hard predictions are resampled as "probabilities" 0/1 thresholded at 0.5
        ba = bootstrap_ci(y, pred.astype(np.float64), "balanced_accuracy", n_bootstrap, seed, threshold=0.5)
        out["balanced_accuracy_ci"] = list(ba)
        out["auroc_ci"] = list(bootstrap_ci(y, s, "auroc", n_bootstrap, seed))
    return out


def classification_report(
    labels: ArrayLike,
    probs: ArrayLike,
    *,
    threshold: float = 0.5,
    groups: ArrayLike | None = None,
    preds: ArrayLike | None = None,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """All classification metrics at once, overall and (optionally) per group.

    Args:
        labels: ground truth (0/1 or ``"atypical"``/``"normal"``).
        probs: P(atypical) per case.
        threshold: predictions are ``prob >= threshold``.
        groups: optional group per case (e.g. the domain); adds a ``"groups"`` breakdown.
        preds: optional hard 0/1 predictions (e.g. an ensemble's majority vote) used instead of
            ``probs >= threshold`` for the threshold-dependent metrics.
        n_bootstrap: when > 0, add ``balanced_accuracy_ci`` and ``auroc_ci`` (95 % percentile bootstrap).
        seed: bootstrap seed.

    Returns:
        ``{"threshold", "n", "n_atypical", "n_normal", "balanced_accuracy", "auroc", "sensitivity",
        "specificity", "f1", "accuracy", "tp", "fn", "tn", "fp"[, "..._ci"][, "groups": {name: {...}}]}``.
        Undefined values (e.g. AUROC with one class) are NaN.

    Examples:
        >>> r = classification_report([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6], groups=["a", "a", "b", "b"])
        >>> r["balanced_accuracy"], r["groups"]["a"]["balanced_accuracy"]
        (0.5, 1.0)
    """
    y, s = _pair(labels, probs, "probabilities")
    if preds is None:
        pred = threshold_probs(s, threshold)
    else:
        _, pred = _hard(y, preds)
    report: dict[str, Any] = {"threshold": float(threshold)}
    report.update(_summary(y, s, pred, threshold, n_bootstrap, seed))
    if groups is not None:
        g = np.asarray([str(v) for v in groups], dtype=object)
        if len(g) != len(y):
            raise ValueError(f"{len(y)} labels but {len(g)} groups")
        report["groups"] = {
            name: _summary(y[g == name], s[g == name], pred[g == name], threshold, n_bootstrap, seed)
            for name in sorted(set(g.tolist()))
        }
    return report


def _norm_key(value: Any) -> str:
    return str(value).replace("\\", "/").strip()


def join_predictions(predictions: Any, truth: Any, *, file_column: str = "file") -> Any:
    """Join a predictions table (``file[, page], p_atypical[, label]``) to a truth catalog by file.

    Files match by their full path first (resolved, as written in the catalog), else by their
    trailing path components (e.g. ``Normal/12.png`` or ``12.png``) when that is unambiguous in the truth.
    Truth rows without a label (``target == -1``) are dropped.

    Args:
        predictions: DataFrame with ``file_column`` and ``p_atypical`` (optionally ``page``, ``label``).
        truth: a mitoscope catalog (``image``, ``page``, ``target`` and the domain columns).
        file_column: the file column of ``predictions``.

    Returns:
        ``(joined, unmatched)``: the truth rows that have a prediction with columns ``p_atypical``,
        ``pred_label`` (if ``label`` was given) and ``pred_threshold`` (if ``threshold`` was) added, and the
        prediction rows that matched nothing.

    Examples:
        >>> import pandas as pd
        >>> pred = pd.DataFrame({"file": ["/x/Normal/1.png", "/x/Atypical/2.png"], "p_atypical": [0.2, 0.9]})
        >>> truth = pd.DataFrame({"image": ["/data/Normal/1.png", "/data/Atypical/2.png"], "page": [-1, -1],
        ...                       "target": [0, 1]})
        >>> joined, unmatched = join_predictions(pred, truth)
        >>> joined["p_atypical"].tolist(), len(unmatched)
        ([0.2, 0.9], 0)
    """
    import pandas as pd

    if file_column not in predictions.columns or "p_atypical" not in predictions.columns:
        raise ValueError(
            f"predictions need columns '{file_column}' and 'p_atypical' (have {list(predictions.columns)})"
        )
    truth = truth[truth["target"].astype(int) >= 0].copy()
    truth_keys = [_norm_key(v) for v in truth["image"]]
    truth_pages = truth["page"].astype(int).tolist() if "page" in truth else [-1] * len(truth)
    pred_pages = (
        predictions["page"].astype(int).tolist() if "page" in predictions else [-1] * len(predictions)
    )

    # index of the truth by every path suffix (1, 2, ... components); ambiguous suffixes map to None
    by_suffix: dict[tuple[str, int], int | None] = {}
    exact: dict[tuple[str, int], int] = {}
    for pos, (key, page) in enumerate(zip(truth_keys, truth_pages, strict=True)):
        if (key, page) in exact:
            raise ValueError(f"the truth lists {truth['image'].iloc[pos]} more than once")
        exact[(key, page)] = pos
        parts = key.split("/")
        for k in range(1, len(parts) + 1):
            suffix = ("/".join(parts[-k:]), page)
            by_suffix[suffix] = None if suffix in by_suffix and by_suffix[suffix] != pos else pos

    matched_truth: list[int] = []
    matched_pred: list[int] = []
    unmatched: list[int] = []
    for i, (value, page) in enumerate(zip(predictions[file_column], pred_pages, strict=True)):
        key = _norm_key(value)
        hit = exact.get((key, page))
        if hit is None:
            parts = key.split("/")
            for k in range(len(parts), 0, -1):
                cand = by_suffix.get(("/".join(parts[-k:]), page))
                if cand is not None:
                    hit = cand
                    break
        if hit is None:
            unmatched.append(i)
        else:
            matched_truth.append(hit)
            matched_pred.append(i)
    joined = truth.iloc[matched_truth].copy()
    joined["p_atypical"] = predictions["p_atypical"].to_numpy(dtype=float)[matched_pred]
    if "label" in predictions.columns:
        joined["pred_label"] = predictions["label"].to_numpy()[matched_pred]
    if "threshold" in predictions.columns:  # per-row thresholds, e.g. each fold's in oof_predictions.csv
        joined["pred_threshold"] = predictions["threshold"].to_numpy(dtype=float)[matched_pred]
    joined = joined.reset_index(drop=True)
    if joined.duplicated(subset=["image", "page"] if "page" in joined else ["image"]).any():
        raise ValueError("several predictions match the same truth record")
    return joined, predictions.iloc[unmatched].copy() if unmatched else pd.DataFrame(
        columns=predictions.columns
    )
