"""``mitoscope evaluate detection``: MIDOG F1 (and AP) of ``mitoscope detect`` outputs against MIDOG++ labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


def evaluate_detection(
    pred: Path = typer.Argument(
        ..., help="The `mitoscope detect` output folder (per-slide CSVs), or one CSV."
    ),
    gt: Path = typer.Argument(
        ..., help="MIDOG++-format JSON, or a folder holding one (e.g. a `synth regions` output)."
    ),
    radius_um: float = typer.Option(7.5, "--radius-um", help="Hit radius in µm (MIDOG: 7.5)."),
    by: str | None = typer.Option(
        None, "--by", help="Also score per group: tumor, scanner, origin, species or domain."
    ),
    json_out: Path | None = opt.json_option("Write the scores as JSON here."),
    threshold: float | None = opt.threshold_option(
        "Score threshold for F1 (default: the labels the detector wrote)."
    ),
    mpp: float | None = opt.mpp_option("µm/px of the coordinates (default: from the outputs, else 0.25)."),
    xvalidation: Path | None = typer.Option(
        None, "--xvalidation", help="MIDOG++_datasets_xvalidation.csv, for scanner/origin/species groups."
    ),
    tune_threshold: bool = typer.Option(
        False,
        "--tune-threshold",
        help="Also report the score threshold that maximises F1 (needs candidates).",
    ),
) -> None:
    """Score detections the MIDOG way: hits within 7.5 µm, TP/FP/FN pooled over slides, F1 and AP."""
    from rich.console import Console

    from mitoscope.cli.tables import detection_table
    from mitoscope.inference.evaluate import evaluate_detections

    err = Console(stderr=True)
    console = Console()
    try:
        result = evaluate_detections(pred, gt, radius_um=radius_um, by=by, threshold=threshold, mpp=mpp,
                                     xvalidation=xvalidation, tune_threshold=tune_threshold)  # fmt: skip
    except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
        fail(exc)
    for note in result["notes"]:
        err.print(note, highlight=False, soft_wrap=True)
    console.print(detection_table(result))
    if "best_threshold" in result:
        best = result["best_threshold"]
        console.print(f"best threshold {best['threshold']:.4f}: F1 {best['f1']:.4f}", highlight=False)
    if json_out is not None:
        from mitoscope.utils.atomic import write_text_atomic

        write_text_atomic(json_out, json.dumps(result, indent=2, default=_json_default) + "\n")
        err.print(f"scores → {json_out}", highlight=False)


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
