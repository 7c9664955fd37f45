"""``mitoscope analyze``: slides → mitotic figures → normal/atypical → per-slide counts, cohort table, report."""

from __future__ import annotations

from pathlib import Path

import typer

from mitoscope.cli.errors import fail


def _expand(slides: list[Path]) -> list[Path]:
    """Slide files; a folder stands for the slide files directly inside it (sorted)."""
    from mitoscope.io.slides import SLIDE_SUFFIXES

    out: list[Path] = []
    for p in slides:
        if p.is_dir():
            found = sorted(
                q
                for q in p.iterdir()
                if q.is_file() and any(q.name.lower().endswith(s) for s in SLIDE_SUFFIXES)
            )
            out.extend(found)
        else:
            out.append(p)
    return out


def analyze(
    slides: list[Path] = typer.Argument(..., help="Slide files (or folders of slides)."),
    detector: str = typer.Option(
        "mitoscope-detector",
        "--detector",
        "-d",
        help="A bundled detector's name (`mitoscope models`), a checkpoint or a training RUN directory.",
    ),
    verifier: str = typer.Option(
        "auto",
        "--verifier",
        help="The detector's verification stage: auto (the bundled detector's), none, or a bundled name / "
        "checkpoint / RUN folder of a mitotic-figure classifier.",
    ),
    classifier: str = typer.Option(
        "mitoscope-classifier",
        "--classifier",
        "-c",
        help="A bundled classifier's name, a checkpoint, an ensemble directory/JSON or a RUN directory.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (a previous run's is resumed)."),
    report: bool = typer.Option(
        False, "--report", help="Also write the HTML report (OUT/report/index.html)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Detector tiles per forward pass."),
    classifier_batch_size: int = typer.Option(
        64, "--classifier-batch-size", min=1, help="Crops per forward pass."
    ),
    workers: int = typer.Option(
        2, "--workers", min=0, help="Tile-reading worker processes (0: main thread)."
    ),
    mpp: float | None = typer.Option(None, "--mpp", help="µm/px to assume for slides whose files lack it."),
    sqlite: bool = typer.Option(
        False, "--sqlite", help="Also write a SlideRunner SQLite database per slide."
    ),
    hpf_area_mm2: float = typer.Option(2.37, "--hpf-area-mm2", help="Area of the hotspot window (10 HPF)."),
    hpf_aspect: float = typer.Option(1.0, "--hpf-aspect", help="Hotspot window width/height (1 = square)."),
    detection_threshold: float | None = typer.Option(
        None,
        "--detection-threshold",
        help="Override the detector's threshold (with a verification stage: on its probability).",
    ),
    atypical_threshold: float | None = typer.Option(
        None, "--atypical-threshold", help="Threshold on P(atypical) (default: the classifier's own rule)."
    ),
    tta: bool = typer.Option(False, "--tta", help="Classifier test-time augmentation (8 dihedral views)."),
    tissue: bool = typer.Option(
        True, "--tissue/--no-tissue", help="Tissue mask (skip empty tiles, density)."
    ),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip slides already finished."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show tile progress bars."),
) -> None:
    """Detect mitotic figures, classify them normal/atypical, and count them per slide and per cohort.

    Writes OUT/slides/<slide>/ (<slide>.csv with x, y in px and mm, detection score, P(atypical), class; QuPath GeoJSON; MIDOG JSON; optional SlideRunner SQLite; summary.json), OUT/cohort.csv (a row per slide: count, density per mm² of tissue, hotspot count in the densest HPF area, atypical count and fraction, thresholds) and OUT/cohort.json (settings, versions).

    Re-running resumes: finished slides are skipped. Under `torchrun --nproc_per_node N` the slides are sharded over the processes. Exit status 1 when a slide is missing or failed (the others are still done), 2 on bad arguments.
    """
    from rich.console import Console

    from mitoscope.engine.distributed import cleanup, get_info, init_distributed
    from mitoscope.inference.analyze import AnalysisConfig
    from mitoscope.inference.cohort import Pipeline, build_pipeline, model_settings, run_cohort
    from mitoscope.utils.optional import MissingDependencyError

    console = Console(stderr=True)
    try:
        dist = init_distributed(device="cpu" if device == "cpu" else None)
        main = dist.rank == 0
        if dist.is_distributed and device in ("auto", "cuda"):
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{dist.local_rank}"  # one GPU per process
        from mitoscope.models.checkpoint import is_bundle_path
        from mitoscope.models.pretrained import bundled_path

        for name, path in (("detector", detector), ("classifier", classifier)):
            if is_bundle_path(path) and not path.endswith((".json", ".safetensors")):
                bundled_path(path)  # an unknown name fails here, listing the bundled ones
            elif not Path(path).exists():
                raise FileNotFoundError(f"{path}: {name} not found")
        paths = _expand(slides)
        if not paths:
            raise FileNotFoundError("no slides given (folders held no slide files)")
        config = AnalysisConfig(hpf_area_mm2=hpf_area_mm2, hotspot_aspect=hpf_aspect)
        formats = ("geojson", "midog", *(("sqlite",) if sqlite else ()))
        settings = model_settings(
            detector, classifier, detection_threshold=detection_threshold,
            atypical_threshold=atypical_threshold, tta=tta, mpp=mpp, verifier=verifier,
        )  # fmt: skip

        def log(msg: str) -> None:
            console.print(msg, markup=False, highlight=False)

        if main:
            log(
                f"analysing {len(paths)} slide(s) into {out}"
                + (f" on {dist.world_size} ranks" if dist.is_distributed else "")
            )

        def make_pipeline() -> Pipeline:
            return build_pipeline(
                detector, classifier, device=device, batch_size=batch_size,
                classifier_batch_size=classifier_batch_size, num_workers=workers, tta=tta,
                detection_threshold=detection_threshold, atypical_threshold=atypical_threshold,
                tissue=tissue, progress=progress and main, log=log, verifier=verifier,
            )  # fmt: skip

        outcome = run_cohort(
            paths,
            out,
            make_pipeline=make_pipeline,
            settings=settings,
            config=config,
            mpp=mpp,
            formats=formats,
            resume=resume,
            log=log,
        )
        if main:
            _print_table(console, outcome.cohort_csv)
            if report:
                from mitoscope.report.html import write_report

                index = write_report(out)
                log(f"report: {index}")
            for name, err in outcome.failed.items():
                console.print(f"[red]failed[/red] {name}: {err}", highlight=False)
            if outcome.failed:
                console.print(
                    f"[red]{len(outcome.failed)} of {len(paths)} slide(s) failed[/red]; the others are in {out}"
                )
    except (ValueError, KeyError, MissingDependencyError, OSError) as exc:
        cleanup()
        fail(exc, code=2)
    failed = bool(outcome.failed)
    cleanup()
    if get_info().is_distributed or failed:
        raise typer.Exit(1 if failed else 0)


def _print_table(console: object, cohort_csv: Path) -> None:
    import pandas as pd
    from rich.table import Table

    table = pd.read_csv(cohort_csv, keep_default_na=False, na_values=[""])
    t = Table(title="mitoscope analyze")
    for col in ("slide", "figures", "per mm²", "hotspot", "atypical", "fraction"):
        t.add_column(col, justify="left" if col == "slide" else "right")

    def f(v: object, digits: int = 2) -> str:
        try:
            x = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "-"
        return "-" if x != x else (str(int(x)) if x.is_integer() else f"{x:.{digits}f}")

    for _, r in table.iterrows():
        if r["status"] != "ok":
            t.add_row(str(r["slide"]), "failed", "", "", "", "")
            continue
        t.add_row(
            str(r["slide"]), f(r["mitotic_count"]), f(r["density_per_mm2"]), f(r["hotspot_count"]),
            f(r["atypical_count"]), f(r["atypical_fraction"], 3),
        )  # fmt: skip
    console.print(t)  # type: ignore[attr-defined]
