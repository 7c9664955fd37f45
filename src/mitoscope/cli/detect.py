"""``mitoscope detect``: find mitotic figures in whole slides (the bundled detector, or a checkpoint)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail, one_line


@dataclasses.dataclass
class DetectSettings:
    """What ``--set`` reaches on ``detect``."""

    overlap: int = 64
    tissue: bool = True
    keep_candidates: bool = False
    formats: str = "csv,geojson,midog"
    reader: str = "thread"
    threads: int | None = None


SET_HELP = (
    "overlap=64 (between tiles, model px), tissue=true (skip tiles without tissue), keep_candidates=false (also "
    "write candidates below the threshold as 'non-mitotic figure', for AP/FROC), formats=csv,geojson,midog "
    "(csv, geojson, midog, sqlite), reader=thread|process, threads=N (torch CPU threads; 1 helps on busy CPUs)."
)


def load_detector(model: str | Path, device: str, verifier: str = "auto", precision: str = "auto") -> Any:
    """``Detector.from_path`` with any failure to load the MODEL turned into one ``error:`` line and exit 1."""
    from mitoscope.inference.detect import Detector
    from mitoscope.utils.errors import InputError

    try:
        return Detector.from_path(
            model,
            device=device,
            verifier=None if verifier.lower() == "none" else verifier,
            precision=precision,
        )
    except (InputError, ValueError) as exc:
        fail(exc)
    except Exception as exc:  # a torch file that is not a usable mitoscope checkpoint: bad contract, weights
        fail(f"{model}: not a usable mitoscope detector checkpoint ({type(exc).__name__}: {one_line(exc)})")


def detect(
    slides: list[Path] = typer.Argument(
        ..., help="Slide files (TIFF/SVS, OpenSlide formats, PNG/JPEG) or folders of slides."
    ),
    out: Path = opt.out_option("Output folder (one set of files per slide)."),
    model: str = opt.model_option(
        "mitoscope-detector",
        "A bundled model's name (`mitoscope models`), a detector checkpoint (.pt) or a training RUN directory.",
    ),
    verifier: str = opt.verifier_option(),
    device: str = opt.device_option(),
    precision: str = opt.precision_option(),
    threshold: float | None = opt.threshold_option(
        "Decision threshold (default: the model's own; with a verification stage, on its probability)."
    ),
    mpp: float | None = opt.mpp_option(),
    sqlite: bool = typer.Option(
        False, "--sqlite", help="Also write a SlideRunner SQLite database per slide."
    ),
    batch_size: int = opt.batch_size_option(8, "Tiles"),
    workers: int = opt.workers_option(2),
    resume: bool = opt.resume_option("Skip slides whose outputs are complete (--no-resume: redo them)."),
    settings: list[str] = opt.set_option(SET_HELP),
) -> None:
    """Detect mitotic figures in whole slides; resumable (finished slides are skipped).

    Writes per slide NAME.csv (x, y in px and mm, score, class), NAME.geojson (QuPath), NAME.midog.json
    (MIDOG track 1) and, with --sqlite, NAME.sqlite; NAME.done.json marks a finished slide. A missing or
    unreadable slide is reported and the others continue; the exit code is then 1.
    """
    from rich.console import Console

    from mitoscope.cli.progress import slide_bars
    from mitoscope.inference.batch import detect_slides, detection_formats, expand_slides

    err = Console(stderr=True)
    try:
        extra = opt.parse_settings(settings, DetectSettings())
        formats = detection_formats(extra.formats, sqlite=sqlite)
        if extra.reader not in ("process", "thread"):
            raise ValueError(f"--set reader must be 'process' or 'thread', got {extra.reader!r}")
        if extra.threads is not None:
            if extra.threads < 1:
                raise ValueError(f"--set threads must be at least 1, got {extra.threads}")
            import torch

            torch.set_num_threads(extra.threads)
    except (ValueError, RuntimeError, OSError) as exc:
        fail(exc)
    slides = expand_slides(slides)
    if not slides:
        fail("no slides given (the folders hold no slide files)")
    detector = load_detector(model, device, verifier, precision)
    err.print(detector.describe(threshold), highlight=False, soft_wrap=True)
    with slide_bars(err, len(slides)) as callbacks:
        run = detect_slides(
            detector, slides, out, formats=formats, resume=resume, mpp=mpp, **callbacks, batch_size=batch_size,
            threshold=threshold, num_workers=workers, reader=extra.reader, overlap=extra.overlap,
            tissue=extra.tissue, keep_below_threshold=extra.keep_candidates,
        )  # fmt: skip
    for name, why in run.failed:
        typer.echo(f"failed: {why}" if name in why else f"failed: {name}: {why}", err=True)
    if run.failed:
        raise typer.Exit(1)
