"""``mitoscope evaluate classification``: score atypical/normal predictions against a labelled source."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


def evaluate_classification(
    predictions: Path = typer.Argument(
        ..., help="CSV written by `mitoscope classify` (file, p_atypical, label)."
    ),
    truth: Path = typer.Option(
        ..., "--truth", "-t", help="Labelled source: AMi-Br/MIDOG25/AtNorM-MD CSV, catalog…"
    ),
    by: str | None = typer.Option(
        None, "--by", help="Also report per value of this catalog column (e.g. domain)."
    ),
    json_out: Path | None = opt.json_option("Write the full report as JSON here."),
    threshold: float | None = opt.threshold_option(
        "Threshold on p_atypical (default: the CSV's per-row threshold column, else its label column, else 0.5)."
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the 95% CIs (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    plots: Path | None = typer.Option(
        None, "--plots", help="Write confusion_matrix.png and roc_curve.png into this folder."
    ),
    choose: bool = typer.Option(
        False,
        "--choose-threshold",
        help="Also report the threshold that maximises balanced accuracy on these labels (a local operating "
        "point from labelled cases of your own lab, for `mitoscope classify --threshold`; label at least 40 "
        "atypical and 40 normal ones).",
    ),
    experts: bool = typer.Option(
        False,
        "--experts",
        help="Also score each expert and the model against the majority of the other experts, and the model "
        "on the records the experts agree on and those they dispute (needs 3+ experts' votes, e.g. AMi-Br, "
        "AtNorM-MD).",
    ),
) -> None:
    """Score predictions against ground truth: balanced accuracy, AUROC, sensitivity, specificity, F1."""
    from rich.console import Console

    from mitoscope.cli.tables import classification_table, fmt, print_expert_agreement
    from mitoscope.inference.evaluate import LOCAL_THRESHOLD_MIN_PER_CLASS, evaluate_classification
    from mitoscope.utils.atomic import write_text_atomic
    from mitoscope.utils.jsonable import to_jsonable

    console, err = Console(), Console(stderr=True)
    try:
        result = evaluate_classification(predictions, truth, by=by, threshold=threshold, bootstrap=bootstrap,
                                         seed=seed, choose_threshold=choose, experts=experts)  # fmt: skip
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(exc)
    report = result.report
    console.print(classification_table(report, f"{predictions.name} vs {truth.name} ({report['decision']})"))
    if choose:
        c = report["chosen_threshold"]
        console.print(
            f"Threshold that maximises balanced accuracy on these labels: {c['threshold']:.4g} "
            f"(balanced accuracy {fmt(c['balanced_accuracy'])}, sensitivity {fmt(c['sensitivity'])}, "
            f"specificity {fmt(c['specificity'])}; optimistic here, as it was chosen on them). "
            f"Use it on new patches with `mitoscope classify INPUT --model MODEL --threshold {c['threshold']:.4g}`.",
            highlight=False,
        )
        if c["fewest_of_a_class"] < LOCAL_THRESHOLD_MIN_PER_CLASS:
            err.print(
                f"[yellow]warning:[/yellow] only {c['fewest_of_a_class']} labelled patches of one class: on "
                f"AtNorM-MD a threshold chosen on fewer than {LOCAL_THRESHOLD_MIN_PER_CLASS} of each beat the "
                "model's own in under 90 % of random draws on another lab's patches; label more if you can",
                highlight=False,
            )
    if experts:
        print_expert_agreement(console, report["expert_agreement"])
    if report["n_unmatched_predictions"]:
        err.print(
            f"[yellow]warning:[/yellow] {report['n_unmatched_predictions']} prediction(s) match no labelled record"
        )
    if report["n_truth_without_prediction"]:
        err.print(
            f"[yellow]warning:[/yellow] {report['n_truth_without_prediction']} labelled record(s) have no prediction"
        )
    if plots is not None:
        from mitoscope.report.classification_plots import write_classification_plots

        try:
            written = write_classification_plots(
                result.scored.targets, result.scored.probs, plots, preds=result.decisions,
                threshold=result.plot_threshold,
            )  # fmt: skip
        except (ValueError, OSError) as exc:
            fail(exc, prefix=f"--plots {plots}: ")
        if "roc_curve" not in written:
            err.print("[yellow]warning:[/yellow] one class only: no ROC curve drawn")
        console.print(f"plots written to {', '.join(str(p) for p in written.values())}")
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(to_jsonable(report), indent=2) + "\n")
        console.print(f"report written to {json_out}")
