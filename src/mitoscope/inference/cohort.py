"""Analyse a cohort of slides: resumable, fault-tolerant, sharded over ``torchrun`` ranks.

Output directory layout::

    OUT/slides/<name>/    one finished bundle per slide (written atomically, see ``inference.analyze``)
    OUT/cohort.csv        one row per slide of this run (rebuilt from the bundles on every run)
    OUT/cohort.json       settings (model paths, thresholds, versions), slide list, failures

A slide whose bundle is complete and made with the same settings fingerprint is skipped, so re-running a command
resumes an interrupted cohort. Missing or unreadable slides are reported and the others still run.
Under ``torchrun --nproc_per_node N`` each rank analyses a strided shard of the slides and rank 0 writes the
cohort table once every rank is done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mitoscope import __version__
from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
from mitoscope.engine.distributed import all_gather_object, barrier, get_info
from mitoscope.inference.analyze import (
    SUMMARY_FILE,
    AnalysisConfig,
    ClassifyFn,
    DetectFn,
    TissueFn,
    analyze_slide,
    is_complete,
    settings_fingerprint,
    slide_name_of,
    write_slide_result,
)
from mitoscope.inference.classify import Classifier
from mitoscope.inference.detect import Detector
from mitoscope.io.slide_base import Slide
from mitoscope.io.slides import open_slide
from mitoscope.models.checkpoint import is_bundle_path
from mitoscope.models.pretrained import bundle_info
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.device import resolve_device
from mitoscope.utils.jsonable import to_jsonable

logger = logging.getLogger(__name__)

COHORT_CSV = "cohort.csv"
COHORT_JSON = "cohort.json"
SLIDES_DIR = "slides"

COHORT_COLUMNS = (
    "slide", "path", "status", "mitotic_count", "density_per_mm2", "hotspot_count", "atypical_count",
    "normal_count", "atypical_fraction", "hotspot_atypical_count", "tissue_area_mm2", "hotspot_area_mm2",
    "detection_threshold", "atypical_threshold", "width", "height", "mpp", "seconds", "error",
)  # fmt: skip


@dataclasses.dataclass
class Pipeline:
    """The three callables of the analysis plus the threshold and settings they use."""

    detect: DetectFn
    classify: ClassifyFn
    tissue_area: TissueFn | None
    atypical_threshold: float
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CohortOutcome:
    """What happened to each slide: ``done`` (analysed now), ``skipped`` (already finished), ``failed``."""

    done: list[str]
    skipped: list[str]
    failed: dict[str, str]
    cohort_csv: Path
    slide_dirs: dict[str, Path]

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failed


def unique_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Output names of the slides: file stems, made unique with ``-2``, ``-3``... suffixes.

    Examples:
        >>> unique_names(["a/x.tif", "b/x.tif", "y.svs"])
        ['x', 'x-2', 'y']
    """
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        base = slide_name_of(p)
        k = seen.get(base, 0) + 1
        seen[base] = k
        names.append(base if k == 1 else f"{base}-{k}")
    return names


def _default_open(path: str, mpp: float | None) -> Slide:
    return open_slide(path, mpp=mpp) if mpp is not None else open_slide(path)


