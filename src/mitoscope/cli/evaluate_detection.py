"""``mitoscope evaluate detection``: MIDOG F1 (and AP) of ``mitoscope detect`` outputs against MIDOG++ labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mitoscope.cli.errors import fail

GROUP_COLUMNS = ("tumor", "scanner", "origin", "species", "domain")


def _stem(name: str) -> str:
    from mitoscope.cli.detect import slide_name

    return slide_name(Path(str(name)))


def find_gt_json(path: Path) -> Path:
    """``path`` itself, or the MIDOG++-format JSON inside a directory (``annotations.json`` or the only JSON)."""
    from mitoscope.utils.errors import InputError

    if path.is_file():
        return path
    if path.is_dir():
        if (path / "annotations.json").is_file():
            return path / "annotations.json"
        found = sorted(p for p in path.glob("*.json") if not p.name.endswith(".done.json"))
        if len(found) == 1:
            return found[0]
        raise InputError(f"expected one MIDOG++ JSON in the folder, found {len(found)}", path=path)
    raise InputError("ground truth not found", path=path)


def read_predictions(path: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Per-slide prediction tables from a ``detect`` output folder (or one CSV), and the mpp of each slide."""
    import pandas as pd

    from mitoscope.utils.errors import InputError

    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv") if not p.name.startswith("."))
        if not files:
            raise InputError("no per-slide CSV files in the prediction folder", path=path)
    elif path.is_file():
        files = [path]
    else:
        raise InputError("predictions not found", path=path)
    tables: dict[str, Any] = {}
    mpps: dict[str, float] = {}
    for f in files:
        try:
            frame = pd.read_csv(f, dtype={"slide": str, "label": str, "class": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read CSV ({exc})", path=f) from exc
        for col in ("x", "y"):
            if col not in frame.columns:
                raise InputError(f"no {col!r} column (columns: {list(frame.columns)})", path=f)
        if "slide" in frame.columns and frame["slide"].notna().any():
            groups = {str(k): g for k, g in frame.groupby(frame["slide"].astype(str), sort=False)}
        else:
            groups = {f.stem: frame}
        if path.is_dir() and not len(frame):
            groups = {f.stem: frame}
        for name, table in groups.items():
            key = _stem(name)
            if key in tables:
                raise InputError(f"predictions for slide {key!r} appear twice", path=f)
            tables[key] = table.reset_index(drop=True)
            marker = f.with_name(f"{f.stem}.done.json")
            if marker.is_file():
                try:
                    mpps[key] = float(json.loads(marker.read_text(encoding="utf-8"))["mpp"])
                    continue
                except (ValueError, KeyError, TypeError):
                    pass
            if "x_mm" in table.columns and len(table) and float(table["x"].abs().max()) > 0:
                row = table.loc[table["x"].abs().idxmax()]
                mpps[key] = float(row["x_mm"]) * 1000.0 / float(row["x"])
    return tables, mpps


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
    json_out: Path | None = typer.Option(None, "--json", help="Write the scores as JSON here."),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Score threshold for F1 (default: the labels the detector wrote)."
    ),
    mpp: float | None = typer.Option(
        None, "--mpp", help="µm/px of the coordinates (default: from the outputs, else 0.25)."
    ),
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

    err = Console(stderr=True)
    console = Console()
    try:
        result = _evaluate(pred, gt, radius_um=radius_um, by=by, threshold=threshold, mpp=mpp,
                           xvalidation=xvalidation, tune_threshold=tune_threshold)  # fmt: skip
    except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
        fail(exc)
    for note in result["notes"]:
        err.print(note, highlight=False, soft_wrap=True)
    console.print(_table(result))
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


def _evaluate(
    pred: Path,
    gt: Path,
    *,
    radius_um: float,
    by: str | None,
    threshold: float | None,
    mpp: float | None,
    xvalidation: Path | None,
    tune_threshold: bool,
) -> dict[str, Any]:
    import math

    import pandas as pd

    from mitoscope.io.midogpp import read_midogpp_json
    from mitoscope.metrics.detection import best_threshold, froc, summarize

    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"--by must be one of {', '.join(GROUP_COLUMNS)}, got {by!r}")
    gt_path = find_gt_json(gt)
    catalog = read_midogpp_json(gt_path, xvalidation_csv=xvalidation)
    images = dict(catalog.attrs.get("images", {}))
    for name in catalog["slide"].unique() if len(catalog) else []:
        images.setdefault(name, {})
    predictions, pred_mpp = read_predictions(pred)
    if threshold is not None:  # the threshold re-decides every candidate; the labels written are ignored
        predictions = {k: v.drop(columns=["label"], errors="ignore") for k, v in predictions.items()}
    notes: list[str] = []
    gt_by_key = {_stem(name): name for name in images}
    missing = sorted(k for k in gt_by_key if k not in predictions)
    extra = sorted(k for k in predictions if k not in gt_by_key)
    if missing:
        notes.append(
            f"warning: no predictions for {len(missing)} ground-truth slide(s), not scored: {missing[:5]}"
        )
    if extra:
        notes.append(
            f"warning: predictions for {len(extra)} slide(s) not in the ground truth, ignored: {extra[:5]}"
        )
    keys = sorted(k for k in gt_by_key if k in predictions)
    if not keys:
        raise ValueError(f"{pred}: no predicted slide matches a slide of {gt_path}")
    empty_gt = pd.DataFrame({"x": [], "y": [], "label": []})
    per_image = {}
    for k in keys:
        rows = catalog[catalog["slide"] == gt_by_key[k]] if len(catalog) else empty_gt
        per_image[k] = (predictions[k], rows)
    mpps: dict[str, float] = {}
    for k in keys:
        mpps[k] = float(mpp) if mpp is not None else pred_mpp.get(k, math.nan)
    if any(math.isnan(v) for v in mpps.values()):
        notes.append("note: µm/px not found for some slides; assuming 0.25 (use --mpp)")
        mpps = {k: (0.25 if math.isnan(v) else v) for k, v in mpps.items()}
    groups = None
    if by is not None:
        groups = {}
        for k in keys:
            rows = per_image[k][1]
            value = ""
            if by in rows.columns and len(rows):
                value = str(rows[by].iloc[0])
            elif by == "tumor":
                value = str(images.get(gt_by_key[k], {}).get("tumor", ""))
            groups[k] = value or "unknown"
    table = summarize(per_image, radius_um=radius_um, mpp=mpps, threshold=threshold, groups=groups)
    result: dict[str, Any] = {
        "ground_truth": str(gt_path),
        "predictions": str(pred),
        "radius_um": radius_um,
        "threshold": threshold,
        "slides": len(keys),
        "missing_predictions": missing,
        "overall": table.iloc[0].drop("group").to_dict(),
        "groups": {str(r["group"]): r.drop("group").to_dict() for _, r in table.iloc[1:].iterrows()},
        "by": by,
        "notes": notes,
    }
    if tune_threshold:
        t, score = best_threshold(per_image, radius_um=radius_um, mpp=mpps)
        result["best_threshold"] = {"threshold": t, **score.to_dict()}
    curve = froc(per_image, radius_um=radius_um, mpp=mpps, max_thresholds=64)
    result["froc"] = curve[["threshold", "sensitivity", "fp_per_image"]].to_dict("records")
    return result


def _table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(
        title=f"MIDOG detection scores (hit radius {result['radius_um']:g} µm, counts pooled over slides)",
        caption="AP: boxes of ±1.5 × radius, IoU ≥ 0.5, COCO 101-point interpolation, all candidates by score",
    )
    table.add_column(result["by"] or "group")
    for col in ("slides", "TP", "FP", "FN", "precision", "recall", "F1", "AP"):
        table.add_column(col, justify="right")
    rows = [("overall", result["overall"]), *result["groups"].items()]
    for name, r in rows:
        ap = r["ap"]
        table.add_row(
            name,
            str(int(r["images"])),
            str(int(r["tp"])),
            str(int(r["fp"])),
            str(int(r["fn"])),
            f"{r['precision']:.4f}",
            f"{r['recall']:.4f}",
            f"{r['f1']:.4f}",
            "–" if ap != ap else f"{ap:.4f}",
        )
    return table
