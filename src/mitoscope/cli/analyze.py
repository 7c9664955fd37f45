"""``mitoscope analyze``: slides → mitotic figures → normal/atypical → per-slide counts, cohort table, report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


@dataclasses.dataclass
class AnalyzeSettings:
    """What ``--set`` reaches on ``analyze``."""

    sqlite: bool = False
    hpf_area_mm2: float = 2.37
    hpf_aspect: float = 1.0
    tissue: bool = True
    batch_size: int = 8
    classifier_batch_size: int = 64
    resume: bool = True
    progress: bool = True


SET_HELP = (
    "sqlite=false (also a SlideRunner database per slide), hpf_area_mm2=2.37 (hotspot window, 10 HPF), "
    "hpf_aspect=1 (its width/height), tissue=true (tissue mask: skip empty tiles; density per mm² of tissue), "
    "batch_size=8 (detector tiles per pass), classifier_batch_size=64, resume=true (skip finished slides), "
    "progress=true (tile progress bars)."
)


def analyze(
    slides: list[Path] = typer.Argument(..., help="Slide files (or folders of slides)."),
    out: Path = opt.out_option("Output directory (a previous run's is resumed)."),
    detector: str = typer.Option(
        "mitoscope-detector",
        "--detector",
        "-d",
        help="A bundled detector's name (`mitoscope models`), a checkpoint or a training RUN directory.",
    ),
    classifier: str = typer.Option(
        "mitoscope-classifier",
        "--classifier",
        "-c",
        help="A bundled classifier's name, a checkpoint, an ensemble directory/JSON or a RUN directory.",
    ),
    verifier: str = opt.verifier_option(),
    device: str = opt.device_option(),
    precision: str = opt.precision_option(),
    workers: int = opt.workers_option(2, " (tiles)"),
    mpp: float | None = opt.mpp_option(),
    detection_threshold: float | None = typer.Option(
        None,
        "--detection-threshold",
        help="Override the detector's threshold (with a verification stage: on its probability).",
    ),
    atypical_threshold: float | None = typer.Option(
        None, "--atypical-threshold", help="Threshold on P(atypical) (default: the classifier's own rule)."
    ),
    tta: bool = opt.tta_option(),
    report: bool = typer.Option(
        False, "--report", help="Also write the HTML report (OUT/report/index.html)."
    ),
    settings: list[str] = opt.set_option(SET_HELP),
) -> None:
    """Detect mitotic figures, classify them normal/atypical, and count them per slide and per cohort.

    Writes OUT/slides/<slide>/ (<slide>.csv with x, y in px and mm, detection score, P(atypical), class; QuPath GeoJSON; MIDOG JSON; optional SlideRunner SQLite; summary.json), OUT/cohort.csv (a row per slide: count, density per mm² of tissue, hotspot count in the densest HPF area, atypical count and fraction, thresholds) and OUT/cohort.json (settings, versions).

    Re-running resumes: finished slides are skipped. Under `torchrun --nproc_per_node N` the slides are sharded over the processes. Exit status 1 when a slide is missing or failed (the others are still done), 2 on bad arguments.
    """
    from rich.console import Console

    from mitoscope.cli.tables import cohort_table
    from mitoscope.engine.distributed import cleanup, get_info, init_distributed
    from mitoscope.inference.analyze import AnalysisConfig
    from mitoscope.inference.batch import analyze_cohort
    from mitoscope.utils.optional import MissingDependencyError

    console = Console(stderr=True)

    def log(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    try:
        extra = opt.parse_settings(settings, AnalyzeSettings())
        main = init_distributed(device="cpu" if device == "cpu" else None).rank == 0
        outcome = analyze_cohort(
            slides, out, detector=detector, classifier=classifier, verifier=verifier, device=device,
            precision=precision,
            config=AnalysisConfig(hpf_area_mm2=extra.hpf_area_mm2, hotspot_aspect=extra.hpf_aspect),
            detection_threshold=detection_threshold, atypical_threshold=atypical_threshold, tta=tta, mpp=mpp,
            sqlite=extra.sqlite, resume=extra.resume, log=log, batch_size=extra.batch_size,
            classifier_batch_size=extra.classifier_batch_size, num_workers=workers, tissue=extra.tissue,
            progress=extra.progress,
        )  # fmt: skip
        if main:
            console.print(cohort_table(outcome.cohort_csv))
            if report:
                from mitoscope.report.html import write_report

                log(f"report: {write_report(out)}")
            for name, err in outcome.failed.items():
                console.print(f"[red]failed[/red] {name}: {err}", highlight=False)
            if outcome.failed:
                console.print(
                    f"[red]{len(outcome.failed)} of {len(outcome.done) + len(outcome.skipped) + len(outcome.failed)}"
                    f" slide(s) failed[/red]; the others are in {out}"
                )
    except (ValueError, KeyError, MissingDependencyError, OSError) as exc:
        cleanup()
        fail(exc, code=2)
    distributed = get_info().is_distributed
    cleanup()
    if distributed or outcome.failed:
        raise typer.Exit(1 if outcome.failed else 0)
