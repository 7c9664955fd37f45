"""``mitoscope evaluate classification``: score atypical/normal predictions against a labelled source."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli.errors import fail


def _fmt(value: Any, ci: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.3f}"
    if ci and not any(isinstance(v, float) and math.isnan(v) for v in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def _table(report: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("set", "n", "atypical", "bal. acc. [95% CI]", "AUROC [95% CI]", "sens.", "spec.", "F1"):
        table.add_column(col, justify="left" if col == "set" else "right")

    def row(name: str, r: dict[str, Any]) -> None:
        table.add_row(
            name,
            str(r["n"]),
            str(r["n_atypical"]),
            _fmt(r["balanced_accuracy"], r.get("balanced_accuracy_ci")),
            _fmt(r["auroc"], r.get("auroc_ci")),
            _fmt(r["sensitivity"]),
            _fmt(r["specificity"]),
            _fmt(r["f1"]),
        )

    row("all", report)
    for name, sub in report.get("groups", {}).items():
        row(name or "(none)", sub)
    return table


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


LOCAL_THRESHOLD_MIN_PER_CLASS = 40
"""Labelled patches of each class from which a local threshold beat the transferred one in >= 90 % of draws on
AtNorM-MD for the recipe's models (``benchmarks/local_threshold.py``)."""


def _chosen_threshold(targets: Any, probs: Any) -> dict[str, Any]:
    """The balanced-accuracy-maximising threshold on ``(targets, probs)`` and the metrics at it."""
    from mitoscope.engine.crossval import choose_threshold
    from mitoscope.metrics.classification import classification_report

    if len(set(targets.tolist())) < 2:
        raise ValueError("--choose-threshold needs both atypical and normal labels")
    at = classification_report(targets, probs, threshold=choose_threshold(targets, probs))
    chosen = {k: at[k] for k in ("threshold", "balanced_accuracy", "sensitivity", "specificity")}
    chosen["fewest_of_a_class"] = int(min(targets.sum(), len(targets) - targets.sum()))
    return chosen


def _expert_agreement(scored: Any, decisions: Any) -> dict[str, Any]:
    """The model and each expert against the other experts' majority, and the model on unanimous/disputed
    records (:mod:`mitoscope.metrics.agreement`)."""
    from mitoscope.data.datasets import expert_matrix
    from mitoscope.metrics.agreement import agreement_table, by_agreement

    votes = expert_matrix(scored.joined["experts"])
    if votes.shape[1] < 3:
        raise ValueError(f"--experts needs the votes of at least 3 experts; the truth has {votes.shape[1]}")
    table = agreement_table(votes, {"model": (decisions, scored.probs)})
    table["by_agreement"] = by_agreement(scored.targets, votes, decisions, scored.probs)
    return table


def _print_expert_agreement(console: Any, agreement: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="against the majority of the other experts (ties left out)")
    for col in ("who", "n", "atypical", "bal. acc."):
        table.add_column(col, justify="left" if col == "who" else "right")
    for name, row in agreement["experts"].items():
        table.add_row(name, str(row["n"]), str(row["n_atypical"]), _fmt(row["balanced_accuracy"]))
    table.add_row("experts' mean", "", "", _fmt(agreement["experts_mean_balanced_accuracy"]))
    model = agreement["models"]["model"]
    table.add_row("model (mean over the references)", "", "", _fmt(model["balanced_accuracy"]))
    console.print(table)
    parts = agreement["by_agreement"]
    console.print(
        "the model against the label: "
        + "; ".join(
            f"{name} records {_fmt(r['balanced_accuracy'])} (n = {r['n']}, {r['n_atypical']} atypical)"
            for name, r in parts.items()
        ),
        highlight=False,
    )


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
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON here."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Threshold on p_atypical (default: the CSV's per-row threshold column, else its label column, "
        "else 0.5).",
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

    from mitoscope.metrics.classification import classification_report
    from mitoscope.metrics.scored import read_scored_predictions
    from mitoscope.utils.atomic import write_text_atomic

    console = Console()
    err = Console(stderr=True)
    try:
        scored = read_scored_predictions(predictions, truth)
        joined = scored.joined
        if by is not None and by not in joined.columns:
            raise ValueError(f"--by {by!r} is not a catalog column; choose from {list(joined.columns)}")
        preds = scored.label_decisions() if threshold is None else None
        report = classification_report(
            scored.targets,
            scored.probs,
            threshold=0.5 if threshold is None else threshold,
            preds=preds,
            groups=None if by is None else joined[by].astype(str).tolist(),
            n_bootstrap=bootstrap,
            seed=seed,
        )
        if choose:
            report["chosen_threshold"] = _chosen_threshold(scored.targets, scored.probs)
        if experts:
            decisions = preds if preds is not None else (scored.probs >= report["threshold"]).astype(int)
            report["expert_agreement"] = _expert_agreement(scored, decisions)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(exc)

    unmatched = scored.unmatched
    report["decision"] = (
        scored.decision_source if preds is not None else f"p_atypical >= {report['threshold']:g}"
    )
    report["n_predictions"] = scored.n_predictions
    report["n_unmatched_predictions"] = len(unmatched)
    report["n_truth_without_prediction"] = scored.n_truth - len(joined)
    console.print(_table(report, f"{predictions.name} vs {truth.name} ({report['decision']})"))
    if choose:
        c = report["chosen_threshold"]
        console.print(
            f"Threshold that maximises balanced accuracy on these labels: {c['threshold']:.4g} "
            f"(balanced accuracy {_fmt(c['balanced_accuracy'])}, sensitivity {_fmt(c['sensitivity'])}, "
            f"specificity {_fmt(c['specificity'])}; optimistic here, as it was chosen on them). "
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
        _print_expert_agreement(console, report["expert_agreement"])
    if len(unmatched):
        err.print(f"[yellow]warning:[/yellow] {len(unmatched)} prediction(s) match no labelled record")
    if report["n_truth_without_prediction"]:
        err.print(
            f"[yellow]warning:[/yellow] {report['n_truth_without_prediction']} labelled record(s) have no prediction"
        )
    if plots is not None:
        from mitoscope.report.classification_plots import write_classification_plots

        try:
            written = write_classification_plots(
                scored.targets,
                scored.probs,
                plots,
                preds=preds,
                threshold=report["threshold"] if preds is None else 0.5,
            )
        except (ValueError, OSError) as exc:
            fail(exc, prefix=f"--plots {plots}: ")
        if "roc_curve" not in written:
            err.print("[yellow]warning:[/yellow] one class only: no ROC curve drawn")
        console.print(f"plots written to {', '.join(str(p) for p in written.values())}")
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(_json_safe(report), indent=2) + "\n")
        console.print(f"report written to {json_out}")
