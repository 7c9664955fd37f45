"""Verdict of a two-seed recipe rule (rules 14-18 in benchmarks/README.md) from saved run results.

Each run folder holds what the rule's commands wrote: ``cv_summary.json`` (``mitoscope train classifier``; the
validation split's metrics), ``atnorm_tta.json`` (``mitoscope evaluate classification`` of ``classify --tta`` on
AtNorM-MD) and ``time.txt`` (``/usr/bin/time -v`` of the training). A candidate is adopted only if ALL hold, over
the seeds' means: AtNorM-MD + TTA AUROC rises, AtNorM-MD + TTA balanced accuracy rises, validation AUROC does not
fall; and each candidate training takes at most ``--max-slowdown`` longer wall than the same-seed reference
(or, with ``--budget-min``, at most that many minutes). Where every run folder also holds the training's
``history.csv``, the mean training seconds per epoch of each candidate over its same-seed reference is reported
(not judged): it separates an option's cost from a different number of epochs.

    python benchmarks/recipe_rule.py --candidate benchmarks/results/classifier_soft_labels/soft_seed{0,1} \
        --reference benchmarks/results/classifier_recipe_equal_error benchmarks/results/classifier_soft_labels/recipe_seed1 \
        --json benchmarks/results/classifier_soft_labels/verdict.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from statistics import mean

WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")


def wall_seconds(time_file: Path) -> float:
    """Wall seconds from a ``/usr/bin/time -v`` report (``m:ss.ss`` or ``h:mm:ss``)."""
    found = WALL.findall(time_file.read_text(errors="replace"))
    if not found:
        raise SystemExit(f"{time_file}: no '/usr/bin/time -v' wall-clock line")
    seconds = 0.0
    for part in found[-1].split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def epoch_train_seconds(history: Path) -> float:
    """Mean ``train_time_s`` over the epochs of a training's ``history.csv``."""
    with history.open(newline="") as handle:
        seconds = [float(row["train_time_s"]) for row in csv.DictReader(handle)]
    if not seconds:
        raise SystemExit(f"{history}: no epochs")
    return mean(seconds)


def read_run(folder: Path) -> dict[str, float]:
    """Validation AUROC / balanced accuracy, AtNorM-MD + TTA AUROC / balanced accuracy, training wall and, where
    ``history.csv`` is there, the mean training seconds per epoch."""
    for name in ("cv_summary.json", "atnorm_tta.json", "time.txt"):
        if not (folder / name).is_file():
            raise SystemExit(f"{folder}: missing {name}")
    folds = json.loads((folder / "cv_summary.json").read_text())["folds"]
    if len(folds) != 1:
        raise SystemExit(f"{folder}/cv_summary.json: {len(folds)} folds, a hold-out run has one")
    val = next(iter(folds.values()))
    atnorm = json.loads((folder / "atnorm_tta.json").read_text())
    run = {
        "val_balanced_accuracy": val["balanced_accuracy"],
        "val_auroc": val["auroc"],
        "threshold": val["threshold"],
        "atnorm_tta_balanced_accuracy": atnorm["balanced_accuracy"],
        "atnorm_tta_auroc": atnorm["auroc"],
        "wall_s": wall_seconds(folder / "time.txt"),
        "epochs_run": float(val["epochs_run"]),
    }
    if (folder / "history.csv").is_file():
        run["epoch_train_s"] = epoch_train_seconds(folder / "history.csv")
    return run


