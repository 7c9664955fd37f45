"""``mitoscope demo``: synthesise data, train a small detector and classifier, analyse an unseen domain."""

from __future__ import annotations

from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


def demo(
    out: Path = typer.Option(
        Path("mitoscope-demo"), "--out", "-o", help="Demo folder (re-running resumes it)."
    ),
    synthetic: bool = typer.Option(
        False,
        "--synthetic",
        help="Instead: synthesise multi-domain data, train a small classifier and detector, analyse an unseen "
        "domain (no bundled model used).",
    ),
    quick: bool = typer.Option(False, "--quick", help="--synthetic with tiny everything (for tests)."),
    device: str = opt.device_option(
        "cpu", "Where to train and run the models: cpu (the README's figures), auto, cuda, cuda:N."
    ),
) -> None:
    """Analyse real H&E shipped with mitoscope with the bundled models: held-out breast-cancer mosaics with their
    ground truth (counts, MIDOG F1, balanced accuracy) and a skin biopsy crop with no annotated figures (figures
    per mm²); writes the HTML report. --synthetic runs the train-from-scratch pipeline on synthetic data instead."""
    import math

    from rich.console import Console
    from rich.table import Table

    from mitoscope.utils.optional import MissingDependencyError

    console = Console()

    def log(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    try:
        if synthetic or quick:
            from mitoscope.demo import run_demo

            results = run_demo(out, quick=quick, device=device, log=log)
        else:
            from mitoscope.demo_bundled import run_bundled_demo

            results = run_bundled_demo(out, device=device, log=log)
    except (ValueError, OSError, RuntimeError, MissingDependencyError) as exc:
        fail(exc, code=2)

    title = (
        f"Unseen domain: {results.get('test_domain')}"
        if "test_domain" in results
        else "Held-out AMi-Br slides (human breast cancer), bundled models"
    )
    table = Table(title=title)
    for col in ("region", "true mitoses", "detected", "true atypical", "predicted atypical", "hotspot"):
        table.add_column(col, justify="left" if col == "region" else "right")
    for r in results["regions"]:
        table.add_row(
            r["region"], str(r["true_mitoses"]), str(r["detected"]), str(r["true_atypical"]),
            str(r["predicted_atypical"]), str(r["hotspot_count"]),
        )  # fmt: skip
    console.print(table)
    d, c = results["detection"], results["classification"]
    ba = c["balanced_accuracy"]
    console.print(
        f"Detection (MIDOG F1, 7.5 µm): F1 {d['f1']:.3f}  precision {d['precision']:.3f}  recall {d['recall']:.3f}"
        f"  (TP {d['tp']}, FP {d['fp']}, FN {d['fn']})",
        highlight=False,
    )
    console.print(
        f"Classifier on the true mitoses: balanced accuracy "
        f"{'n/a' if ba is None or (isinstance(ba, float) and math.isnan(ba)) else f'{ba:.3f}'}"
        f" ({c['n_atypical']} atypical of {c['n_mitoses']})",
        highlight=False,
    )
    if "tissue" in results:
        t = results["tissue"]
        console.print(
            f"Skin biopsy crop {t['slide']} (no annotated figures): {t['figures']} mitotic figure(s) "
            f"({t['atypical']} atypical) on {t['tissue_mm2']:.2f} mm² of tissue = {t['per_mm2']:.1f} per mm²",
            highlight=False,
        )
    console.print(f"Report: {results['report']}  ({results['seconds']:.0f} s)", highlight=False)
