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


def print_dataset_summary(summary: dict[str, Any]) -> None:
    """``data info`` of a dataset: counts per class and domain, subclasses, the experts' agreement."""
    from rich.console import Console

    console = Console()
    console.print(f"[bold]{summary['path']}[/]  format [cyan]{summary['format']}[/]")
    head = Table(show_header=False, box=None)
    for key in ("rows", "images", "slides", "groups", "hard"):
        head.add_row(key if key != "hard" else "hard (experts disagree)", str(summary[key]))
    for name, n in summary.get("splits", {}).items():
        head.add_row(f"split {name}", str(n))
    console.print(head)
    labels = list(summary["labels"])
    table = Table(title="records per class and domain")
    table.add_column("domain")
    for lab in labels:
        table.add_column(lab, justify="right")
    table.add_column("total", justify="right")
    for dom, counts in summary["domains"].items():
        table.add_row(dom, *(str(counts.get(lab, 0)) for lab in labels), str(sum(counts.values())))
    table.add_row("[bold]all[/]", *(f"[bold]{summary['labels'][lab]}[/]" for lab in labels),
                  f"[bold]{summary['rows']}[/]")  # fmt: skip
    console.print(table)
    if summary["subclasses"]:
        sub = Table(title="subclasses")
        sub.add_column("subclass")
        sub.add_column("records", justify="right")
        for name, n in summary["subclasses"].items():
            sub.add_row(name, str(n))
        console.print(sub)
    experts = summary["experts"]
    if experts["items_with_votes"]:
        agree = Table(title=f"experts' agreement (Fleiss' κ = {fmt_value(experts['fleiss_kappa'])})")
        for col in ("pair", "items", "agreement", "Cohen's κ"):
            agree.add_column(col, justify="left" if col == "pair" else "right")
        for row in experts["pairwise"]:
            agree.add_row(
                str(row["pair"]),
                str(row["items"]),
                fmt_value(row["agreement"]),
                fmt_value(row["cohen_kappa"]),
            )
        console.print(agree)
    if summary["skipped"]:
        console.print(f"[yellow]skipped {len(summary['skipped'])} bad rows[/]")
        for item in summary["skipped"][:10]:
            console.print(f"  row {item['row']}: {item['problem']}", highlight=False)


def slide_summary_text(summary: dict[str, Any], tiles_note: str) -> str:
    """``data info`` of a slide: size, µm/px, levels, tissue and the detector's tiles, as lines of text."""
    lines = [f"{summary['path']}  slide: {summary['format']}, read by {summary['backend']}"]
    w, h = summary["width"], summary["height"]
    mm_w, mm_h = summary["size_mm"]
    lines.append(f"  size            {w} × {h} px ({mm_w:.3g} × {mm_h:.3g} mm)")
    lines.append(f"  µm/px           {summary['mpp']:g} {summary['mpp_source']}")
    for lv in summary["levels"]:
        lines.append(
            f"  {'levels' if lv['level'] == 0 else '':<15} {lv['level']}: {lv['width']} × {lv['height']} px, "
            f"downsample {lv['downsample']:g} ({lv['mpp']:.3g} µm/px)"
        )
    t = summary["tissue"]
    lines.append(
        f"  tissue          {t['area_mm2']:.3g} mm² ({t['fraction']:.0%} of the slide; mask "
        f"{t['mask_width']} × {t['mask_height']} px at {t['mask_mpp']:.3g} µm/px)"
    )
    tiles = summary.get("tiles")
    if tiles:
        lines.append(
            f"  detector tiles  {tiles['on_tissue']} of {tiles['total']} would run ({tiles['fraction']:.0%}): "
            f"{tiles['size']} px at {tiles['mpp']:g} µm/px, overlap {tiles['overlap']} px, "
            f"≥ {tiles['min_tissue']:.0%} tissue per tile ({tiles_note})"
        )
    return "\n".join(lines)
