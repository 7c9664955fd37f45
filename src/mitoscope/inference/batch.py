"""Batch runs over many slides, resumable and fault-tolerant: the library behind ``detect`` and ``analyze``.

:func:`detect_slides` runs a detector and writes, for every slide ``NAME``, the files of
:func:`mitoscope.inference.outputs.write_detection_outputs` (``NAME.csv`` always, then GeoJSON, MIDOG JSON, SQLite
as asked) and ``NAME.done.json`` last. :func:`analyze_cohort` loads a detector and a classifier and runs
:func:`mitoscope.inference.cohort.run_cohort` (per-slide folders, cohort table). In both a finished slide is
skipped and a missing or unreadable slide is recorded while the others still run.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mitoscope.engine.distributed import get_info
from mitoscope.inference.analyze import AnalysisConfig, slide_name_of
from mitoscope.inference.cohort import Pipeline, build_pipeline, model_settings, run_cohort
from mitoscope.inference.outputs import FORMATS, outputs_complete, write_detection_outputs, write_done_marker
from mitoscope.io.slides import SLIDE_SUFFIXES, open_slide
from mitoscope.models.checkpoint import is_bundle_path
from mitoscope.models.pretrained import bundled_path
from mitoscope.utils.errors import InputError

Log = Callable[[str], None]
DEFAULT_FORMATS = ("csv", "geojson", "midog")


def detection_formats(spec: str | Sequence[str], *, sqlite: bool = False) -> tuple[str, ...]:
    """The output formats asked for (comma-separated or a list), ``csv`` always first (evaluation reads it).

    Examples:
        >>> detection_formats("midog,geojson", sqlite=True)
        ('csv', 'midog', 'geojson', 'sqlite')
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    wanted = [f.strip().lower() for f in items if f.strip()]
    if sqlite and "sqlite" not in wanted:
        wanted.append("sqlite")
    if "csv" not in wanted:
        wanted.insert(0, "csv")
    bad = [f for f in wanted if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown output formats {bad}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(wanted))


@dataclasses.dataclass
class DetectionRun:
    """What happened to each slide: ``done`` (detected now), ``skipped`` (already complete), ``failed``."""

    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (slide path, why)


def _open(path: Path, mpp: float | None, log: Log, name: str) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slide = open_slide(path, mpp=mpp)
    for w in caught:
        log(f"{name}: {w.message}")
    return slide


def _detect_one(
    detector: Any,
    path: Path,
    name: str,
    out: Path,
    *,
    formats: tuple[str, ...],
    mpp: float | None,
    log: Log,
    tile_progress: Callable[[str, int, int | None], None] | None,
    options: dict[str, Any],
) -> None:
    slide = _open(path, mpp, log, name)
    with slide:
        if tile_progress is not None:
            tile_progress(name, 0, None)
        report = None if tile_progress is None else (lambda done, total: tile_progress(name, done, total))
        start = time.perf_counter()
        found = detector.detect(slide, progress=report, **options)
        seconds = time.perf_counter() - start
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            written = write_detection_outputs(
                out, name, found, mpp=slide.mpp, formats=formats, slide_dims=slide.dimensions
            )
        missing = [f for f in formats if f not in written]
        if missing:
            log(f"{name}: formats not available, skipped: {', '.join(missing)}")
        info = {
            "source": str(path),
            "model": str(detector.path),
            "n_detections": int((found["label"] == "mitotic figure").sum()),
            "n_candidates": len(found),
            "unavailable_formats": missing,
            "slide_dims": list(slide.dimensions),
            "seconds": round(seconds, 3),
            **dict(found.attrs.items()),
        }
        write_done_marker(out, name, written, info)
    if found.attrs.get("tiles_processed", 1) == 0:
        log(
            f"{name}: no tissue found ({found.attrs.get('tiles_total', 0)} tiles, none kept); "
            "empty outputs written (without the tissue mask every tile is processed)"
        )
    log(
        f"{name}: {info['n_detections']} mitotic figures, {found.attrs['tiles_processed']}/"
        f"{found.attrs['tiles_total']} tiles, {seconds:.1f} s"
    )


