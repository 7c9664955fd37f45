"""``mitoscope challenge``: the MIDOG 2025 container interface (Track 1, Track 2) and the evaluators' scores."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import run_reported

#: A library call whose bad input (``InputError`` is a ``ValueError``) or unusable model is one ``error:`` line.
_run = functools.partial(
    run_reported, errors=(ValueError, OSError, KeyError, RuntimeError), unusable_model=True
)

app = typer.Typer(
    help="MIDOG 2025: answer the grand-challenge interface (/input → /output) and score outputs locally.",
    no_args_is_help=True,
)

INPUT = typer.Option(
    Path("/input"), "--input", "-i", help="Input folder: inputs.json and images/<interface>/."
)
OUTPUT = typer.Option(
    Path("/output"), "--output", "-o", help="Output folder for the one file the evaluator reads."
)


def track1(
    input: Path = INPUT,
    output: Path = OUTPUT,
    model: str | None = opt.model_option(None, "Detector: checkpoint, run folder or bundled name."),
    classifier: str | None = typer.Option(
        None,
        "--classifier",
        help="Also tell normal from atypical figures (reported in --figures and on stderr).",
    ),
    threshold: float | None = opt.threshold_option("Detection threshold (default: the model's)."),
    mpp: float | None = opt.mpp_option(),
    figures: Path | None = typer.Option(
        None, "--figures", help="Also write every point as CSV here (not in OUTPUT)."
    ),
    batch_size: int = opt.batch_size_option(8, "Tiles"),
    device: str = opt.device_option(),
) -> None:
    """Track 1: detect mitotic figures in the region and write OUTPUT/mitotic-figures.json (points in mm)."""
    from mitoscope.inference.challenge import run_track1

    res = _run(
        lambda: run_track1(
            input, output, model=model, classifier=classifier, device=device, threshold=threshold, mpp=mpp,
            batch_size=batch_size, figures_csv=figures,
        )
    )  # fmt: skip
    typer.echo(res.summary(), err=True)


def track2(
    input: Path = INPUT,
    output: Path = OUTPUT,
    model: str | None = opt.model_option(
        None, "Classifier: checkpoint, ensemble, run folder or bundled name."
    ),
    tta: bool = opt.tta_option(),
    threshold: float | None = opt.threshold_option(
        "Decide at this P(atypical) (default: the trained threshold).", probability=True
    ),
    page_size: int = typer.Option(
        128, "--page-size", min=0, help="Side every page must have (0: any, all alike)."
    ),
    batch_size: int = opt.batch_size_option(64, "Pages"),
    device: str = opt.device_option(),
) -> None:
    """Track 2: classify each crop of the stack; write OUTPUT/multiple-mitotic-figure-classification.json."""
    from mitoscope.inference.challenge import run_track2

    res = _run(
        lambda: run_track2(
            input, output, model=model, device=device, tta=tta, threshold=threshold, batch_size=batch_size,
            page_size=page_size or None,
        )
    )  # fmt: skip
    typer.echo(res.summary(), err=True)


def score(
    outputs: Path = typer.Argument(
        ...,
        help="Outputs: one sub-folder per image (named after it) or an evaluator's predictions.json layout.",
    ),
    ground_truth: Path = typer.Argument(
        ..., help="The evaluator's ground_truth.json (Track 1 dict or Track 2 list)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write metrics.json (the evaluator's keys) here."),
    partial: bool = typer.Option(False, "--partial", help="Score only the images that have an output."),
) -> None:
    """Score container outputs with the MIDOG 2025 evaluators' arithmetic (F1, AP, FROC / balanced accuracy, AUROC)."""
    import json

    from mitoscope.metrics.challenge import format_metrics, score_outputs
    from mitoscope.utils.atomic import write_text_atomic
    from mitoscope.utils.jsonable import to_jsonable

    metrics = _run(lambda: score_outputs(outputs, ground_truth, partial=partial))
    if out is not None:
        write_text_atomic(out, json.dumps(to_jsonable(metrics), indent=2) + "\n")
    typer.echo(f"{metrics['track']}: {len(metrics['results'])} images scored", err=True)
    if metrics["missing"]:
        typer.echo(f"no output (not scored): {', '.join(metrics['missing'])}", err=True)
    typer.echo(format_metrics(metrics))


app.command("track1")(track1)
app.command("track2")(track2)
app.command("score")(score)
