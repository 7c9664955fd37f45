"""How the commands show results in the terminal: rich tables and summary lines (no computation here)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table


def fmt(value: Any, ci: Any = None) -> str:
    """A metric with three decimals (``–`` for missing), with its confidence interval when given.

    Examples:
        >>> fmt(0.51234, (0.4, 0.6)), fmt(float("nan")), fmt(None)
        ('0.512 [0.400, 0.600]', '–', '–')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.3f}"
    if ci and not any(isinstance(v, float) and math.isnan(v) for v in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def fmt_value(value: Any) -> str:
    """A float with three decimals, anything else as it is (``–`` for missing).

    Examples:
        >>> fmt_value(0.5), fmt_value(3), fmt_value(None)
        ('0.500', '3', '–')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def detection_table(result: dict[str, Any]) -> Table:
    """The MIDOG scores of ``evaluate detection``: one row overall, one per group."""
    table = Table(
        title=f"MIDOG detection scores (hit radius {result['radius_um']:g} µm, counts pooled over slides)",
        caption="AP: boxes of ±1.5 × radius, IoU ≥ 0.5, COCO 101-point interpolation, all candidates by score",
    )
    table.add_column(result["by"] or "group")
    for col in ("slides", "TP", "FP", "FN", "precision", "recall", "F1", "AP"):
        table.add_column(col, justify="right")
    for name, r in [("overall", result["overall"]), *result["groups"].items()]:
        ap = r["ap"]
        table.add_row(
            name, str(int(r["images"])), str(int(r["tp"])), str(int(r["fp"])), str(int(r["fn"])),
            f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", "–" if ap != ap else f"{ap:.4f}",
        )  # fmt: skip
    return table


def classification_table(report: dict[str, Any], title: str) -> Table:
    """The scores of ``evaluate classification``: one row for all records, one per group."""
    table = Table(title=title)
    for col in ("set", "n", "atypical", "bal. acc. [95% CI]", "AUROC [95% CI]", "sens.", "spec.", "F1"):
        table.add_column(col, justify="left" if col == "set" else "right")

    def row(name: str, r: dict[str, Any]) -> None:
        table.add_row(
            name, str(r["n"]), str(r["n_atypical"]), fmt(r["balanced_accuracy"], r.get("balanced_accuracy_ci")),
            fmt(r["auroc"], r.get("auroc_ci")), fmt(r["sensitivity"]), fmt(r["specificity"]), fmt(r["f1"]),
        )  # fmt: skip

    row("all", report)
    for name, sub in report.get("groups", {}).items():
        row(name or "(none)", sub)
    return table


def print_expert_agreement(console: Any, agreement: dict[str, Any]) -> None:
    """The experts and the model against the other experts' majority; the model on (dis)agreed records."""
    table = Table(title="against the majority of the other experts (ties left out)")
    for col in ("who", "n", "atypical", "bal. acc."):
        table.add_column(col, justify="left" if col == "who" else "right")
    for name, row in agreement["experts"].items():
        table.add_row(name, str(row["n"]), str(row["n_atypical"]), fmt(row["balanced_accuracy"]))
    table.add_row("experts' mean", "", "", fmt(agreement["experts_mean_balanced_accuracy"]))
    model = agreement["models"]["model"]
    table.add_row("model (mean over the references)", "", "", fmt(model["balanced_accuracy"]))
    console.print(table)
    parts = agreement["by_agreement"]
    console.print(
        "the model against the label: "
        + "; ".join(
            f"{name} records {fmt(r['balanced_accuracy'])} (n = {r['n']}, {r['n_atypical']} atypical)"
            for name, r in parts.items()
        ),
        highlight=False,
    )


def cohort_table(cohort_csv: Path) -> Table:
    """The per-slide counts of ``analyze`` (from its cohort.csv)."""
    import pandas as pd

    frame = pd.read_csv(cohort_csv, keep_default_na=False, na_values=[""])
    t = Table(title="mitoscope analyze")
    for col in ("slide", "figures", "per mm²", "hotspot", "atypical", "fraction"):
        t.add_column(col, justify="left" if col == "slide" else "right")

    def f(v: object, digits: int = 2) -> str:
        try:
            x = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "-"
        return "-" if x != x else (str(int(x)) if x.is_integer() else f"{x:.{digits}f}")

    for _, r in frame.iterrows():
        if r["status"] != "ok":
            t.add_row(str(r["slide"]), "failed", "", "", "", "")
            continue
        t.add_row(
            str(r["slide"]), f(r["mitotic_count"]), f(r["density_per_mm2"]), f(r["hotspot_count"]),
            f(r["atypical_count"]), f(r["atypical_fraction"], 3),
        )  # fmt: skip
    return t