def versions() -> dict[str, str]:
    """Versions of mitoscope and of the libraries that shape its numbers."""
    out = {"mitoscope": __version__, "python": platform.python_version()}
    for mod in ("torch", "timm", "numpy"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = str(getattr(m, "__version__", "?"))
    return out


def run_cohort(
    slides: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    make_pipeline: Callable[[], Pipeline],
    settings: Mapping[str, Any] | None = None,
    config: AnalysisConfig | None = None,
    mpp: float | None = None,
    formats: Sequence[str] = ("geojson", "midog"),
    resume: bool = True,
    open_slide_fn: Callable[[str, float | None], Slide] | None = None,
    log: Callable[[str], None] | None = None,
) -> CohortOutcome:
    """Analyse every slide into ``out_dir`` and (re)build ``cohort.csv`` / ``cohort.json``.

    Args:
        slides: slide files.
        out_dir: output directory (created; a previous run's directory is resumed).
        make_pipeline: builds the models; called at most once per process, and only when a slide needs work.
        settings: what defines the results (model paths, thresholds, options); its fingerprint decides whether
            a finished slide may be reused.
        config: statistics / report settings.
        mpp: mpp to assume for slides whose files lack it.
        formats: detection output formats beside the CSV ``<name>.csv`` (``geojson``, ``midog``, ``sqlite``, ...).
        resume: skip slides finished with the same settings (False: redo every slide).
        open_slide_fn: ``(path, mpp) -> Slide`` (default :func:`mitoscope.io.slides.open_slide`).
        log: where progress lines go (default: the module logger).

    Returns:
        A :class:`CohortOutcome`; under torchrun every rank gets the merged outcome of all ranks.

    Examples:
        >>> import numpy as np, tempfile
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> pipe = Pipeline(lambda s: pd.DataFrame({"x": [5.0], "y": [5.0]}), lambda s, p: np.array([0.9]),
        ...                 None, 0.5)
        >>> opener = lambda path, mpp: ArraySlide(np.zeros((64, 64, 3), np.uint8), mpp=0.25, path=path)
        >>> d = Path(tempfile.mkdtemp()); (d / "a.png").touch()
        >>> out = run_cohort([d / "a.png"], d / "out", make_pipeline=lambda: pipe, open_slide_fn=opener,
        ...                  formats=(), config=AnalysisConfig(thumbnail_size=0))
        >>> out.done, pd.read_csv(out.cohort_csv)["atypical_count"].tolist()
        (['a'], [1])
    """
    log = log or logger.info
    config = config or AnalysisConfig()
    opener = open_slide_fn or _default_open
    out_dir = Path(out_dir)
    slides_root = out_dir / SLIDES_DIR
    slides_root.mkdir(parents=True, exist_ok=True)
    settings = {**dict(settings or {}), "config": dataclasses.asdict(config), "formats": list(formats)}
    fingerprint = settings_fingerprint(settings)
    paths = [str(p) for p in slides]
    names = unique_names(paths)
    info = get_info()
    mine = list(range(info.rank, len(paths), info.world_size))

    pipeline: Pipeline | None = None
    done: list[str] = []
    skipped: list[str] = []
    failed: dict[str, str] = {}
    for k, i in enumerate(mine, start=1):
        path, name = paths[i], names[i]
        slide_dir = slides_root / name
        prefix = f"[{k}/{len(mine)}]" + (f" rank {info.rank}" if info.is_distributed else "")
        if resume and is_complete(slide_dir, fingerprint):
            skipped.append(name)
            log(f"{prefix} {name}: already done, skipped")
            continue
        if not Path(path).exists():
            failed[name] = f"{path}: file not found"
            log(f"{prefix} {name}: FAILED: file not found")
            continue
        try:
            slide = opener(path, mpp)
        except Exception as exc:
            failed[name] = f"{path}: cannot open slide ({exc})"
            log(f"{prefix} {name}: FAILED: cannot open ({exc})")
            continue
        if pipeline is None:
            pipeline = make_pipeline()  # model errors are not per-slide: let them stop the run
            if config.crop_mpp is None and pipeline.info.get("classifier_mpp"):
                # Gallery crops at the classifier's resolution: what it saw.
                config = dataclasses.replace(config, crop_mpp=float(pipeline.info["classifier_mpp"]))
        try:
            t0 = time.perf_counter()
            extra = {"fingerprint": fingerprint, **pipeline.info}
            with slide:
                result = analyze_slide(
                    slide,
                    detect=pipeline.detect,
                    classify=pipeline.classify,
                    tissue_area=pipeline.tissue_area,
                    atypical_threshold=pipeline.atypical_threshold,
                    config=config,
                    name=name,
                    extra_summary=extra,
                )
                result.summary["path"] = path
            write_slide_result(slide_dir, result, formats=formats)
        except Exception as exc:
            failed[name] = f"{path}: {type(exc).__name__}: {exc}"
            logger.debug("analysis of %s failed", path, exc_info=True)
            log(f"{prefix} {name}: FAILED: {exc}")
            continue
        s = result.summary
        done.append(name)
        log(
            f"{prefix} {name}: {s['mitotic_count']} figures ({s['atypical_count']} atypical), "
            f"hotspot {s['hotspot_count']} / {s['hotspot_area_mm2']:g} mm², {time.perf_counter() - t0:.1f} s"
        )

    gathered: list[dict[str, Any]] = all_gather_object({"done": done, "skipped": skipped, "failed": failed})
    barrier()
    done = [n for g in gathered for n in g["done"]]
    skipped = [n for g in gathered for n in g["skipped"]]
    failed = {k: v for g in gathered for k, v in g["failed"].items()}
    slide_dirs = {n: slides_root / n for n in names}
    cohort_csv: Path = out_dir / COHORT_CSV
    if info.rank == 0:
        cohort_csv = write_cohort(
            out_dir, names, paths, failed, settings={**settings, "fingerprint": fingerprint}
        )
    barrier()
    return CohortOutcome(done, skipped, failed, cohort_csv, slide_dirs)


def cohort_table(
    out_dir: str | os.PathLike[str], names: Sequence[str], paths: Sequence[str], failed: Mapping[str, str]
) -> pd.DataFrame:
    """One row per slide from the per-slide summaries on disk (failed or missing slides with their error)."""
    rows = []
    for name, path in zip(names, paths, strict=True):
        summary_path = Path(out_dir) / SLIDES_DIR / name / SUMMARY_FILE
        if name not in failed and summary_path.is_file():
            s = json.loads(summary_path.read_text(encoding="utf-8"))
            row = {c: s.get(c) for c in COHORT_COLUMNS}
            row.update(slide=name, path=path, status="ok", error="")
        else:
            row = {c: None for c in COHORT_COLUMNS}
            row.update(slide=name, path=path, status="failed", error=failed.get(name, "no result"))
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COHORT_COLUMNS))
    for col in COHORT_COLUMNS:
        if col not in ("slide", "path", "status", "error"):
            table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