def detect_slides(
    detector: Any,
    slides: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    resume: bool = True,
    mpp: float | None = None,
    log: Log | None = None,
    error: Log | None = None,
    tile_progress: Callable[[str, int, int | None], None] | None = None,
    slide_done: Callable[[str], None] | None = None,
    **options: Any,
) -> DetectionRun:
    """Detect mitotic figures in each slide and write its output files into ``out_dir``.

    Args:
        detector: a :class:`mitoscope.inference.detect.Detector` (anything with ``detect(slide, **options)``
            returning a table with ``label`` and ``path``).
        slides: slide files; two slides may not share an output name.
        out_dir: output folder (created).
        formats: output formats (see :func:`detection_formats`).
        resume: skip slides whose outputs are complete (False: redo every slide).
        mpp: µm/px to assume for slides whose files lack it.
        log: where progress lines go (default: nowhere).
        error: where a slide's failure is reported (default: ``log``).
        tile_progress: ``(slide name, tiles done, tiles total or None)`` while a slide runs.
        slide_done: called with each slide's name once it is finished, skipped or failed.
        **options: passed to ``detector.detect`` (``batch_size``, ``threshold``, ``num_workers``, ``reader``,
            ``overlap``, ``tissue``, ``keep_below_threshold``).

    Returns:
        A :class:`DetectionRun`.

    Examples:
        >>> import tempfile, numpy as np, pandas as pd
        >>> from PIL import Image
        >>> class Dots:
        ...     path = "dots"
        ...     def detect(self, slide, progress=None):
        ...         t = pd.DataFrame({"x": [5.0], "y": [5.0], "score": [0.9], "label": ["mitotic figure"]})
        ...         t.attrs.update(tiles_processed=1, tiles_total=1)
        ...         return t
        >>> d = Path(tempfile.mkdtemp()); Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "a.png")
        >>> run = detect_slides(Dots(), [d / "a.png"], d / "out", mpp=0.25, formats=("csv",))
        >>> run.done, sorted(p.name for p in (d / "out").iterdir())
        (['a'], ['a.csv', 'a.done.json'])
        >>> detect_slides(Dots(), [d / "a.png"], d / "out", mpp=0.25, formats=("csv",)).skipped
        ['a']
    """
    say: Log = log or (lambda _msg: None)
    fail: Log = error or say
    out = Path(out_dir)
    fmts = tuple(formats)
    run = DetectionRun()
    seen: dict[str, Path] = {}
    for item in slides:
        path = Path(item)
        name = slide_name_of(path)
        try:
            if name in seen:
                raise InputError(f"same output name {name!r} as {seen[name]}", path=path)
            seen[name] = path
            if resume and outputs_complete(out, name, fmts):
                say(f"{name}: outputs complete, skipped")
                run.skipped.append(name)
                continue
            _detect_one(detector, path, name, out, formats=fmts, mpp=mpp, log=say, tile_progress=tile_progress,
                        options=options)  # fmt: skip
            run.done.append(name)
        except (InputError, ValueError, OSError, RuntimeError, KeyError) as exc:
            run.failed.append((str(path), str(exc)))
            fail(f"{name}: {exc}")
        finally:
            if slide_done is not None:
                slide_done(name)
    return run


