"""End-to-end analysis of one slide: detect mitotic figures, classify each normal/atypical, summarise.

The analysis is written against three small callables so that any detector/classifier (or a test stand-in) fits:

- ``detect(slide) -> DataFrame(x, y, score, label)``: figure centres in level-0 px (already thresholded);
- ``classify(slide, points) -> ndarray``: P(atypical) per row of ``points`` (crops read at the classifier's mpp);
- ``tissue_area(slide) -> float``: tissue area in mm² (the denominator of the mitotic density).

:class:`ModelPair` builds them from a detector and a classifier checkpoint (or run directory).
:func:`analyze_slide` runs them and computes the per-slide statistics (:func:`summarize_figures`);
:func:`write_slide_result` writes the per-slide bundle atomically and :func:`read_slide_result` reads it back.

Per-slide bundle (``<out>/slides/<name>/``, appears complete or not at all)::

    <name>.csv         one row per figure: slide, x, y (level-0 px), x_mm, y_mm, score, label, class, p_atypical
                       (label = class = ``normal``/``atypical``: every row is a detected mitotic figure)
    <name>.geojson / <name>.midog.json / <name>.sqlite   QuPath, MIDOG and SlideRunner (``inference.outputs``)
    summary.json       the statistics, the thresholds used, the hotspot window, the settings fingerprint
    thumbnail.jpg      the slide downsampled (for the report)
    tissue.png         the tissue mask the analysis used, covering the whole slide (the report outlines it)
    crops.npz          crops of the figures (for the report's gallery), ``index`` = row in <name>.csv
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
from mitoscope.inference.hotspot import DEFAULT_HPF_AREA_MM2, Hotspot, densest_window
from mitoscope.inference.outputs import write_detection_outputs
from mitoscope.io.slide_base import Slide
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable

logger = logging.getLogger(__name__)

DetectFn = Callable[[Slide], pd.DataFrame]
ClassifyFn = Callable[[Slide, pd.DataFrame], np.ndarray | tuple[np.ndarray, np.ndarray]]
TissueFn = Callable[[Slide], float]
TissueMaskFn = Callable[[Slide], tuple[np.ndarray, float]]

FIGURE_COLUMNS = ("x", "y", "x_mm", "y_mm", "score", "p_atypical", "class", "label")
CLASS_COLORS: dict[str, tuple[int, int, int]] = {"normal": (40, 160, 60), "atypical": (220, 40, 40)}
SUMMARY_FILE = "summary.json"
THUMBNAIL_FILE = "thumbnail.jpg"
TISSUE_FILE = "tissue.png"
CROPS_FILE = "crops.npz"


@dataclasses.dataclass
class AnalysisConfig:
    """Settings of the per-slide statistics and of what is kept for the report.

    Attributes:
        hpf_area_mm2: area of the hotspot window (2.37 mm² ≈ 10 HPF).
        hotspot_aspect: window width / height (1 = square).
        hotspot_step_um: grid step of the hotspot search.
        atypical_threshold: P(atypical) at or above which a figure is atypical (None: the classifier's own).
        thumbnail_size: longer side of the saved thumbnail (0: none).
        max_crops: crops kept for the report's gallery (the most and the least atypical when there are more).
        crop_size: size of those crops in px at ``crop_mpp`` (None: the slide's mpp).
        crop_mpp: mpp of the gallery crops (normally the classifier's).
    """

    hpf_area_mm2: float = DEFAULT_HPF_AREA_MM2
    hotspot_aspect: float = 1.0
    hotspot_step_um: float = 10.0
    atypical_threshold: float | None = None
    thumbnail_size: int = 1024
    max_crops: int = 200
    crop_size: int = 96
    crop_mpp: float | None = None


@dataclasses.dataclass
class SlideResult:
    """What :func:`analyze_slide` found on one slide."""

    name: str
    figures: pd.DataFrame
    summary: dict[str, Any]
    hotspot: Hotspot
    thumbnail: np.ndarray | None = None
    crops: np.ndarray | None = None
    crop_index: np.ndarray | None = None
    tissue_mask: np.ndarray | None = None


def slide_name_of(path: str | os.PathLike[str]) -> str:
    """The slide's name used for its outputs: the file name without its (double) extension.

    Examples:
        >>> slide_name_of("/data/case_01.ome.tiff")
        'case_01'
    """
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the analysis settings (to tell whether a finished slide is still valid)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def summarize_figures(
    figures: pd.DataFrame,
    *,
    slide_dims: tuple[int, int],
    mpp: float,
    tissue_area_mm2: float | None,
    atypical_threshold: float,
    config: AnalysisConfig | None = None,
) -> tuple[dict[str, Any], Hotspot]:
    """Per-slide statistics of classified figures (``x``, ``y``, ``p_atypical`` columns).

    A figure is atypical by its ``class`` column when there is one (e.g. an ensemble's majority vote), else
    when ``p_atypical >= atypical_threshold``.

    Returns the summary dict (mitotic count, density per mm² of tissue, hotspot count in the densest
    ``hpf_area_mm2`` window, atypical / normal counts, atypical fraction — NaN without figures — and the same
    counts inside the hotspot) and the :class:`Hotspot`.

    Examples:
        >>> figs = pd.DataFrame({"x": [10.0, 20.0, 4000.0], "y": [10.0, 30.0, 4000.0], "p_atypical": [0.9, 0.1, 0.2]})
        >>> s, hs = summarize_figures(figs, slide_dims=(5000, 5000), mpp=0.25, tissue_area_mm2=1.0,
        ...                           atypical_threshold=0.5)
        >>> s["mitotic_count"], s["atypical_count"], round(s["atypical_fraction"], 3), s["density_per_mm2"]
        (3, 1, 0.333, 3.0)
    """
    config = config or AnalysisConfig()
    n = len(figures)
    if "class" in figures.columns:
        atypical = figures["class"].astype(str).eq("atypical").to_numpy()
    else:
        p = figures["p_atypical"].to_numpy(float) if n else np.zeros(0)
        atypical = p >= atypical_threshold
    hotspot = densest_window(
        figures,
        slide_dims,
        mpp,
        area_mm2=config.hpf_area_mm2,
        step_um=config.hotspot_step_um,
        aspect=config.hotspot_aspect,
    )
    inside = hotspot.contains(figures["x"], figures["y"]) if n else np.zeros(0, bool)
    area = float(tissue_area_mm2) if tissue_area_mm2 is not None else math.nan
    width, height = slide_dims
    summary: dict[str, Any] = {
        "width": int(width),
        "height": int(height),
        "mpp": float(mpp),
        "slide_area_mm2": float(width * height * mpp * mpp / 1e6),
        "tissue_area_mm2": area,
        "mitotic_count": int(n),
        "density_per_mm2": float(n / area) if area > 0 else math.nan,
        "hotspot_count": int(hotspot.count),
        "hotspot_area_mm2": float(config.hpf_area_mm2),
        "hotspot_x": float(hotspot.x),
        "hotspot_y": float(hotspot.y),
        "hotspot_w": float(hotspot.w),
        "hotspot_h": float(hotspot.h),
        "hotspot_atypical_count": int((atypical & inside).sum()),
        "atypical_count": int(atypical.sum()),
        "normal_count": int(n - atypical.sum()),
        "atypical_fraction": float(atypical.mean()) if n else math.nan,
        "atypical_threshold": float(atypical_threshold),
    }
    return summary, hotspot


def _empty_figures() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=object if c in ("class", "label") else float) for c in FIGURE_COLUMNS}
    )


def _check_detections(dets: pd.DataFrame, slide: Slide) -> pd.DataFrame:
    missing = [c for c in ("x", "y") if c not in dets.columns]
    if missing:
        raise ValueError(f"detector output for {slide.path} lacks columns {missing}")
    dets = dets.reset_index(drop=True).copy()
    if "score" not in dets.columns:
        dets["score"] = 1.0
    if "label" not in dets.columns:
        dets["label"] = "mitotic figure"
    return dets


def _gallery_rows(p: np.ndarray, max_crops: int) -> np.ndarray:
    """Rows for the gallery: all when few, else the most and the least atypical halves; sorted by P desc."""
    order = np.argsort(-p, kind="stable")
    if len(order) > max_crops:
        top = max_crops - max_crops // 2
        order = np.concatenate([order[:top], order[len(order) - max_crops // 2 :]])
    return order


def analyze_slide(
    slide: Slide,
    *,
    detect: DetectFn,
    classify: ClassifyFn,
    tissue_area: TissueFn | None = None,
    atypical_threshold: float = 0.5,
    config: AnalysisConfig | None = None,
    name: str | None = None,
    extra_summary: Mapping[str, Any] | None = None,
    tissue_mask: TissueMaskFn | None = None,
) -> SlideResult:
    """Detect, classify and summarise one slide.

    Args:
        slide: the slide (any :class:`~mitoscope.io.slide_base.Slide`).
        detect: ``slide -> DataFrame(x, y, score, label)`` in level-0 px.
        classify: ``(slide, points) -> P(atypical)`` per point, or ``(P(atypical), labels)`` when the classifier
            decides by itself (an ensemble's majority vote); its labels are used unless ``config`` sets a threshold.
        tissue_area: ``slide -> mm²`` of tissue; None uses the whole slide area.
        atypical_threshold: threshold on P(atypical) (``config.atypical_threshold`` overrides it when set).
        config: statistics and report settings.
        name: slide name for the outputs (default: from ``slide.path``).
        extra_summary: more keys for the summary (thresholds, model paths...).
        tissue_mask: ``slide -> (mask, mask_mpp)``, the mask behind ``tissue_area``, kept (with the thumbnail) for
            the report's overview; None: :func:`~mitoscope.data.tissue.slide_tissue_mask`, kept only when its area
            is the one ``tissue_area`` gave (so a run without a tissue mask shows no outline).

    Returns:
        A :class:`SlideResult` with the figures table, the summary, the hotspot, a thumbnail (and the tissue
        mask) and gallery crops.

    Examples:
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> s = ArraySlide(np.zeros((400, 400, 3), np.uint8), mpp=0.25, path="demo.png")
        >>> det = lambda sl: pd.DataFrame({"x": [100.0, 300.0], "y": [100.0, 300.0], "score": [0.9, 0.8]})
        >>> cls = lambda sl, pts: np.array([0.7, 0.2])
        >>> r = analyze_slide(s, detect=det, classify=cls, config=AnalysisConfig(thumbnail_size=0))
        >>> r.summary["mitotic_count"], r.summary["atypical_count"], list(r.figures["class"])
        (2, 1, ['atypical', 'normal'])
    """
    config = config or AnalysisConfig()
    threshold = float(
        config.atypical_threshold if config.atypical_threshold is not None else atypical_threshold
    )
    name = name or slide_name_of(slide.path or "slide")
    start = time.perf_counter()
    dets = _check_detections(detect(slide), slide)
    if len(dets):
        out = classify(slide, dets[["x", "y"]])
        votes = None
        if isinstance(out, tuple):  # (P(atypical), 0/1 labels), e.g. an ensemble's majority vote
            out, votes = out
        probs = np.asarray(out, dtype=float).reshape(-1)
        if probs.shape[0] != len(dets):
            raise ValueError(f"classifier returned {probs.shape[0]} probabilities for {len(dets)} figures")
        if votes is not None and config.atypical_threshold is None:
            is_atypical = np.asarray(votes).reshape(-1).astype(bool)
        else:
            is_atypical = probs >= threshold
        figures = pd.DataFrame(
            {
                "x": dets["x"].to_numpy(float),
                "y": dets["y"].to_numpy(float),
                "x_mm": dets["x"].to_numpy(float) * slide.mpp / 1000.0,
                "y_mm": dets["y"].to_numpy(float) * slide.mpp / 1000.0,
                "score": dets["score"].to_numpy(float),
                "p_atypical": probs,
                "class": np.where(is_atypical, "atypical", "normal"),
                # The typed label: QuPath classes, SlideRunner classes and the MIDOG JSON read it.
                "label": np.where(is_atypical, "atypical", "normal"),
            }
        )
    else:
        figures = _empty_figures()
    area = float(tissue_area(slide)) if tissue_area is not None else None
    if area is None:
        w, h = slide.dimensions
        area = w * h * slide.mpp**2 / 1e6
    summary, hotspot = summarize_figures(
        figures,
        slide_dims=slide.dimensions,
        mpp=slide.mpp,
        tissue_area_mm2=area,
        atypical_threshold=threshold,
        config=config,
    )
    summary = {"slide": name, "path": str(slide.path), **summary, **dict(extra_summary or {})}

    thumbnail = slide.thumbnail(config.thumbnail_size) if config.thumbnail_size > 0 else None
    mask = _analysed_tissue(slide, tissue_mask, area) if thumbnail is not None and tissue_area else None
    crops = crop_index = None
    if config.max_crops > 0 and len(figures):
        crop_index = _gallery_rows(figures["p_atypical"].to_numpy(float), config.max_crops)
        crops = np.stack(
            [
                slide.read_centered(
                    figures.at[i, "x"], figures.at[i, "y"], config.crop_size, mpp=config.crop_mpp or slide.mpp
                )
                for i in crop_index
            ]
        )
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return SlideResult(name, figures, summary, hotspot, thumbnail, crops, crop_index, mask)


def _analysed_tissue(slide: Slide, tissue_mask: TissueMaskFn | None, area_mm2: float) -> np.ndarray | None:
    """The tissue mask the analysis used, for the report's overview (see ``analyze_slide``'s ``tissue_mask``)."""
    if tissue_mask is not None:
        return np.asarray(tissue_mask(slide)[0], dtype=bool)
    mask, mask_mpp = slide_tissue_mask(slide)
    return mask if math.isclose(tissue_area_mm2(mask, mask_mpp), area_mm2, rel_tol=1e-6) else None


# ----------------------------------------------------------------------------------------------- writing / reading


def _write_formats(
    staging: Path, result: SlideResult, *, mpp: float, formats: Sequence[str], slide_dims: tuple[int, int]
) -> dict[str, str]:
    """Write the figures in each format through ``inference.outputs`` (the CSV always); ``{format: file}``."""
    fmts = ("csv", *(f for f in formats if f != "csv"))
    written = write_detection_outputs(
        staging,
        result.name,
        result.figures,
        mpp=mpp,
        formats=fmts,
        slide_dims=slide_dims,
        class_colors=CLASS_COLORS,
    )
    return {fmt: Path(path).name for fmt, path in written.items()}


def write_slide_result(
    slide_dir: str | os.PathLike[str],
    result: SlideResult,
    *,
    formats: Sequence[str] = ("geojson", "midog"),
) -> Path:
    """Write the per-slide bundle into ``slide_dir`` atomically (the whole directory appears at once).

    The figures go to ``<name>.csv`` and the other ``formats`` (``geojson``, ``midog``, ``sqlite``) through
    :func:`mitoscope.inference.outputs.write_detection_outputs`; ``summary.json`` lists them. An existing bundle
    is replaced only after the new one is complete.
    """
    from PIL import Image

    slide_dir = Path(slide_dir)
    with atomic_path(slide_dir, suffix="") as staging:
        staging.mkdir(parents=True)
        files = _write_formats(
            staging,
            result,
            mpp=float(result.summary["mpp"]),
            formats=formats,
            slide_dims=(int(result.summary["width"]), int(result.summary["height"])),
        )
        if result.thumbnail is not None:
            Image.fromarray(result.thumbnail).save(staging / THUMBNAIL_FILE, quality=88)
        if result.tissue_mask is not None:
            Image.fromarray(np.asarray(result.tissue_mask, dtype=bool)).save(staging / TISSUE_FILE)
        if result.crops is not None and result.crop_index is not None:
            np.savez_compressed(staging / CROPS_FILE, crops=result.crops, index=result.crop_index)
        summary = {**result.summary, "files": files}
        (staging / SUMMARY_FILE).write_text(json.dumps(to_jsonable(summary), indent=2), encoding="utf-8")
    return slide_dir


def _read_summary(slide_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((slide_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(slide_dir: str | os.PathLike[str], fingerprint: str | None = None) -> bool:
    """True when ``slide_dir`` holds a finished bundle (and, if given, made with the same settings)."""
    slide_dir = Path(slide_dir)
    summary = _read_summary(slide_dir)
    if summary is None:
        return False
    if not all((slide_dir / name).is_file() for name in summary.get("files", {}).values()):
        return False
    return fingerprint is None or summary.get("fingerprint") == fingerprint


def read_slide_result(slide_dir: str | os.PathLike[str]) -> SlideResult:
    """Read a bundle written by :func:`write_slide_result` (thumbnail and crops when present)."""
    from PIL import Image

    slide_dir = Path(slide_dir)
    summary_path = slide_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise InputError("not a finished slide result (no summary.json)", path=slide_dir)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"bad JSON ({exc})", path=summary_path) from exc
    summary = {k: (math.nan if v is None and k in _NUMERIC_KEYS else v) for k, v in summary.items()}
    csv_name = summary.get("files", {}).get("csv", f"{summary['slide']}.csv")
    figures = pd.read_csv(slide_dir / csv_name, keep_default_na=False, na_values=[""])
    figures = _empty_figures() if figures.empty else figures[[c for c in FIGURE_COLUMNS if c in figures]]
    hotspot = Hotspot(
        summary["hotspot_x"],
        summary["hotspot_y"],
        summary["hotspot_w"],
        summary["hotspot_h"],
        int(summary["hotspot_count"]),
        float(summary["hotspot_area_mm2"]),
    )
    thumbnail = None
    if (slide_dir / THUMBNAIL_FILE).is_file():
        with Image.open(slide_dir / THUMBNAIL_FILE) as im:
            thumbnail = np.asarray(im.convert("RGB"))
    mask = None
    if (slide_dir / TISSUE_FILE).is_file():
        with Image.open(slide_dir / TISSUE_FILE) as im:
            mask = np.asarray(im.convert("1"), dtype=bool)
    crops = crop_index = None
    if (slide_dir / CROPS_FILE).is_file():
        with np.load(slide_dir / CROPS_FILE) as data:
            crops, crop_index = data["crops"], data["index"]
    return SlideResult(str(summary["slide"]), figures, summary, hotspot, thumbnail, crops, crop_index, mask)


_NUMERIC_KEYS = {"tissue_area_mm2", "density_per_mm2", "atypical_fraction"}


__all__ = [
    "CLASS_COLORS",
    "FIGURE_COLUMNS",
    "AnalysisConfig",
    "ClassifyFn",
    "DetectFn",
    "SlideResult",
    "TissueFn",
    "analyze_slide",
    "is_complete",
    "read_slide_result",
    "settings_fingerprint",
    "slide_name_of",
    "summarize_figures",
    "write_slide_result",
]