def write_cohort(
    out_dir: str | os.PathLike[str],
    names: Sequence[str],
    paths: Sequence[str],
    failed: Mapping[str, str],
    *,
    settings: Mapping[str, Any],
) -> Path:
    """Write ``cohort.csv`` and ``cohort.json`` (atomically) and return the CSV path."""
    out_dir = Path(out_dir)
    table = cohort_table(out_dir, names, paths, failed)
    csv_path = write_text_atomic(out_dir / COHORT_CSV, table.to_csv(index=False))
    ok = table[table["status"] == "ok"]
    totals: dict[str, Any] = {
        "slides": len(table),
        "analysed": len(ok),
        "failed": len(table) - len(ok),
        "mitotic_count": int(ok["mitotic_count"].sum()) if len(ok) else 0,
        "atypical_count": int(ok["atypical_count"].sum()) if len(ok) else 0,
    }
    totals["atypical_fraction"] = (
        totals["atypical_count"] / totals["mitotic_count"] if totals["mitotic_count"] else math.nan
    )
    meta = {
        "settings": dict(settings),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "slides": [{"slide": n, "path": p} for n, p in zip(names, paths, strict=True)],
        "failed": dict(failed),
        "totals": totals,
    }
    write_text_atomic(out_dir / COHORT_JSON, json.dumps(to_jsonable(meta), indent=2, default=str))
    return csv_path


def _file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, size and modification time of a model file or directory (for the settings fingerprint); a
    bundled model by its name and weights' sha256 (and those of the verifier it names)."""
    if is_bundle_path(path) and not Path(path).exists():
        info = bundle_info(str(path))
        verifier = info.get("verifier")
        return {
            "bundled": str(path),
            "sha256": info["sha256"],
            **({"verifier_sha256": bundle_info(verifier)["sha256"]} if verifier else {}),
        }
    p = Path(path)
    files = (
        [p]
        if p.is_file()
        else sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in (".pt", ".json"))
    )
    return {
        "path": str(p.resolve()),
        "files": [{"name": str(q.relative_to(p) if q != p else q.name), "size": q.stat().st_size,
                   "mtime": int(q.stat().st_mtime)} for q in files],
    }  # fmt: skip


