"""Stain test-time augmentation (``mitoscope classify --stain-tta``) on a training run's own validation slides.

For each hold-out RUN directory given (``mitoscope train classifier --out``), its model scores the patches of
its validation part (from the run's ``oof_predictions.csv``) on the 8 dihedral views of 5 stain variants (the
patch, and haematoxylin / eosin each 20 % lighter and darker: :data:`mitoscope.data.stain.STAIN_TTA_SCALES`),
once (:meth:`mitoscope.inference.classify.Classifier.member_view_probs`). Rows, all at the run's threshold:
``single`` (the patch as it is), ``tta`` (8 dihedral views, what ``classify --tta`` does), ``stain`` (the 5
stain variants), ``stain+tta`` (all 40 views, ``classify --tta --stain-tta``); mean logit over views.
With ``--atnorm-reference`` / ``--atnorm-candidate`` (one ``mitoscope evaluate classification --json`` per run,
of ``classify --tta`` and of ``classify --tta --stain-tta`` on the out-of-domain set) it also prints the verdict
of rule 19 (``benchmarks/results/classifier_stain_tta/RULE.md``): out of domain, balanced accuracy and AUROC
rise for every run, and on its own validation slides no run's AUROC falls by more than ``--max-drop``.

Run (CPU): ``python benchmarks/stain_tta.py runs/cpu_softauc_s0 runs/cpu_softauc_s1 --source ../shared/data/amibr
            --atnorm-reference R/seed{0,1}/atnorm_tta.json --atnorm-candidate R/seed{0,1}/atnorm_stain_tta.json
            --out R/validation.json``
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
from ensemble_rules import write_report
from mitoscope.inference.classify import merge_views
from mitoscope.metrics.classification import classification_report

METRICS = ("balanced_accuracy", "balanced_accuracy_ci", "auroc", "auroc_ci", "sensitivity", "specificity")


def view_rows(
    y: np.ndarray, probs: np.ndarray, threshold: float, n_bootstrap: int
) -> dict[str, dict[str, Any]]:
    """The four rows from one model's ``(N, 40)`` view probabilities (view ``8·s + d``)."""
    subsets = {
        "single": [0],
        "tta": list(range(8)),
        "stain": list(range(0, 40, 8)),
        "stain+tta": list(range(40)),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="hold-out RUN directories")
    parser.add_argument("--source", required=True, help="the labelled patches the runs were trained on")
    parser.add_argument("--part", default="val", choices=("val", "test"), help="which records of fold 0")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--atnorm-reference", nargs="*", type=Path, default=[], help="evaluate JSONs of --tta"
    )
    parser.add_argument("--atnorm-candidate", nargs="*", type=Path, default=[], help="of --tta --stain-tta")
    parser.add_argument("--max-drop", type=float, default=0.005, help="validation AUROC a run may lose")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from mitoscope.data.sources import load_catalog
    from mitoscope.inference.classify import Classifier

    catalog = load_catalog(args.source)
    table: dict[str, Any] = {}
    print(f"{'run':<28} {'row':<10} {'BA':>6} {'AUROC':>6} {'sens.':>6} {'spec.':>6}")
    for run in args.runs:
        records = run_records(run, catalog, 0, args.part, args.source)
        clf = Classifier.from_path(run, stain_tta=True)
        t0 = time.perf_counter()
        probs = clf.member_view_probs(records)[:, 0, :]
        seconds = time.perf_counter() - t0
        rows = view_rows(records["target"].to_numpy(), probs, clf.threshold, args.bootstrap)
        table[str(run)] = {
            "n": len(records),
            "threshold": clf.threshold,
            "seconds_40_views": seconds,
            "rows": rows,
        }
        for name, m in rows.items():
            print(
                f"{run!s:<28} {name:<10} {m['balanced_accuracy']:6.3f} {m['auroc']:6.3f} "
                f"{m['sensitivity']:6.3f} {m['specificity']:6.3f}",
                flush=True,
            )
    report = {
        "benchmark": "stain_tta",
        "source": args.source,
        "part": args.part,
        "command": " ".join(sys.argv),
    }
    write_report(args.out, {**report, "runs": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
