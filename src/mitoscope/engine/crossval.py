"""Cross-validation: folds from a recipe, the fold loop (resumable per fold), OOF predictions, thresholds.

The fold loop (:func:`run_folds`, shared with the detector's leave-one-tumour-out) does not know how a fold is
trained: it calls ``train_fold(fold, fold_dir)``. For a classifier (:func:`run_crossval`) that must leave
``fold_dir/predictions.csv`` (``row, fold, part, target, p_atypical, threshold`` + record columns; ``part`` is
``val`` or ``test``) and then ``fold_dir/metrics.json`` (written last: its presence marks the fold finished).
:func:`run_crossval` skips finished folds, then pools the out-of-fold predictions (each fold's ``test`` part,
or its ``val`` part when it has no test part) into ``oof_predictions.csv`` and writes ``cv_summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.data.splits import leave_one_domain_out, stratified_group_kfold
from mitoscope.metrics.classification import classification_report
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable

logger = logging.getLogger(__name__)

FOLD_METRICS = "metrics.json"
FOLD_PREDICTIONS = "predictions.csv"
OOF_FILE = "oof_predictions.csv"
SUMMARY_FILE = "cv_summary.json"


@dataclasses.dataclass
class Fold:
    """One split: positional indices into the catalog (``test`` may be empty)."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    name: str = ""

    @property
    def dirname(self) -> str:
        """``fold_<index>``."""
        return f"fold_{self.index}"


# --------------------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------------------