def model_settings(
    detector: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    *,
    detection_threshold: float | None = None,
    atypical_threshold: float | None = None,
    tta: bool = False,
    mpp: float | None = None,
    verifier: str = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """The settings that define an analysis's results (recorded in ``cohort.json``; fingerprinted for resume)."""
    return {
        "detector": _file_identity(detector),
        **(
            {}
            if verifier == "auto"
            else {"verifier": "none" if verifier == "none" else _file_identity(verifier)}
        ),
        "classifier": _file_identity(classifier),
        "detection_threshold_override": detection_threshold,
        "atypical_threshold_override": atypical_threshold,
        "tta": bool(tta),
        "assumed_mpp": mpp,
        **({} if precision == "auto" else {"precision": precision}),
    }


def build_pipeline(
    detector: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    *,
    device: str = "auto",
    batch_size: int = 8,
    classifier_batch_size: int = 64,
    num_workers: int = 2,
    tta: bool = False,
    detection_threshold: float | None = None,
    atypical_threshold: float | None = None,
    tissue: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    verifier: str = "auto",
    precision: str = "auto",
) -> Pipeline:
    """Load a detector and a classifier (checkpoints or run directories) into a :class:`Pipeline`.

    The detector reads tiles at its own mpp, the classifier reads a crop around each detected figure at *its*
    mpp and input size (``Classifier.classify_points``): a mismatch between the two (or with the slide) is
    resolved by resampling at read time, and logged. The tissue mask is computed once per slide and used both
    to skip empty tiles and as the density's denominator. With ``atypical_threshold=None`` the classifier
    decides by its own rule (threshold in its checkpoint; majority vote for a voting ensemble).
    """
    log = log or logger.info
    dev = resolve_device(device)
    det = Detector.from_path(
        detector, device=dev, verifier=None if verifier == "none" else verifier, precision=precision
    )
    clf = Classifier.from_path(classifier, device=dev, tta=tta, precision=precision)
    det_mpp, clf_mpp = float(det.contract.mpp), float(clf.mpp)
    if not math.isclose(det_mpp, clf_mpp, rel_tol=1e-3):
        log(
            f"detector works at {det_mpp:g} µm/px, classifier at {clf_mpp:g} µm/px: each figure's crop for the "
            f"classifier is read at {clf_mpp:g} µm/px ({clf.input_size} px), resampled from the slide"
        )
    det_threshold = float(detection_threshold) if detection_threshold is not None else det.threshold
    cache: dict[str, Any] = {}

    def mask_of(slide: Slide) -> tuple[Any, float]:
        if cache.get("slide") is not slide:
            cache.clear()
            cache.update(slide=slide, mask=slide_tissue_mask(slide))
        return cache["mask"]

    def detect(slide: Slide) -> pd.DataFrame:
        if not math.isclose(slide.mpp, det_mpp, rel_tol=1e-3):
            log(
                f"{Path(slide.path).name}: slide at {slide.mpp:g} µm/px, detector tiles resampled to {det_mpp:g}"
            )
        return det.detect(
            slide,
            batch_size=batch_size,
            threshold=det_threshold,
            num_workers=num_workers,
            progress=progress,
            tissue=mask_of(slide) if tissue else False,
        )

    def classify(slide: Slide, points: pd.DataFrame) -> Any:
        out = clf.classify_points(slide, points, batch_size=classifier_batch_size, return_labels=True)
        return out[0] if atypical_threshold is not None else out

    def tissue_area(slide: Slide) -> float:
        if not tissue:
            w, h = slide.dimensions
            return w * h * slide.mpp**2 / 1e6
        return tissue_area_mm2(*mask_of(slide))

    clf_threshold = float(atypical_threshold) if atypical_threshold is not None else float(clf.threshold)
    info = {
        "detection_threshold": det_threshold,
        "detector_path": str(det.path or detector),
        "verification_stage": det.verifier is not None,
        "classifier_path": str(classifier),
        "detector_mpp": det_mpp,
        "classifier_mpp": clf_mpp,
        "classifier_input_size": int(clf.input_size),
        "classifier_rule": str(getattr(clf.ensemble, "rule", "")),
        "classifier_members": len(getattr(clf.ensemble, "models", [None])),
        "tta": bool(tta),
        "device": str(dev),
    }
    return Pipeline(detect, classify, tissue_area, clf_threshold, info)
