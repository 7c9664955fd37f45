"""``mitoscope demo``: synthesise data, train a small detector and classifier, analyse an unseen domain."""

from __future__ import annotations

from pathlib import Path

import typer

from mitoscope.cli.errors import fail


def demo(
    out: Path = typer.Option(
        Path("mitoscope-demo"), "--out", "-o", help="Demo folder (re-running resumes it)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Tiny everything (about a minute; for tests)."),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="Where to train and run the models: cpu (the README's figures), auto, cuda, cuda:N.",
    ),
) -> None:
    """Run the whole pipeline on synthetic data, no downloads: synthesise multi-domain patches and regions, train a
    small classifier and detector (fast CPU recipes), analyse held-out regions of an UNSEEN domain, print the counts
    next to the ground truth with the MIDOG F1 and balanced accuracy, and write the HTML report."""
    import math

    from rich.console import Console
    from rich.table import Table

    from mitoscope.demo import run_demo
    from mitoscope.utils.optional import MissingDependencyError

    console = Console()

    def log(msg: str) -> None:
        console.print(msg, markup=False, highlight=False)

    try:
        results = run_demo(out, quick=quick, device=device, log=log)
    except (ValueError, OSError, RuntimeError, MissingDependencyError) as exc:
        fail(exc, code=2)

    table = Table(title=f"Unseen domain: {results.get('test_domain')}")
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
    console.print(f"Report: {results['report']}  ({results['seconds']:.0f} s)", highlight=False)
