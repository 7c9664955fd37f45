"""Run a model behind the MIDOG 2025 grand-challenge interface: ``/input`` in, the one file the evaluator reads out.

:func:`run_track1` detects mitotic figures in the region of interest and writes ``mitotic-figures.json`` (points
in millimetres, ``mitotic figure`` above the detector's threshold and ``non-mitotic figure`` below it, every point
with its probability); :func:`run_track2` classifies each page of the stack and writes
``multiple-mitotic-figure-classification.json``. Both work the same inside a container (``/input``, ``/output``)
and on any folder laid out like it. Everything is computed before the output is written, atomically: a failed run
leaves no output file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.inference.classify import Classifier
from mitoscope.inference.detect import Detector
from mitoscope.inference.outputs import detections_table
from mitoscope.io.challenge import TRACK1, TRACK2, find_input_image
from mitoscope.io.midog_outputs import (
    count_stack_pages,
    read_stack_page,
    write_track1_json,
    write_track2_json,
)
from mitoscope.io.slides import open_slide
from mitoscope.models.pretrained import DEFAULT_MODELS
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError

#: Side of a Track 2 crop (px): every page of a stack must have it.
TRACK2_PAGE_SIZE = 128


def default_model(task: str) -> str:
    """The bundled model a challenge run uses when none is given (``task``: ``"detection"`` or
    ``"classification"``).

    Examples:
        >>> default_model("detection")
        'mitoscope-detector'
    """
    return DEFAULT_MODELS[task]


@dataclasses.dataclass
class Track1Result:
    """What :func:`run_track1` wrote: the output file, the input image and every point (``x, y`` px, ``score``,
    ``label``; ``p_atypical`` and ``class`` with a classifier), the slide's mpp and the threshold used."""

    output: Path
    image: Path
    points: pd.DataFrame
    mpp: float
    threshold: float

    @property
    def n_figures(self) -> int:
        """Points above the threshold (``mitotic figure``)."""
        return int((self.points["label"] == "mitotic figure").sum())

    def summary(self) -> str:
        """One line for the log: figures, candidates, resolution (and atypical figures with a classifier)."""
        msg = (
            f"{self.image.name}: {self.n_figures} mitotic figures (threshold {self.threshold:.3f}), "
            f"{len(self.points) - self.n_figures} candidates below it, {self.mpp:g} µm/px"
        )
        if "p_atypical" in self.points:
            msg += f", {int((self.points['class'] == 'atypical').sum())} atypical"
        return f"{msg} → {self.output}"


@dataclasses.dataclass
class Track2Result:
    """What :func:`run_track2` wrote: the output file, the stack, P(atypical) and the class of each page."""

    output: Path
    image: Path
    p_atypical: np.ndarray
    classes: list[str]
    threshold: float

    def summary(self) -> str:
        """One line for the log: pages and atypical ones."""
        n_atyp = sum(c == "atypical" for c in self.classes)
        return f"{self.image.name}: {len(self.classes)} pages, {n_atyp} atypical (threshold {self.threshold:.3f}) → {self.output}"


def run_track1(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    classifier: str | os.PathLike[str] | None = None,
    device: str = "auto",
    threshold: float | None = None,
    mpp: float | None = None,
    batch_size: int = 8,
    num_workers: int = 2,
    figures_csv: str | os.PathLike[str] | None = None,
) -> Track1Result:
    """Detect mitotic figures in a Track 1 input and write ``OUTPUT/mitotic-figures.json``.

    Args:
        input_dir: the ``/input`` folder (``inputs.json`` and the region TIFF under its ``relative_path``).
        output_dir: the ``/output`` folder (created).
        model: whatever :meth:`~mitoscope.inference.detect.Detector.from_path` accepts; ``None``:
            :func:`default_model`.
        classifier: also classify each figure (P(atypical)) with what
            :meth:`~mitoscope.inference.classify.Classifier.from_path` accepts; the result goes to ``figures_csv``
            and :attr:`Track1Result.points` (the challenge file has no field for it).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threshold: detection threshold (default: the checkpoint's).
        mpp: microns per pixel for a TIFF without resolution (Track 1 reports millimetres).
        batch_size: tiles per forward pass.
        num_workers: tile readers working ahead of the model.
        figures_csv: optional CSV of every point (px, mm, score, label, and the class with a classifier).

    Raises:
        InputError: missing/ambiguous input, no resolution, a model that cannot be loaded.

    Examples:
        >>> run_track1("/input", "/output", model="detector.pt")  # doctest: +SKIP
        Track1Result(output=PosixPath('/output/mitotic-figures.json'), ...)
    """
    image = find_input_image(input_dir, TRACK1).path
    try:
        slide = open_slide(image, mpp=mpp)
    except InputError as exc:
        if "mpp" not in str(exc) and "resolution" not in str(exc):
            raise
        raise InputError(
            f"Track 1 reports points in millimetres, so the image needs a resolution: {exc}"
        ) from exc
    detector = Detector.from_path(model if model is not None else default_model("detection"), device=device)
    clf = None
    if classifier is not None:
        clf = Classifier.from_path(classifier, device=detector.device)
    with slide:
        points = detector.detect(
            slide,
            threshold=threshold,
            keep_below_threshold=True,
            tissue=False,
            progress=False,
            batch_size=batch_size,
            num_workers=num_workers,
        )
        if clf is not None:
            points = _classify_figures(clf, slide, points)
        slide_mpp = float(slide.mpp)
    if figures_csv is not None:
        table = detections_table(points, slide_name=image.name, mpp=slide_mpp)
        write_text_atomic(figures_csv, table.to_csv(index=False))
    out = write_track1_json(Path(output_dir) / TRACK1.output_file, points, mpp=slide_mpp, candidates=True)
    thr = float(points.attrs.get("threshold", detector.threshold if threshold is None else threshold))
    return Track1Result(out, image, points, slide_mpp, thr)