def expand_slides(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Slide files; a folder stands for the slide files directly inside it (sorted).

    Examples:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "b.svs").touch(); (d / "a.tiff").touch(); (d / "notes.txt").touch()
        >>> [p.name for p in expand_slides([d, "c.png"])]
        ['a.tiff', 'b.svs', 'c.png']
    """
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = (q for q in p.iterdir() if q.is_file() and q.name.lower().endswith(tuple(SLIDE_SUFFIXES)))
            out.extend(sorted(found))
        else:
            out.append(p)
    return out


def _check_model(path: str, kind: str) -> None:
    """An unknown bundled name fails listing the bundled ones; a missing file or folder fails naming it."""
    if is_bundle_path(path) and not path.endswith((".json", ".safetensors")):
        bundled_path(path)
    elif not Path(path).exists():
        raise FileNotFoundError(f"{path}: {kind} not found")


def analyze_cohort(
    slides: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    detector: str = "mitoscope-detector",
    classifier: str = "mitoscope-classifier",
    verifier: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    config: Any = None,
    detection_threshold: float | None = None,
    atypical_threshold: float | None = None,
    tta: bool = False,
    mpp: float | None = None,
    sqlite: bool = False,
    resume: bool = True,
    log: Log | None = None,
    **pipeline_options: Any,
) -> Any:
    """Detect, classify and count the figures of every slide into ``out_dir``: ``mitoscope analyze``.

    Checks the models and the slides, then runs :func:`mitoscope.inference.cohort.run_cohort` with the models of
    :func:`~mitoscope.inference.cohort.build_pipeline` (loaded once, only when a slide needs work). Under
    ``torchrun`` the process group must be started (``engine.distributed.init_distributed``): the slides are
    sharded over the ranks, each on its own GPU when ``device`` is auto/cuda, and only rank 0 logs the start.

    Args:
        slides: slide files or folders of slides (see :func:`expand_slides`).
        out_dir: output directory (a previous run's is resumed).
        detector: a bundled detector's name, checkpoint or RUN folder.
        classifier: a bundled classifier's name, checkpoint, ensemble or RUN folder.
        verifier: the detector's verification stage: ``auto``, ``none`` or a classifier.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: the models' arithmetic (:func:`mitoscope.utils.precision.resolve_precision`).
        config: an :class:`~mitoscope.inference.analyze.AnalysisConfig` (hotspot window, report crops).
        detection_threshold: override of the detector's threshold.
        atypical_threshold: threshold on P(atypical) (None: the classifier's own rule).
        tta: classifier test-time augmentation (8 dihedral views).
        mpp: µm/px to assume for slides whose files lack it.
        sqlite: also write a SlideRunner database per slide.
        resume: skip slides finished with the same settings.
        log: where progress lines go.
        **pipeline_options: for ``build_pipeline``: ``batch_size``, ``classifier_batch_size``, ``num_workers``,
            ``tissue``, ``progress``.

    Returns:
        The :class:`~mitoscope.inference.cohort.CohortOutcome`.
    """
    say: Log = log or (lambda _msg: None)
    dist = get_info()
    if dist.is_distributed and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{dist.local_rank}"  # one GPU per process
    _check_model(detector, "detector")
    _check_model(classifier, "classifier")
    paths = expand_slides(slides)
    if not paths:
        raise FileNotFoundError("no slides given (folders held no slide files)")
    settings = model_settings(
        detector, classifier, detection_threshold=detection_threshold, atypical_threshold=atypical_threshold,
        tta=tta, mpp=mpp, verifier=verifier, precision=precision,
    )  # fmt: skip
    if dist.rank == 0:
        say(
            f"analysing {len(paths)} slide(s) into {out_dir}"
            + (f" on {dist.world_size} ranks" if dist.is_distributed else "")
        )
    if dist.rank != 0:
        pipeline_options["progress"] = False

    def make_pipeline() -> Pipeline:
        return build_pipeline(
            detector, classifier, device=device, tta=tta, detection_threshold=detection_threshold,
            atypical_threshold=atypical_threshold, log=say, verifier=verifier, precision=precision,
            **pipeline_options,
        )  # fmt: skip

    return run_cohort(
        paths, out_dir, make_pipeline=make_pipeline, settings=settings, config=config or AnalysisConfig(), mpp=mpp,
        formats=("geojson", "midog", *(("sqlite",) if sqlite else ())), resume=resume, log=say,
    )  # fmt: skip