def verdict(
    candidates: list[dict[str, float]],
    references: list[dict[str, float]],
    max_slowdown: float,
    budget_min: float | None = None,
) -> dict:
    """The rule's four checks and whether all hold. The time check: each candidate at most ``max_slowdown``
    longer than its same-seed reference or, with ``budget_min``, each candidate within that many minutes."""

    def avg(runs: list[dict[str, float]], key: str) -> float:
        return mean(r[key] for r in runs)

    checks = {
        "atnorm_tta_auroc_rises": avg(candidates, "atnorm_tta_auroc") > avg(references, "atnorm_tta_auroc"),
        "atnorm_tta_balanced_accuracy_rises": avg(candidates, "atnorm_tta_balanced_accuracy")
        > avg(references, "atnorm_tta_balanced_accuracy"),
        "val_auroc_does_not_fall": avg(candidates, "val_auroc") >= avg(references, "val_auroc"),
        "training_time_within_limit": all(
            c["wall_s"] <= (1 + max_slowdown) * r["wall_s"]
            if budget_min is None
            else c["wall_s"] <= 60 * budget_min
            for c, r in zip(candidates, references, strict=True)
        ),
    }
    keys = (
        "val_balanced_accuracy",
        "val_auroc",
        "atnorm_tta_balanced_accuracy",
        "atnorm_tta_auroc",
        "wall_s",
        "epochs_run",
    )
    timed = all("epoch_train_s" in r for r in (*candidates, *references))
    return {
        "epoch_train_ratio": [
            c["epoch_train_s"] / r["epoch_train_s"] for c, r in zip(candidates, references, strict=True)
        ]
        if timed
        else None,
        "candidate_mean": {k: avg(candidates, k) for k in keys},
        "reference_mean": {k: avg(references, k) for k in keys},
        "checks": checks,
        "adopt": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", nargs="+", type=Path, required=True, help="run folders, one per seed")
    parser.add_argument("--reference", nargs="+", type=Path, required=True, help="same seeds, same order")
    parser.add_argument(
        "--max-slowdown", type=float, default=0.05, help="allowed extra training wall (0.05 = 5 %%)"
    )
    parser.add_argument(
        "--budget-min",
        type=float,
        help="time check: each candidate training within this many minutes (instead of --max-slowdown)",
    )
    parser.add_argument("--json", type=Path, help="write the runs and the verdict here")
    args = parser.parse_args(argv)
    if len(args.candidate) != len(args.reference):
        parser.error("give one reference per candidate run (same seeds, same order)")
    candidates = [read_run(p) for p in args.candidate]
    references = [read_run(p) for p in args.reference]
    result = verdict(candidates, references, args.max_slowdown, args.budget_min)

    header = "| run | val bal. acc. | val AUROC | threshold | AtNorM+TTA bal. acc. | AtNorM+TTA AUROC | train wall |"
    print(header + " epochs |\n" + "| --- " * 8 + "|")
    for label, folders, runs in (
        ("candidate", args.candidate, candidates),
        ("reference", args.reference, references),
    ):
        for folder, r in zip(folders, runs, strict=True):
            print(
                f"| {label} {folder.name} | {r['val_balanced_accuracy']:.3f} | {r['val_auroc']:.3f} | "
                f"{r['threshold']:.3f} | {r['atnorm_tta_balanced_accuracy']:.3f} | {r['atnorm_tta_auroc']:.3f} | "
                f"{r['wall_s'] / 60:.1f} min | {r['epochs_run']:.0f} |"
            )
    for label in ("candidate", "reference"):
        m = result[f"{label}_mean"]
        print(
            f"| {label} mean | {m['val_balanced_accuracy']:.3f} | {m['val_auroc']:.3f} | | "
            f"{m['atnorm_tta_balanced_accuracy']:.3f} | {m['atnorm_tta_auroc']:.3f} | {m['wall_s'] / 60:.1f} min | |"
        )
    if result["epoch_train_ratio"] is not None:
        ratios = ", ".join(f"{x:.2f}x" for x in result["epoch_train_ratio"])
        print(f"training seconds per epoch, candidate / same-seed reference (reported, not judged): {ratios}")
    for name, ok in result["checks"].items():
        print(f"{name}: {'yes' if ok else 'NO'}")
    print("adopt" if result["adopt"] else "not met: keep the recipe")
    if args.json:
        saved = {
            "candidate": dict(zip(map(str, args.candidate), candidates, strict=True)),
            "reference": dict(zip(map(str, args.reference), references, strict=True)),
        }
        args.json.write_text(json.dumps({"runs": saved, **result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