def _classify_figures(clf: Any, slide: Any, points: pd.DataFrame) -> pd.DataFrame:
    """``points`` with ``p_atypical`` and ``class`` (normal/atypical) for the mitotic figures (NaN and the label for the others)."""
    points = points.copy()
    figures = points["label"] == "mitotic figure"
    points["p_atypical"] = np.nan
    points["class"] = points["label"]
    if figures.any():
        probs, labels = clf.classify_points(slide, points[figures], return_labels=True)
        points.loc[figures, "p_atypical"] = probs
        points.loc[figures, "class"] = clf.label_names(labels)
    return points


def read_track2_pages(
    path: str | os.PathLike[str], *, page_size: int | None = TRACK2_PAGE_SIZE
) -> list[np.ndarray]:
    """Every page of a Track 2 stack as RGB uint8, checking that each is ``page_size`` square (``None``: any size,
    but all alike).

    Raises:
        InputError: an empty stack, or a page of another size (named, with its size).

    Examples:
        >>> import tempfile, pathlib, tifffile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.tiff"
        >>> tifffile.imwrite(p, np.zeros((2, 128, 128, 3), np.uint8), photometric="rgb")
        >>> [a.shape for a in read_track2_pages(p)]
        [(128, 128, 3), (128, 128, 3)]
    """
    n = count_stack_pages(path)
    if n == 0:
        raise InputError("the stack has no pages", path=path)
    pages = [read_stack_page(path, i) for i in range(n)]
    want = (page_size, page_size) if page_size else pages[0].shape[:2]
    for i, page in enumerate(pages):
        if page.shape[:2] != want:
            h, w = page.shape[:2]
            raise InputError(
                f"page {i} is {w}×{h} px, but every page of a Track 2 stack must be {want[1]}×{want[0]} px",
                path=path,
            )
    return pages


def run_track2(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tta: bool = False,
    threshold: float | None = None,
    batch_size: int = 64,
    page_size: int | None = TRACK2_PAGE_SIZE,
) -> Track2Result:
    """Classify every page of a Track 2 stack and write ``OUTPUT/multiple-mitotic-figure-classification.json``.

    Args:
        input_dir: the ``/input`` folder (``inputs.json`` and the stack under its ``relative_path``).
        output_dir: the ``/output`` folder (created).
        model: whatever :meth:`~mitoscope.inference.classify.Classifier.from_path` accepts (checkpoint, run folder,
            ensemble); ``None``: :func:`default_model`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        tta: average the 8 dihedral views.
        threshold: decide at this P(atypical) (default: the trained threshold / ensemble rule).
        batch_size: pages per forward pass.
        page_size: the side every page must have (``None``: any, but all alike).

    Raises:
        InputError: missing/ambiguous input, a page of the wrong size, a model that cannot be loaded.

    Examples:
        >>> run_track2("/input", "/output", model="classifier-run/")  # doctest: +SKIP
        Track2Result(output=PosixPath('/output/multiple-mitotic-figure-classification.json'), ...)
    """
    image = find_input_image(input_dir, TRACK2).path
    pages = read_track2_pages(image, page_size=page_size)
    clf = Classifier.from_path(
        model if model is not None else default_model("classification"),
        device=device,
        tta=tta,
        threshold=threshold,
    )
    result = clf.predict_arrays_full(pages, batch_size=batch_size)
    classes = clf.label_names(result.label)
    probs = np.asarray(result.prob, dtype=float)
    out = write_track2_json(Path(output_dir) / TRACK2.output_file, probs, labels=classes)
    return Track2Result(out, image, probs, classes, float(clf.threshold))
