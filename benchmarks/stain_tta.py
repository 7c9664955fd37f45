"""Stain test-time augmentation (``mitoscope classify --stain-tta``) on a training run's own validation slides.

For each hold-out RUN directory given (``mitoscope train classifier --out``), its model scores the patches of
its validation part (from the run's ``oof_predictions.csv``) on the 8 dihedral views of 5 stain variants (the
patch, and haematoxylin / eosin each 20 % lighter and darker: :data:`mitoscope.data.stain.STAIN_TTA_SCALES`),
once (``bench_helpers.member_view_probs``). Rows, all at the run's threshold:
``single`` (the patch as it is), ``tta`` (8 dihedral views, what ``classify --tta`` does), ``stain`` (the 5
stain variants), ``stain+tta`` (all 40 views, ``classify --tta --stain-tta``); mean logit over views.
With ``--atnorm-reference`` / ``--atnorm-candidate`` (one ``mitoscope evaluate classification --json`` per run,
of ``classify --tta`` and of ``classify --tta --stain-tta`` on the out-of-domain set) it also prints the verdict
of rule 19 (``benchmarks/results/classifier_stain_tta/RULE.md``): out of domain, balanced accuracy and AUROC
rise for every run, and on its own validation slides no run's AUROC falls by more than ``--max-drop``.

Run (CPU): ``python benchmarks/stain_tta.py runs/cpu_softauc_s0 runs/cpu_softauc_s1 --source ../shared/data/amibr
            --atnorm-reference S/seed{0,1}/atnorm_tta.json --atnorm-candidate R/seed{0,1}/atnorm_stain_tta.json
            --out R/validation.json`` (``--from-json R/validation.json`` instead of the runs: the verdict again
            from the saved rows, without scoring)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from adapt_bn_folds import run_records  # benchmarks/ (scripts run from this folder)
from bench_helpers import member_view_probs, merge_views
from ensemble_rules import write_report
from mitoscope.metrics.classification import classification_report

METRICS = ("balanced_accuracy", "balanced_accuracy_ci", "auroc", "auroc_ci", "sensitivity", "specificity")


def view_rows(
    y: np.ndarray, probs: np.ndarray, threshold: float, n_bootstrap: int
) -> dict[str, dict[str, Any]]:
    """The four rows from one model's ``(N, 8·S)`` view probabilities (view ``8·s + d``, stain variant 0 unchanged)."""
    n_views = probs.shape[1]
    subsets = {
        "single": [0],
        "tta": list(range(8)),
        "stain": list(range(0, n_views, 8)),
        "stain+tta": list(range(n_views)),
    }
    rows = {}
    for name, views in subsets.items():
        p = merge_views(probs[:, views])
        rep = classification_report(y, p, threshold=threshold, n_bootstrap=n_bootstrap)
        rows[name] = {k: rep[k] for k in METRICS if k in rep}
    return rows


def verdict(
    validation: dict[str, Any], reference: list[Path], candidate: list[Path], max_drop: float
) -> dict[str, Any]:
    """Rule 19's three checks per run (validation rows from :func:`view_rows`; out-of-domain evaluate JSONs)."""
    if not len(reference) == len(candidate) == len(validation):
        raise ValueError(
            f"{len(validation)} runs, {len(reference)} reference and {len(candidate)} candidate JSONs"
        )
    checks = []
    for (run, val), ref_path, cand_path in zip(validation.items(), reference, candidate, strict=True):
        ref, cand = (json.loads(p.read_text()) for p in (ref_path, cand_path))
        tta, stained = val["rows"]["tta"], val["rows"]["stain+tta"]
        checks.append(
            {
                "run": run,
                "ood_balanced_accuracy": [ref["balanced_accuracy"], cand["balanced_accuracy"]],
                "ood_auroc": [ref["auroc"], cand["auroc"]],
                "validation_auroc": [tta["auroc"], stained["auroc"]],
                "ood_balanced_accuracy_rises": cand["balanced_accuracy"] > ref["balanced_accuracy"],
                "ood_auroc_rises": cand["auroc"] > ref["auroc"],
                "validation_auroc_holds": stained["auroc"] >= tta["auroc"] - max_drop,
            }
        )
    met = all(c[k] for c in checks for k in c if k.endswith(("_rises", "_holds")))
    return {"met": met, "max_drop": max_drop, "runs": checks}


def score_runs(runs: list[Path], source: str, part: str, n_bootstrap: int) -> dict[str, Any]:
    """One 40-view pass over each run's ``part`` records: ``{run: {n, threshold, seconds_40_views, rows}}``."""
    from mitoscope.data.sources import load_catalog
    from mitoscope.inference.classify import Classifier

    catalog = load_catalog(source)
    table: dict[str, Any] = {}
    for run in runs:
        records = run_records(run, catalog, 0, part, source)
        clf = Classifier.from_path(run, stain_tta=True)
        t0 = time.perf_counter()
        probs = member_view_probs(clf, records)[:, 0, :]
        seconds = time.perf_counter() - t0
        rows = view_rows(records["target"].to_numpy(), probs, clf.threshold, n_bootstrap)
        table[str(run)] = {
            "n": len(records),
            "threshold": clf.threshold,
            "seconds_40_views": seconds,
            "rows": rows,
        }
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="hold-out RUN directories")
    parser.add_argument("--source", help="the labelled patches the runs were trained on")
    parser.add_argument("--part", default="val", choices=("val", "test"), help="which records of fold 0")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--from-json", type=Path, help="reuse the validation rows of an earlier --out")
    parser.add_argument(
        "--atnorm-reference", nargs="*", type=Path, default=[], help="evaluate JSONs of --tta"
    )
    parser.add_argument("--atnorm-candidate", nargs="*", type=Path, default=[], help="of --tta --stain-tta")
    parser.add_argument("--max-drop", type=float, default=0.005, help="validation AUROC a run may lose")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.from_json is None and not (args.runs and args.source):
        parser.error("give RUN directories and --source, or --from-json")

    if args.from_json is not None:
        table = json.loads(args.from_json.read_text())["runs"]
    else:
        table = score_runs(args.runs, args.source, args.part, args.bootstrap)
    print(f"{'run':<28} {'row':<10} {'BA':>6} {'AUROC':>6} {'sens.':>6} {'spec.':>6}")
    for run, entry in table.items():
        for name, m in entry["rows"].items():
            print(
                f"{run:<28} {name:<10} {m['balanced_accuracy']:6.3f} {m['auroc']:6.3f} "
                f"{m['sensitivity']:6.3f} {m['specificity']:6.3f}"
            )
    report = {"benchmark": "stain_tta", "part": args.part, "command": " ".join(sys.argv), "runs": table}
    if args.atnorm_reference or args.atnorm_candidate:
        report["verdict"] = verdict(table, args.atnorm_reference, args.atnorm_candidate, args.max_drop)
        for c in report["verdict"]["runs"]:
            (ba0, ba1), (au0, au1), (v0, v1) = (
                c["ood_balanced_accuracy"],
                c["ood_auroc"],
                c["validation_auroc"],
            )
            print(
                f"{c['run']}: out of domain BA {ba0:.4f} -> {ba1:.4f}, AUROC {au0:.4f} -> {au1:.4f}; "
                f"validation AUROC {v0:.4f} -> {v1:.4f}"
            )
        print(f"rule 19 {'met' if report['verdict']['met'] else 'not met'}")
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
