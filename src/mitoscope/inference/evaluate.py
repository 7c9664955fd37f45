"""Score written predictions against ground truth: ``detect`` outputs (MIDOG F1, AP, FROC and, given the slide
images, the errors per mm² of tissue) and ``classify`` CSVs (balanced accuracy, AUROC, a local threshold, the
experts' agreement).

These are the library behind ``mitoscope evaluate detection`` and ``mitoscope evaluate classification``; both
return plain dictionaries (the JSON the commands write).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
from mitoscope.engine.crossval import choose_threshold
from mitoscope.inference.analyze import slide_name_of
from mitoscope.io.midogpp import read_midogpp_json
from mitoscope.io.slides import looks_like_slide, open_slide
from mitoscope.metrics.agreement import agreement_table, by_agreement
from mitoscope.metrics.classification import classification_report
from mitoscope.metrics.detection import best_threshold, froc, summarize, tissue_errors
from mitoscope.metrics.scored import ScoredPredictions, read_scored_predictions
from mitoscope.utils.errors import InputError

GROUP_COLUMNS = ("tumor", "scanner", "origin", "species", "domain")

TISSUE_DENSITIES = (5.0, 10.0)
"""Figures per mm² of the slides whose F1 ``evaluate detection --slides`` predicts."""

LOCAL_THRESHOLD_MIN_PER_CLASS = 40
"""Labelled patches of each class from which a local threshold beat the transferred one in >= 90 % of random draws
of another lab's patches (AtNorM-MD)."""


def find_gt_json(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or the MIDOG++-format JSON inside a directory (``annotations.json`` or the only JSON)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "annotations.json").is_file():
            return path / "annotations.json"
        found = sorted(p for p in path.glob("*.json") if not p.name.endswith(".done.json"))
        if len(found) == 1:
            return found[0]
        raise InputError(f"expected one MIDOG++ JSON in the folder, found {len(found)}", path=path)
    raise InputError("ground truth not found", path=path)


def _prediction_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv") if not p.name.startswith("."))
        if not files:
            raise InputError("no per-slide CSV files in the prediction folder", path=path)
        return files
    if path.is_file():
        return [path]
    raise InputError("predictions not found", path=path)


def _mpp_of(csv: Path, table: pd.DataFrame) -> float | None:
    marker = csv.with_name(f"{csv.stem}.done.json")
    if marker.is_file():
        try:
            return float(json.loads(marker.read_text(encoding="utf-8"))["mpp"])
        except (ValueError, KeyError, TypeError):
            pass
    if "x_mm" in table.columns and len(table) and float(table["x"].abs().max()) > 0:
        row = table.loc[table["x"].abs().idxmax()]
        return float(row["x_mm"]) * 1000.0 / float(row["x"])
    return None


def read_predictions(path: str | os.PathLike[str]) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Per-slide prediction tables from a ``detect`` output folder (or one CSV), and the mpp of each slide."""
    path = Path(path)
    tables: dict[str, pd.DataFrame] = {}
    mpps: dict[str, float] = {}
    for f in _prediction_files(path):
        try:
            frame = pd.read_csv(f, dtype={"slide": str, "label": str, "class": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read CSV ({exc})", path=f) from exc
        for col in ("x", "y"):
            if col not in frame.columns:
                raise InputError(f"no {col!r} column (columns: {list(frame.columns)})", path=f)
        if "slide" in frame.columns and frame["slide"].notna().any():
            groups = {str(k): g for k, g in frame.groupby(frame["slide"].astype(str), sort=False)}
        else:
            groups = {f.stem: frame}
        if path.is_dir() and not len(frame):
            groups = {f.stem: frame}
        for name, table in groups.items():
            key = slide_name_of(str(name))
            if key in tables:
                raise InputError(f"predictions for slide {key!r} appear twice", path=f)
            tables[key] = table.reset_index(drop=True)
            mpp = _mpp_of(f, tables[key])
            if mpp is not None:
                mpps[key] = mpp
    return tables, mpps


def slide_files(folder: str | os.PathLike[str], names: Mapping[str, str]) -> dict[str, Path]:
    """The image file in ``folder`` of each slide: its ground-truth ``file_name``, else the one slide file with
    the slide's name (:func:`~mitoscope.inference.analyze.slide_name_of`).

    Args:
        folder: the folder of the slide images.
        names: ``{slide name: file_name in the ground truth}``.

    Raises:
        InputError: no such folder, or a slide with no image (or several) in it.

    Examples:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "a.tiff").touch(); (d / "b.svs").touch()
        >>> {k: p.name for k, p in slide_files(d, {"a": "a.tiff", "b": "b.tiff"}).items()}
        {'a': 'a.tiff', 'b': 'b.svs'}
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("slide folder not found", path=folder)
    by_name: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and looks_like_slide(p):
            by_name.setdefault(slide_name_of(p), []).append(p)
    files = {}
    for key, file_name in names.items():
        exact = folder / Path(file_name).name
        found = [exact] if exact.is_file() else by_name.get(key, [])
        if len(found) != 1:
            which = "no image" if not found else f"several images ({', '.join(p.name for p in found)})"
            raise InputError(f"{which} of slide {key!r} ({file_name}) in the slide folder", path=folder)
        files[key] = found[0]
    return files


