"""``mitoscope evaluate detection``: MIDOG F1 (and AP) of ``mitoscope detect`` outputs against MIDOG++ labels, and
with the slide images the errors per mm² of tissue."""

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
    mpp: float | None = opt.mpp_option(
        "µm/px of the coordinates (default: from the outputs, else from --slides, else 0.25)."
    ),
    xvalidation: Path | None = typer.Option(
        None, "--xvalidation", help="MIDOG++_datasets_xvalidation.csv, for scanner/origin/species groups."
    ),
    tune_threshold: bool = typer.Option(
        False,
        "--tune-threshold",
        help="Also report the score threshold that maximises F1 (needs candidates).",
    ),
    slides: Path | None = typer.Option(
        None,
        "--slides",
        help="Folder of the slide images: also report duplicates, false detections per mm² of tissue and the F1 "
        "expected on a slide with 5 and 10 figures per mm², with 95 % intervals.",
    ),
) -> None:
    """Score detections the MIDOG way: hits within 7.5 µm, TP/FP/FN pooled over slides, F1 and AP."""
    from rich.console import Console

    from mitoscope.cli.tables import detection_table
    from mitoscope.inference.evaluate import TISSUE_DENSITIES, evaluate_detections

    err = Console(stderr=True)
    console = Console()
    try:
        result = evaluate_detections(pred, gt, radius_um=radius_um, by=by, threshold=threshold, mpp=mpp,
                                     xvalidation=xvalidation, tune_threshold=tune_threshold,
                                     slides=slides)  # fmt: skip
    except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
        fail(exc)
    for note in result["notes"]:
        err.print(note, highlight=False, soft_wrap=True)
    console.print(detection_table(result))
    if "best_threshold" in result:
        best = result["best_threshold"]
        console.print(f"best threshold {best['threshold']:.4f}: F1 {best['f1']:.4f}", highlight=False)
    if "tissue" in result:
        for line in tissue_lines(result["tissue"], TISSUE_DENSITIES):
            console.print(line, highlight=False, soft_wrap=True)
    if json_out is not None:
        from mitoscope.utils.atomic import write_text_atomic

        write_text_atomic(json_out, json.dumps(result, indent=2, default=_json_default) + "\n")
        err.print(f"scores → {json_out}", highlight=False)


def tissue_lines(tissue: dict[str, float], densities: tuple[float, ...]) -> list[str]:
    """The errors per mm² of tissue (``result["tissue"]``) as two plain lines.

    Examples:
        >>> from mitoscope.metrics.detection import TissueErrors
        >>> t = TissueErrors(figures=50, tp=41, duplicates=1, tissue_fp=2, tissue_mm2=0.62).to_dict((5.0, 10.0))
        >>> rates, f1 = tissue_lines(t, (5.0, 10.0))
        >>> rates.split(", ")  # doctest: +NORMALIZE_WHITESPACE
        ['50 figures on 0.62 mm² of tissue: recall 0.82 [0.69–0.90]', 'duplicates 0.020 per figure',
         'false detections away from figures 3.2 per mm² [0.4–11.7]']
        >>> f1
        'expected F1 at 5 / 10 figures per mm²: 0.66 [0.34–0.90] / 0.76 [0.48–0.92]'
    """
    duplicates = _num(tissue["duplicates_per_figure"], ".3f")
    rates = (
        f"{tissue['figures']:.0f} figures on {tissue['tissue_mm2']:.2f} mm² of tissue: "
        f"recall {_ci(tissue, 'recall', '.2f')}, duplicates {duplicates} per figure, "
        f"false detections away from figures {_ci(tissue, 'fp_per_mm2', '.1f', ' per mm²')}"
    )
    at = " / ".join(f"{d:g}" for d in densities)
    f1s = " / ".join(_ci(tissue, f"expected_f1_at_{d:g}", ".2f") for d in densities)
    return [rates, f"expected F1 at {at} figures per mm²: {f1s}"]


def _num(value: float, spec: str) -> str:
    return "–" if value != value else format(value, spec)


def _ci(values: dict[str, float], key: str, spec: str, unit: str = "") -> str:
    """``value<unit> [low–high]`` of ``key`` (``–`` for an undefined value, no interval when it has none)."""
    low, high = values[f"{key}_low"], values[f"{key}_high"]
    interval = "" if low != low else f" [{_num(low, spec)}–{_num(high, spec)}]"
    return _num(values[key], spec) + unit + interval


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