def _scores(metric: str, y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``metric`` of the predictions ``p >= t`` for every ``t`` in ``thresholds`` (NaN where undefined), from
    cumulative counts over the sorted probabilities: O(n log n) for all thresholds together."""
    sorted_probs = np.sort(p)
    pos_sorted = np.sort(p[y == 1])
    n_pos, n_neg = len(pos_sorted), len(sorted_probs) - len(pos_sorted)
    # predicted positive = p >= t: count of values at or above t
    predicted = len(sorted_probs) - np.searchsorted(sorted_probs, thresholds, side="left")
    tp = (n_pos - np.searchsorted(pos_sorted, thresholds, side="left")).astype(np.float64)
    fp = predicted - tp
    fn, tn = n_pos - tp, n_neg - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens, spec = tp / n_pos, tn / n_neg
        if metric == "balanced_accuracy":
            return (sens + spec) / 2.0
        if metric == "f1":
            return 2 * tp / (2 * tp + fp + fn)
        if metric == "youden":
            return sens + spec - 1.0
        if metric == "equal_error":
            return -np.abs(sens - spec)
    raise ValueError(f"unknown threshold metric {metric!r}; use balanced_accuracy, f1, youden or equal_error")


def choose_threshold(
    labels: Sequence[float] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    metric: str = "balanced_accuracy",
) -> float:
    """The decision threshold on P(atypical) that maximises ``metric`` on ``(labels, probs)``.

    Predictions are ``prob >= threshold``. Candidates are the midpoints between consecutive distinct
    probabilities (plus 0.5); among equally good thresholds the one closest to 0.5 wins, so the choice is
    stable. Without both classes the answer is 0.5.

    Args:
        labels: 0/1 ground truth.
        probs: P(atypical).
        metric: ``"balanced_accuracy"``, ``"f1"``, ``"youden"`` or ``"equal_error"`` (sensitivity closest to
            specificity: the crossing of two monotone curves, steadier than the arg-max of a flat one).

    Examples:
        >>> round(choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.9]), 6)
        0.325
        >>> y, p = [0, 0, 0, 0, 1, 1, 1, 1], [0.1, 0.2, 0.3, 0.45, 0.4, 0.7, 0.8, 0.9]
        >>> [round(choose_threshold(y, p, m), 6) for m in ("balanced_accuracy", "equal_error")]
        [0.5, 0.425]
        >>> choose_threshold([1, 1], [0.2, 0.9])  # one class only: nothing to choose
        0.5
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and probs must be 1-D of equal length, got {y.shape} and {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or infinity")
    if len(np.unique(y)) < 2:
        return 0.5
    values = np.unique(p)
    candidates = np.unique(
        np.concatenate([(values[:-1] + values[1:]) / 2.0, [0.5], values[:1], values[-1:] + 1e-9])
    )
    scores = _scores(metric, y, p, candidates)
    if np.isnan(scores).all():
        return 0.5
    best = candidates[scores >= np.nanmax(scores) - 1e-12]
    return float(best[np.argmin(np.abs(best - 0.5))])


# --------------------------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------------------------


def _labelled(catalog: pd.DataFrame) -> np.ndarray:
    return np.flatnonzero(catalog["target"].to_numpy() >= 0)


def _group_kfold(
    y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise InputError(f"{n_splits} folds need at least {n_splits} groups, the catalog has {n_groups}")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(np.zeros(len(y)), y, groups)]


def make_folds(
    catalog: pd.DataFrame,
    *,
    scheme: str = "group_kfold",
    n_splits: int = 5,
    domain_column: str = "domain",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> list[Fold]:
    """Cross-validation folds over the labelled rows of ``catalog`` (positional indices into ``catalog``).

    ``group_kfold`` / ``label_hardness_kfold``: :func:`mitoscope.data.splits.stratified_group_kfold` (stratified
    by label, or label × hardness; fold k tests on part k, validates on part k + 1, trains on the rest);
    ``lodo``: :func:`mitoscope.data.splits.leave_one_domain_out` over ``domain_column`` (each domain tested
    once, the next one validates); ``holdout``: one stratified group split with about ``val_fraction`` of the
    data for validation and no test part; ``split``: the split a ``split`` column gives each row (``train``,
    ``val``; ``test`` and other rows are left out), for a split fixed elsewhere; ``group_kfold_val``: stratified group k-fold without a test part (fold
    k validates on part k and trains on the other k − 1; fold 0 is the ``holdout`` split when
    ``n_splits = 1 / val_fraction``) — the fold models of an ensemble each trained on (k − 1)/k of the data, whose
    out-of-fold predictions are optimistic because validation also chose the epoch and threshold.
    Rows of one ``group`` never straddle parts.

    A fold's model is early-stopped and thresholded on ``val``; its predictions on ``test`` (or on ``val`` when
    there is no test part) are the out-of-fold predictions.

    Raises:
        InputError: too few groups or domains for the scheme, no labelled rows, an empty part.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog([{"image": f"{i}.png", "slide": f"s{i % 6}", "label": ["normal", "atypical"][i % 2]}
        ...                     for i in range(24)])
        >>> folds = make_folds(cat, scheme="group_kfold", n_splits=3)
        >>> len(folds), sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(24))
        (3, True)
    """
    labelled = _labelled(catalog)
    if len(labelled) == 0:
        raise InputError("the catalog has no labelled rows (target 0/1)")
    sub = catalog.iloc[labelled].reset_index(drop=True)
    y = sub["target"].to_numpy(dtype=np.int64)
    groups = sub["group"].astype(str).to_numpy()
    folds: list[Fold] = []

    def add(k: int, train: Any, val: Any, test: Any = (), name: str = "") -> None:
        parts = [labelled[np.asarray(a, dtype=np.int64)] for a in (train, val, test)]
        folds.append(Fold(k, parts[0], parts[1], parts[2], name=name))

    try:
        if scheme in ("group_kfold", "label_hardness_kfold"):
            stratify = "label" if scheme == "group_kfold" else "label_hardness"
            raw = stratified_group_kfold(sub, n_splits=n_splits, stratify=stratify, seed=seed)
            for k, f in enumerate(raw):
                add(k, f.train, f.val, f.test, f.name)
        elif scheme == "lodo":
            for k, f in enumerate(leave_one_domain_out(sub, domain_column=domain_column, seed=seed)):
                add(k, f.train, f.val, f.test, f.name)
        elif scheme == "group_kfold_val":
            for k, (tr, va) in enumerate(_group_kfold(y, groups, n_splits, seed)):
                add(k, tr, va, name=f"fold{k}")
        elif scheme == "split":
            if "split" not in sub.columns:
                raise InputError("cv.scheme 'split' needs a 'split' column (train / val) in the catalog")
            part = sub["split"].astype(str).str.lower().to_numpy()
            add(0, np.flatnonzero(part == "train"), np.flatnonzero(part == "val"), name="split")
        elif scheme == "holdout":
            if not 0.0 < val_fraction < 1.0:
                raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
            k = max(2, round(1.0 / val_fraction))
            tr, va = _group_kfold(y, groups, k, seed)[0]
            add(0, tr, va, name="holdout")
        else:
            raise InputError(f"unknown cross-validation scheme {scheme!r}")
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(f"cannot make {scheme} folds: {exc}") from exc
    for fold in folds:
        if len(fold.train) == 0 or len(fold.val) == 0:
            raise InputError(
                f"{_fold_label(fold)} has an empty train or validation set ({_describe_parts(catalog, fold)})"
            )
    return folds


def class_counts(catalog: pd.DataFrame, rows: np.ndarray | Sequence[int]) -> dict[str, int]:
    """``{"normal": n, "atypical": m}`` over the rows (positions) of ``catalog`` (target 0 / 1).

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog([{"image": "a", "label": "normal"}, {"image": "b", "label": "atypical"}])
        >>> class_counts(cat, [0, 1, 1])
        {'normal': 1, 'atypical': 2}
    """
    target = catalog["target"].to_numpy()[np.asarray(rows, dtype=np.int64)]
    return {"normal": int((target == 0).sum()), "atypical": int((target == 1).sum())}


def _fold_label(fold: Fold) -> str:
    return f"fold {fold.index} ({fold.name})" if fold.name else f"fold {fold.index}"


def _counts_text(counts: dict[str, int]) -> str:
    return f"{counts['normal']} normal / {counts['atypical']} atypical"


def _describe_parts(catalog: pd.DataFrame, fold: Fold) -> str:
    parts = ("train", "val", "test") if len(fold.test) else ("train", "val")
    return ", ".join(f"{part}: {_counts_text(class_counts(catalog, getattr(fold, part)))}" for part in parts)


def check_fold_classes(catalog: pd.DataFrame, folds: Sequence[Fold]) -> None:
    """Stop before training when a fold's train or validation part is empty or holds a single class.

    A classifier trained on one class learns nothing, and a validation part with one class cannot choose a
    threshold or early-stop on balanced accuracy/AUROC. Every offending fold is named in one message.

    Raises:
        InputError: naming each bad fold and the normal/atypical counts of its parts.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog([{"image": str(i), "label": ["normal", "atypical"][i % 2]} for i in range(4)])
        >>> check_fold_classes(cat, [Fold(0, np.array([0, 1]), np.array([2, 3]))])  # both classes: fine
        >>> check_fold_classes(cat, [Fold(1, np.array([0, 2]), np.array([1, 3]))])
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: fold 1: train has 2 normal / 0 atypical, val has 0 normal / 2 atypical; the train and validation parts of every fold need both classes (check the labels, or use another cv.scheme, cv.n_splits or seed)
    """
    problems = []
    for fold in folds:
        counts = {part: class_counts(catalog, getattr(fold, part)) for part in ("train", "val")}
        bad = [f"{part} has {_counts_text(c)}" for part, c in counts.items() if min(c.values()) == 0]
        if bad:
            problems.append(f"{_fold_label(fold)}: {', '.join(bad)}")
    if problems:
        raise InputError(
            "; ".join(problems) + "; the train and validation parts of every fold need both classes "
            "(check the labels, or use another cv.scheme, cv.n_splits or seed)"
        )


# --------------------------------------------------------------------------------------------------------------
# The fold loop
# --------------------------------------------------------------------------------------------------------------


def fold_finished(fold_dir: str | os.PathLike[str]) -> bool:
    """True when ``fold_dir`` holds the files a finished fold leaves."""
    d = Path(fold_dir)
    return (d / FOLD_METRICS).is_file() and (d / FOLD_PREDICTIONS).is_file()


def run_folds(
    folds: Sequence[Fold],
    train_fold: Callable[[Fold, Path], Any],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    fold_dir: Callable[[Fold], str] = lambda fold: fold.dirname,
    finished: Callable[[Path], bool] = fold_finished,
) -> tuple[list[int], list[int]]:
    """The fold loop of every task: train each fold not yet ``finished``; ``(trained, skipped)`` fold indices.

    Args:
        folds: the folds to run.
        train_fold: ``(fold, fold_dir) -> anything``; must leave what ``finished`` looks for.
        out_dir: run directory; a fold lives in ``out_dir / fold_dir(fold)`` (``fold_<index>`` by default).
        resume: skip finished folds (with ``False`` every fold is retrained).
        fold_dir: the folder name of a fold.
        finished: whether a fold folder holds a finished fold (default :func:`fold_finished`).

    Raises:
        RuntimeError: ``train_fold`` returned without finishing its fold.

    Examples:
        >>> import tempfile
        >>> def train(fold, d):
        ...     d.mkdir(parents=True); (d / "done").touch()
        >>> folds = [Fold(0, np.array([1]), np.array([0]), name="a"), Fold(1, np.array([0]), np.array([1]), name="b")]
        >>> run_folds(folds, train, tempfile.mkdtemp(), fold_dir=lambda f: f.name, finished=lambda d: (d / "done").is_file())
        ([0, 1], [])
    """
    out = Path(out_dir)
    trained, skipped = [], []
    for fold in folds:
        where = out / fold_dir(fold)
        if resume and finished(where):
            logger.info("fold %d already finished: skipped", fold.index)
            skipped.append(fold.index)
            continue
        logger.info("fold %d%s: %d train, %d validation", fold.index, f" ({fold.name})" if fold.name else "",
                    len(fold.train), len(fold.val))  # fmt: skip
        train_fold(fold, where)
        if not finished(where):
            raise RuntimeError(f"the fold left no finished outputs in {where}")
        trained.append(fold.index)
    return trained, skipped


def run_crossval(
    folds: Sequence[Fold],
    train_fold: Callable[[Fold, Path], Any],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    threshold_metric: str = "balanced_accuracy",
    write: bool = True,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train every fold not yet finished, then pool out-of-fold predictions and summarise.

    Args:
        folds: the folds to run (e.g. from :func:`make_folds`, possibly a subset).
        train_fold: ``(fold, fold_dir) -> anything``; must write ``predictions.csv`` and ``metrics.json``.
        out_dir: run directory; fold ``k`` lives in ``out_dir/fold_k``.
        resume: skip folds whose outputs exist (with ``False`` every fold is retrained).
        threshold_metric: metric of the pooled OOF threshold.
        write: write ``oof_predictions.csv`` and ``cv_summary.json`` (False on ranks other than 0).
        extra_summary: more items for ``cv_summary.json``.

    Returns:
        The summary dict (also written to ``cv_summary.json``).

    Examples:
        >>> import tempfile
        >>> def train_fold(fold, d):
        ...     d.mkdir(parents=True, exist_ok=True)
        ...     pd.DataFrame({"row": fold.val, "fold": fold.index, "target": [0, 1],
        ...                   "p_atypical": [0.2, 0.7], "threshold": 0.5}).to_csv(d / FOLD_PREDICTIONS)
        ...     (d / FOLD_METRICS).write_text('{"balanced_accuracy": 1.0}')
        >>> folds = [Fold(0, np.array([2, 3]), np.array([0, 1])), Fold(1, np.array([0, 1]), np.array([2, 3]))]
        >>> s = run_crossval(folds, train_fold, tempfile.mkdtemp())
        >>> s["oof"]["balanced_accuracy"], s["folds_finished"]
        (1.0, [0, 1])
    """
    out = Path(out_dir)
    trained, skipped = run_folds(folds, train_fold, out, resume=resume)

    # pool every finished fold in the directory (also ones run by an earlier call with other --folds)
    fold_dirs = sorted(
        (d for d in out.glob("fold_*") if d.is_dir() and fold_finished(d)),
        key=lambda d: int(d.name.split("_")[1]),
    )
    per_fold: dict[str, Any] = {}
    frames = []
    for d in fold_dirs:
        per_fold[d.name] = json.loads((d / FOLD_METRICS).read_text(encoding="utf-8"))
        frames.append(out_of_fold(pd.read_csv(d / FOLD_PREDICTIONS)))
    oof = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary: dict[str, Any] = {
        "folds_finished": [int(d.name.split("_")[1]) for d in fold_dirs],
        "folds_trained_now": trained,
        "folds_skipped": skipped,
        "folds": per_fold,
    }
    if len(oof):
        y, p = oof["target"].to_numpy(), oof["p_atypical"].to_numpy()
        per_fold_thr = oof["threshold"].to_numpy() if "threshold" in oof else np.full(len(oof), 0.5)
        # each prediction against its own fold's threshold: what the fold models do
        report = classification_report(
            y, p, preds=(p >= per_fold_thr).astype(np.int64), threshold=float("nan")
        )
        report.pop("threshold", None)
        summary["oof"] = report
        pooled_t = choose_threshold(y, p, threshold_metric)
        summary["oof_pooled_threshold"] = pooled_t
        summary["oof_at_pooled_threshold"] = classification_report(y, p, threshold=pooled_t)
        keys = ("balanced_accuracy", "auroc", "sensitivity", "specificity", "f1")
        summary["fold_mean"] = {k: _nanstat(np.mean, per_fold.values(), k) for k in keys}
        summary["fold_std"] = {k: _nanstat(np.std, per_fold.values(), k) for k in keys}
    if extra_summary:
        summary.update(extra_summary)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / OOF_FILE, oof.to_csv(index=False))
        write_text_atomic(out / SUMMARY_FILE, json.dumps(to_jsonable(summary), indent=2))
    return summary


def out_of_fold(predictions: pd.DataFrame) -> pd.DataFrame:
    """The out-of-fold rows of one fold's predictions: its ``test`` part, else its ``val`` part.

    Examples:
        >>> out_of_fold(pd.DataFrame({"part": ["val", "test"], "p_atypical": [0.1, 0.9]}))["p_atypical"].tolist()
        [0.9]
    """
    if "part" not in predictions:
        return predictions
    test = predictions[predictions["part"] == "test"]
    return (test if len(test) else predictions[predictions["part"] == "val"]).reset_index(drop=True)


def _nanstat(fn: Callable[[np.ndarray], Any], reports: Any, key: str) -> float:
    values = np.array([_as_float(r.get(key)) for r in reports], dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(fn(values)) if len(values) else math.nan


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