def slide_tissue(files: Mapping[str, str | os.PathLike[str]]) -> dict[str, tuple[float, float]]:
    """Each slide file's tissue area in mm² (:func:`~mitoscope.data.tissue.slide_tissue_mask`) and its µm/px,
    from one opening.

    Examples:
        >>> import tempfile
        >>> from mitoscope.io.tiff_writer import write_tiled_tiff
        >>> img = np.full((512, 512, 3), 240, np.uint8); img[:256] = (190, 90, 170)
        >>> f = write_tiled_tiff(Path(tempfile.mkdtemp()) / "s.tiff", img, mpp=0.5, compression="deflate")
        >>> area, mpp = slide_tissue({"s": f})["s"]  # 512 × 256 px of 0.5 µm
        >>> round(area, 4), mpp
        (0.0328, 0.5)
    """
    facts = {}
    for key, path in files.items():
        with open_slide(path) as slide:
            facts[key] = (tissue_area_mm2(*slide_tissue_mask(slide)), float(slide.mpp))
    return facts


def _groups(
    by: str, keys: list[str], per_image: dict[str, Any], images: dict[str, Any], names: dict[str, str]
) -> dict[str, str]:
    """The group (value of ``by``) of each scored slide."""
    groups = {}
    for k in keys:
        rows = per_image[k][1]
        value = ""
        if by in rows.columns and len(rows):
            value = str(rows[by].iloc[0])
        elif by == "tumor":
            value = str(images.get(names[k], {}).get("tumor", ""))
        groups[k] = value or "unknown"
    return groups


