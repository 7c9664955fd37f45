"""``mitoscope detect``: find mitotic figures in whole slides (the bundled detector, or a checkpoint)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli.errors import fail, one_line


def slide_name(path: Path) -> str:
    """The output name of a slide: its file name without the (double) extension."""
    name = path.name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _formats(spec: str, sqlite: bool) -> tuple[str, ...]:
    from mitoscope.inference.outputs import FORMATS

    wanted = [f.strip().lower() for f in spec.split(",") if f.strip()]
    if sqlite and "sqlite" not in wanted:
        wanted.append("sqlite")
    if "csv" not in wanted:
        wanted.insert(0, "csv")  # evaluate detection reads the CSVs
    bad = [f for f in wanted if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown --formats {bad}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(wanted))


VERIFIER_HELP = (
    "The verification stage: auto (the one a bundled detector names), none (the detector alone), or a bundled "
    "name / checkpoint / RUN folder of a mitotic-figure classifier."
)


def verifier_arg(text: str) -> str | None:
    """The ``verifier`` argument of ``Detector.from_path`` for a ``--verifier`` value."""
    return None if text.lower() == "none" else text


def _load_detector(model: str | Path, device: str, verifier: str = "auto") -> Any:
    """``Detector.from_path`` with any failure to load the MODEL turned into one ``error:`` line and exit 1."""
    from mitoscope.inference.detect import Detector
    from mitoscope.utils.errors import InputError

    try:
        return Detector.from_path(model, device=device, verifier=verifier_arg(verifier))
    except InputError as exc:
        fail(exc)
    except Exception as exc:  # a torch file that is not a usable mitoscope checkpoint: bad contract, weights
        fail(f"{model}: not a usable mitoscope detector checkpoint ({type(exc).__name__}: {one_line(exc)})")


def detect(
    slides: list[Path] = typer.Argument(..., help="Slide files (TIFF/SVS, OpenSlide formats, PNG/JPEG)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (one set of files per slide)."),
    model: str = typer.Option(
        "mitoscope-detector",
        "--model",
        "-m",
        help="A bundled model's name (`mitoscope models`), a detector checkpoint (.pt) or a training RUN "
        "directory (best.pt/model.pt).",
    ),
    verifier: str = typer.Option("auto", "--verifier", help=VERIFIER_HELP),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Tiles per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Decision threshold (default: the model's own; with a verification stage, on its probability).",
    ),
    mpp: float | None = typer.Option(
        None, "--mpp", help="Microns per pixel of the slides, for files that do not store it."
    ),
    sqlite: bool = typer.Option(
        False, "--sqlite", help="Also write a SlideRunner SQLite database per slide."
    ),
    workers: int = typer.Option(
        2, "--workers", min=0, help="Tile readers ahead of the model (0: main thread)."
    ),
    reader: str = typer.Option(
        "thread",
        "--reader",
        help="Tile readers: thread (default, faster) or process (each opens the slide).",
    ),
    overlap: int = typer.Option(64, "--overlap", min=0, help="Overlap between tiles in model pixels."),
    tissue: bool = typer.Option(True, "--tissue/--no-tissue", help="Skip tiles without tissue."),
    keep_candidates: bool = typer.Option(
        False,
        "--keep-candidates",
        help="Also write candidates below the threshold (label 'non-mitotic figure'), for AP/FROC.",
    ),
    formats: str = typer.Option(
        "csv,geojson,midog", "--formats", help="Comma-separated: csv, geojson, midog, sqlite."
    ),
    force: bool = typer.Option(False, "--force", help="Redo slides whose outputs are already complete."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Torch intra-op CPU threads (default: torch's; 1 helps on busy CPUs)."
    ),
) -> None:
    """Detect mitotic figures in whole slides; resumable (finished slides are skipped).

    Writes per slide NAME.csv (x, y in px and mm, score, class), NAME.geojson (QuPath), NAME.midog.json
    (MIDOG track 1) and, with --sqlite, NAME.sqlite; NAME.done.json marks a finished slide. A missing or
    unreadable slide is reported and the others continue; the exit code is then 1.
    """
    from rich.console import Console

    err = Console(stderr=True)
    try:
        fmts = _formats(formats, sqlite)
        if reader not in ("process", "thread"):
            raise ValueError(f"--reader must be 'process' or 'thread', got {reader!r}")
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
    except (ValueError, RuntimeError, OSError) as exc:
        fail(exc)
    detector = _load_detector(model, device, verifier)
    stage = "" if detector.verifier is None else f" (verified at {detector.verifier.mpp:g} µm/px)"
    err.print(
        f"detector {detector.path} on {detector.device}: {detector.tile_size} px tiles at "
        f"{detector.contract.mpp:g} µm/px, threshold "
        f"{threshold if threshold is not None else detector.threshold:.3f}{stage}",
        highlight=False,
        soft_wrap=True,
    )
    failures = _run(err, detector, slides, out=out, formats=fmts, force=force, options={
        "batch_size": batch_size, "threshold": threshold, "num_workers": workers, "reader": reader,
        "overlap": overlap,
        "tissue": tissue, "keep_below_threshold": keep_candidates,
    }, mpp=mpp)  # fmt: skip
    if failures:
        for name, why in failures:
            typer.echo(f"failed: {why}" if name in why else f"failed: {name}: {why}", err=True)
        raise typer.Exit(1)


def _run(
    err: Any,
    detector: Any,
    slides: list[Path],
    *,
    out: Path,
    formats: tuple[str, ...],
    force: bool,
    options: dict[str, Any],
    mpp: float | None,
) -> list[tuple[str, str]]:
    import warnings

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mitoscope.inference.outputs import outputs_complete, write_detection_outputs, write_done_marker
    from mitoscope.io.slides import open_slide
    from mitoscope.utils.errors import InputError

    failures: list[tuple[str, str]] = []
    seen: dict[str, Path] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        slides_task = bar.add_task("slides", total=len(slides))
        tiles_task = bar.add_task("tiles", total=None)
        for path in slides:
            name = slide_name(path)
            try:
                if name in seen:
                    raise InputError(f"same output name {name!r} as {seen[name]}", path=path)
                seen[name] = path
                if not force and outputs_complete(out, name, formats):
                    bar.console.print(f"{name}: outputs complete, skipped", highlight=False)
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    slide = open_slide(path, mpp=mpp)
                for w in caught:
                    bar.console.print(f"{name}: {w.message}", highlight=False)
                with slide:
                    bar.update(tiles_task, description=f"tiles of {name}", completed=0, total=None)

                    def report(done: int, total: int) -> None:
                        bar.update(tiles_task, completed=done, total=total)

                    start = time.perf_counter()
                    found = detector.detect(slide, progress=report, **options)
                    seconds = time.perf_counter() - start
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        written = write_detection_outputs(
                            out, name, found, mpp=slide.mpp, formats=formats, slide_dims=slide.dimensions
                        )
                    missing = [f for f in formats if f not in written]
                    if missing:
                        bar.console.print(f"{name}: formats not available, skipped: {', '.join(missing)}")
                    info = {
                        "source": str(path),
                        "model": str(detector.path),
                        "n_detections": int((found["label"] == "mitotic figure").sum()),
                        "n_candidates": len(found),
                        "unavailable_formats": missing,
                        "slide_dims": list(slide.dimensions),
                        "seconds": round(seconds, 3),
                        **{k: v for k, v in found.attrs.items()},
                    }
                    write_done_marker(out, name, written, info)
                    if found.attrs.get("tiles_processed", 1) == 0:
                        bar.console.print(
                            f"{name}: no tissue found ({found.attrs.get('tiles_total', 0)} tiles, none kept); "
                            "empty outputs written (--no-tissue processes every tile)",
                            highlight=False,
                        )
                    bar.console.print(
                        f"{name}: {info['n_detections']} mitotic figures, {found.attrs['tiles_processed']}/"
                        f"{found.attrs['tiles_total']} tiles, {seconds:.1f} s",
                        highlight=False,
                    )
            except (InputError, ValueError, OSError, RuntimeError, KeyError) as exc:
                failures.append((str(path), str(exc)))
                bar.console.print(f"[red]{name}: {exc}[/red]", highlight=False)
            finally:
                bar.advance(slides_task)
    return failures
