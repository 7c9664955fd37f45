"""PNG figures of an atypical/normal evaluation drawn with PIL (no matplotlib): confusion matrix and ROC curve.

The numbers come from functions that can be tested without looking at pixels: :func:`roc_points` (the ROC
polyline from scikit-learn's ``roc_curve``) and :func:`confusion_counts`. The drawing functions return PIL
images; :func:`write_classification_plots` writes both PNGs atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mitoscope.metrics.classification import auroc, confusion, to_targets
from mitoscope.utils.atomic import atomic_path

CONFUSION_FILE = "confusion_matrix.png"
ROC_FILE = "roc_curve.png"
CLASS_NAMES = ("normal", "atypical")


def roc_points(labels: Sequence[Any] | np.ndarray, probs: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """The ROC polyline (false/true positive rates, from ``sklearn.metrics.roc_curve``) and its AUROC.

    Positive class = atypical. The polyline starts at (0, 0) and ends at (1, 1).

    Args:
        labels: ground truth (0/1 or ``"normal"``/``"atypical"``).
        probs: P(atypical).

    Returns:
        ``{"fpr": array, "tpr": array, "thresholds": array, "auroc": float}``.

    Raises:
        ValueError: when only one class is present (no ROC curve exists) or the lengths differ.

    Examples:
        >>> r = roc_points([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
        >>> r["auroc"], (0.0, 1.0) in zip(r["fpr"].tolist(), r["tpr"].tolist())
        (1.0, True)
    """
    from sklearn.metrics import roc_curve

    y = to_targets(labels)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"a ROC curve needs both classes; got {int(y.sum())} atypical and {int((y == 0).sum())} normal"
        )
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auroc": auroc(y, p)}


def confusion_counts(labels: Sequence[Any] | np.ndarray, preds: Sequence[Any] | np.ndarray) -> np.ndarray:
    """2 x 2 counts, rows = truth (normal, atypical), columns = prediction (normal, atypical).

    Examples:
        >>> confusion_counts([1, 1, 0, 0, 0], [1, 0, 0, 0, 1]).tolist()
        [[2, 1], [1, 1]]
    """
    c = confusion(labels, preds)
    return np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=np.int64)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1 without sized default fonts
        return ImageFont.load_default()


def _centered(draw: Any, xy: tuple[float, float], text: str, font: Any, fill: Any) -> None:
    draw.text(xy, text, font=font, fill=fill, anchor="mm")


def _canvas(size: int, small_pt: int) -> tuple[Any, Any, float, Any, Any]:
    """A white ``size`` x ``size`` image, its drawer, the scale against the 400 px layout, and big/small fonts."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    s = size / 400.0
    return img, ImageDraw.Draw(img), s, _font(max(8, round(18 * s))), _font(max(7, round(small_pt * s)))


def confusion_matrix_image(
    labels: Sequence[Any] | np.ndarray,
    preds: Sequence[Any] | np.ndarray,
    *,
    size: int = 400,
    title: str | None = None,
) -> Any:
    """A ``size`` x ``size`` PIL image of the 2 x 2 confusion matrix (counts and row percentages).

    Examples:
        >>> confusion_matrix_image([1, 0, 0], [1, 0, 1], size=200).size
        (200, 200)
    """
    counts = confusion_counts(labels, preds)
    img, draw, s, big, small = _canvas(size, 13)
    left, top, cell = 90 * s, 70 * s, 140 * s
    _centered(draw, (size / 2, 20 * s), title or "Confusion matrix", big, "black")
    _centered(draw, (left + cell, top - 30 * s), "predicted", small, "black")
    for j, name in enumerate(CLASS_NAMES):
        _centered(draw, (left + cell * (j + 0.5), top - 12 * s), name, small, "black")
        _centered(draw, (left - 40 * s, top + cell * (j + 0.5)), name, small, "black")
    _centered(draw, (left - 40 * s, top - 12 * s), "truth", small, "black")
    for i in range(2):
        row_total = int(counts[i].sum())
        for j in range(2):
            frac = counts[i, j] / row_total if row_total else 0.0
            shade = round(255 - 180 * frac)
            box = (left + cell * j, top + cell * i, left + cell * (j + 1), top + cell * (i + 1))
            draw.rectangle(box, fill=(shade, shade, 255), outline="black")
            color = "white" if frac > 0.55 else "black"
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            _centered(draw, (cx, cy - 10 * s), str(int(counts[i, j])), big, color)
            pct = "–" if not row_total else f"{100 * frac:.1f}%"
            _centered(draw, (cx, cy + 14 * s), pct, small, color)
    return img


def roc_pixel_polyline(
    fpr: np.ndarray, tpr: np.ndarray, *, box: tuple[float, float, float, float]
) -> list[tuple[float, float]]:
    """Map ROC points into the plot ``box`` (left, top, right, bottom) in pixels; y grows downwards.

    Examples:
        >>> roc_pixel_polyline(np.array([0.0, 1.0]), np.array([1.0, 1.0]), box=(10, 10, 110, 110))
        [(10.0, 10.0), (110.0, 10.0)]
    """
    left, top, right, bottom = box
    return [
        (float(left + f * (right - left)), float(bottom - t * (bottom - top)))
        for f, t in zip(np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64), strict=True)
    ]


def roc_curve_image(
    labels: Sequence[Any] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    *,
    size: int = 400,
    title: str | None = None,
) -> Any:
    """A ``size`` x ``size`` PIL image of the ROC curve with the AUROC in the title.

    Raises:
        ValueError: with a single class (see :func:`roc_points`).

    Examples:
        >>> roc_curve_image([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9], size=240).size
        (240, 240)
    """
    from PIL import Image, ImageDraw

    roc = roc_points(labels, probs)
    img, draw, s, big, small = _canvas(size, 12)
    box = (60 * s, 45 * s, size - 20 * s, size - 50 * s)
    left, top, right, bottom = box
    auc = roc["auroc"]
    head = f"ROC, AUROC = {auc:.3f}" if not math.isnan(auc) else "ROC, AUROC = –"
    _centered(draw, (size / 2, 20 * s), f"{title}: {head}" if title else head, big, "black")
    for k in range(6):  # grid and ticks at 0, 0.2, ..., 1
        v = k / 5
        x, y = left + v * (right - left), bottom - v * (bottom - top)
        draw.line([(x, top), (x, bottom)], fill=(225, 225, 225))
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        _centered(draw, (x, bottom + 12 * s), f"{v:.1f}", small, "black")
        _centered(draw, (left - 20 * s, y), f"{v:.1f}", small, "black")
    draw.rectangle(box, outline="black")
    draw.line([(left, bottom), (right, top)], fill=(160, 160, 160), width=1)  # chance
    points = roc_pixel_polyline(roc["fpr"], roc["tpr"], box=box)
    draw.line(points, fill=(220, 40, 40), width=max(1, round(2.5 * s)), joint="curve")
    _centered(
        draw, ((left + right) / 2, bottom + 32 * s), "false positive rate (1 - specificity)", small, "black"
    )
    ylabel = Image.new("RGB", (round(bottom - top), round(16 * s)), "white")
    _centered(ImageDraw.Draw(ylabel), (ylabel.width / 2, ylabel.height / 2), "true positive rate (sensitivity)",
              small, "black")  # fmt: skip
    img.paste(ylabel.rotate(90, expand=True), (round(2 * s), round(top)))
    return img


def write_classification_plots(
    labels: Sequence[Any] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    preds: Sequence[Any] | np.ndarray | None = None,
    threshold: float = 0.5,
    size: int = 400,
    title: str | None = None,
) -> dict[str, Path]:
    """Write ``confusion_matrix.png`` and ``roc_curve.png`` (atomically) into ``out_dir``.

    Args:
        labels: ground truth (0/1 or names).
        probs: P(atypical).
        out_dir: created if missing.
        preds: hard 0/1 predictions for the confusion matrix (default ``probs >= threshold``).
        threshold: decision threshold when ``preds`` is not given.
        size: width = height of each image in pixels.
        title: prefix of the figure titles.

    Returns:
        ``{"confusion_matrix": path, "roc_curve": path}``; the ROC curve is left out (with no file) when only
        one class is present.

    Examples:
        >>> import tempfile
        >>> out = write_classification_plots([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.3], tempfile.mkdtemp())
        >>> sorted(out)
        ['confusion_matrix', 'roc_curve']
    """
    y = to_targets(labels)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    hard = (p >= threshold).astype(np.int64) if preds is None else np.asarray(preds, dtype=np.int64)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    cm_title = f"{title}: confusion matrix" if title else None
    with atomic_path(out / CONFUSION_FILE) as tmp:
        confusion_matrix_image(y, hard, size=size, title=cm_title).save(tmp, format="PNG")
    written["confusion_matrix"] = out / CONFUSION_FILE
    if len(np.unique(y)) == 2:
        with atomic_path(out / ROC_FILE) as tmp:
            roc_curve_image(y, p, size=size, title=title).save(tmp, format="PNG")
        written["roc_curve"] = out / ROC_FILE
    return written