def evaluate_detections(
    predictions: str | os.PathLike[str],
    ground_truth: str | os.PathLike[str],
    *,
    radius_um: float = 7.5,
    by: str | None = None,
    threshold: float | None = None,
    mpp: float | None = None,
    xvalidation: str | os.PathLike[str] | None = None,
    tune_threshold: bool = False,
    slides: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score ``detect`` outputs the MIDOG way: hits within ``radius_um``, TP/FP/FN pooled over slides, F1, AP, FROC.

    Args:
        predictions: a ``detect`` output folder (per-slide CSVs) or one CSV.
        ground_truth: a MIDOG++-format JSON, or a folder holding one.
        radius_um: hit radius in µm.
        by: also score per group: one of :data:`GROUP_COLUMNS`.
        threshold: score threshold re-deciding every candidate (default: the labels the detector wrote).
        mpp: µm/px of the coordinates (default: from the outputs, else from the ``slides``, else 0.25).
        xvalidation: ``MIDOG++_datasets_xvalidation.csv`` for the scanner/origin/species groups.
        tune_threshold: also report the score threshold that maximises F1.
        slides: the folder of the slide images: also report the errors per mm² of tissue, as ``tissue``
            (:func:`~mitoscope.metrics.detection.tissue_errors`, expected F1 at :data:`TISSUE_DENSITIES`).

    Returns:
        ``overall`` and per-``groups`` scores, ``froc``, ``missing_predictions``, ``notes`` (warnings), ...

    Raises:
        InputError: unreadable inputs; with ``slides``, a scored slide whose image is not in the folder.

    Examples:
        >>> import tempfile
        >>> from mitoscope.io.midogpp import write_midogpp_json
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = write_midogpp_json(d / "gt.json", [{"id": 1, "file_name": "s.tiff"}],
        ...                        [{"image_id": 1, "x": 100, "y": 100, "label": "mitotic figure"}])
        >>> pd.DataFrame({"x": [100.0], "y": [100.0], "score": [0.9], "label": ["mitotic figure"]}).to_csv(
        ...     d / "s.csv", index=False)
        >>> evaluate_detections(d / "s.csv", d / "gt.json", mpp=0.25)["overall"]["f1"]
        1.0
    """
    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"--by must be one of {', '.join(GROUP_COLUMNS)}, got {by!r}")
    gt_path = find_gt_json(ground_truth)
    catalog = read_midogpp_json(gt_path, xvalidation_csv=xvalidation)
    images = dict(catalog.attrs.get("images", {}))
    for name in catalog["slide"].unique() if len(catalog) else []:
        images.setdefault(name, {})
    tables, pred_mpp = read_predictions(predictions)
    if threshold is not None:  # the threshold re-decides every candidate; the labels written are ignored
        tables = {k: v.drop(columns=["label"], errors="ignore") for k, v in tables.items()}
    notes: list[str] = []
    names = {slide_name_of(str(name)): name for name in images}
    missing = sorted(k for k in names if k not in tables)
    extra = sorted(k for k in tables if k not in names)
    if missing:
        notes.append(
            f"warning: no predictions for {len(missing)} ground-truth slide(s), not scored: {missing[:5]}"
        )
    if extra:
        notes.append(
            f"warning: predictions for {len(extra)} slide(s) not in the ground truth, ignored: {extra[:5]}"
        )
    keys = sorted(k for k in names if k in tables)
    if not keys:
        raise ValueError(f"{predictions}: no predicted slide matches a slide of {gt_path}")
    files = None if slides is None else slide_files(slides, {k: names[k] for k in keys})
    empty_gt = pd.DataFrame({"x": [], "y": [], "label": []})
    per_image = {
        k: (tables[k], catalog[catalog["slide"] == names[k]] if len(catalog) else empty_gt) for k in keys
    }
    mpps = {k: float(mpp) if mpp is not None else pred_mpp.get(k, math.nan) for k in keys}
    tissue = None if files is None else slide_tissue(files)
    if tissue is not None:  # the slide images know their resolution
        mpps = {k: tissue[k][1] if math.isnan(v) else v for k, v in mpps.items()}
    if any(math.isnan(v) for v in mpps.values()):
        notes.append("note: µm/px not found for some slides; assuming 0.25 (use --mpp)")
        mpps = {k: (0.25 if math.isnan(v) else v) for k, v in mpps.items()}
    groups = None if by is None else _groups(by, keys, per_image, images, names)
    table = summarize(per_image, radius_um=radius_um, mpp=mpps, threshold=threshold, groups=groups)
    result: dict[str, Any] = {
        "ground_truth": str(gt_path),
        "predictions": str(predictions),
        "radius_um": radius_um,
        "threshold": threshold,
        "slides": len(keys),
        "missing_predictions": missing,
        "overall": table.iloc[0].drop("group").to_dict(),
        "groups": {str(r["group"]): r.drop("group").to_dict() for _, r in table.iloc[1:].iterrows()},
        "by": by,
        "notes": notes,
    }
    if tune_threshold:
        t, score = best_threshold(per_image, radius_um=radius_um, mpp=mpps)
        result["best_threshold"] = {"threshold": t, **score.to_dict()}
    curve = froc(per_image, radius_um=radius_um, mpp=mpps, max_thresholds=64)
    result["froc"] = curve[["threshold", "sensitivity", "fp_per_image"]].to_dict("records")
    if tissue is not None:
        areas = {k: area for k, (area, _) in tissue.items()}
        errors = tissue_errors(per_image, areas_mm2=areas, mpp=mpps, threshold=threshold, radius_um=radius_um)
        result["tissue"] = errors.to_dict(TISSUE_DENSITIES)
    return result


def chosen_threshold(targets: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """The balanced-accuracy-maximising threshold on ``(targets, probs)`` and the metrics at it.

    Examples:
        >>> c = chosen_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.35, 0.9]))
        >>> round(c["threshold"], 3), c["balanced_accuracy"], c["fewest_of_a_class"]
        (0.325, 1.0, 2)
    """
    if len(set(targets.tolist())) < 2:
        raise ValueError("--choose-threshold needs both atypical and normal labels")
    at = classification_report(targets, probs, threshold=choose_threshold(targets, probs))
    chosen = {k: at[k] for k in ("threshold", "balanced_accuracy", "sensitivity", "specificity")}
    chosen["fewest_of_a_class"] = int(min(targets.sum(), len(targets) - targets.sum()))
    return chosen


def expert_agreement(scored: ScoredPredictions, decisions: np.ndarray) -> dict[str, Any]:
    """The model and each expert against the other experts' majority, and the model on unanimous/disputed
    records (:mod:`mitoscope.metrics.agreement`)."""
    # lazy: data.datasets imports torch, which scoring prediction tables does not need
    from mitoscope.data.datasets import expert_matrix

    votes = expert_matrix(scored.joined["experts"])
    if votes.shape[1] < 3:
        raise ValueError(f"--experts needs the votes of at least 3 experts; the truth has {votes.shape[1]}")
    table = agreement_table(votes, {"model": (decisions, scored.probs)})
    table["by_agreement"] = by_agreement(scored.targets, votes, decisions, scored.probs)
    return table


@dataclasses.dataclass
class ClassificationEvaluation:
    """The report of :func:`evaluate_classification` and what it was computed from (for plots)."""

    report: dict[str, Any]
    scored: ScoredPredictions
    decisions: np.ndarray | None  # the CSV's own decisions (None: p_atypical >= the report's threshold)

    @property
    def plot_threshold(self) -> float:
        """The threshold the plots mark: the report's, or 0.5 when the CSV's own decisions were scored."""
        return float(self.report["threshold"]) if self.decisions is None else 0.5


def evaluate_classification(
    predictions: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    by: str | None = None,
    threshold: float | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    choose_threshold: bool = False,
    experts: bool = False,
) -> ClassificationEvaluation:
    """Score a ``classify`` CSV against a labelled source: balanced accuracy, AUROC (95 % CIs), sensitivity, ...

    Args:
        predictions: CSV written by ``mitoscope classify`` (``file``, ``p_atypical``, ``label``).
        truth: a labelled source (AMi-Br / MIDOG25 / AtNorM-MD CSV, catalog, class folders).
        by: also report per value of this catalog column.
        threshold: threshold on ``p_atypical`` (default: the CSV's threshold or label column, else 0.5).
        bootstrap: bootstrap resamples for the CIs (0: none).
        seed: bootstrap seed.
        choose_threshold: also report the threshold that maximises balanced accuracy on these labels.
        experts: also score each expert and the model against the other experts' majority (3+ experts).

    Returns:
        A :class:`ClassificationEvaluation`; its ``report`` is the JSON ``evaluate classification`` writes.
    """
    scored = read_scored_predictions(predictions, truth)
    joined = scored.joined
    if by is not None and by not in joined.columns:
        raise ValueError(f"--by {by!r} is not a catalog column; choose from {list(joined.columns)}")
    preds = scored.label_decisions() if threshold is None else None
    report = classification_report(
        scored.targets,
        scored.probs,
        threshold=0.5 if threshold is None else threshold,
        preds=preds,
        groups=None if by is None else joined[by].astype(str).tolist(),
        n_bootstrap=bootstrap,
        seed=seed,
    )
    if choose_threshold:
        report["chosen_threshold"] = chosen_threshold(scored.targets, scored.probs)
    if experts:
        decisions = preds if preds is not None else (scored.probs >= report["threshold"]).astype(int)
        report["expert_agreement"] = expert_agreement(scored, decisions)
    report["decision"] = (
        scored.decision_source if preds is not None else f"p_atypical >= {report['threshold']:g}"
    )
    report["n_predictions"] = scored.n_predictions
    report["n_unmatched_predictions"] = len(scored.unmatched)
    report["n_truth_without_prediction"] = scored.n_truth - len(joined)
    return ClassificationEvaluation(report, scored, preds)
