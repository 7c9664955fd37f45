"""Test-time batch-norm adaptation (AdaBN) in domain: each fold model of a CV run on its own test fold.

For every ``fold_k/model.pt`` of a cross-validation run (``mitoscope train classifier --set
cv.scheme=group_kfold``), the patches of its test part (from the run's ``oof_predictions.csv``) are scored on
the 8 dihedral views, once as trained and once per ``--variants`` after re-estimating the batch-norm
statistics on those same patches (``trained``: the trained layers' batch norms, what ``mitoscope classify
--adapt-bn`` does; ``all``: frozen stages too). Rows: one model at its own validation threshold, without and
with TTA (:func:`ensemble_rules.rows_for`), per fold and the mean over folds. A same-domain set should lose
nothing by adaptation; this is the check that it does not.

Run (CPU): ``python benchmarks/adapt_bn_folds.py runs/cpu_lite0_cv5 --source ../shared/data/amibr
            --out benchmarks/results/classifier_adabn/amibr_test_folds.json``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench_helpers import member_view_probs  # benchmarks/ (scripts run from this folder)
from ensemble_rules import (
    rows_for,
    write_report,
)

ROWS = ("fold0", "fold0+tta")


def run_records(run: Path, catalog: pd.DataFrame, fold: int, part: str, source: str) -> pd.DataFrame:
    """The records of ``catalog`` that fold ``fold`` of ``run`` had in ``part`` (``"val"`` or ``"test"``), from
    the run's ``oof_predictions.csv``."""
    oof = pd.read_csv(run / "oof_predictions.csv")
    wanted = {str(Path(f).resolve()) for f in oof.loc[(oof["fold"] == fold) & (oof["part"] == part), "image"]}
    resolved = pd.Series([str(Path(f).resolve()) for f in catalog["image"]], index=catalog.index)
    records = catalog[resolved.isin(wanted)]
    if len(records) != len(wanted) or not wanted:
        raise ValueError(
            f"{run}: fold {fold} has {len(wanted)} {part} patches, {len(records)} found in {source}"
        )
    return records


def fold_scores(run: Path, source: str, variants: list[str], n_bootstrap: int) -> dict[str, dict[str, dict]]:
    """``{fold: {variant: {row: metrics}}}`` for every fold model of ``run``."""
    from mitoscope.data.sources import load_catalog
    from mitoscope.inference.classify import Classifier

    catalog = load_catalog(source)
    table: dict[str, dict[str, dict]] = {}
    for model_path in sorted(run.glob("fold_*/model.pt")):
        fold = int(model_path.parent.name.split("_")[1])
        test = run_records(run, catalog, fold, "test", source)
        y = test["target"].to_numpy()
        table[f"fold_{fold}"] = {}
        for variant in ["none", *variants]:
            t0 = time.perf_counter()
            clf = Classifier.from_path(model_path, fuse_batchnorm=variant == "none")
            if variant != "none":
                clf.adapt_batchnorm(test, include_frozen=variant == "all")
            probs = member_view_probs(clf, test)
            rows = rows_for(y, probs, clf.ensemble.member_thresholds, clf.threshold, n_bootstrap)
            table[f"fold_{fold}"][variant] = {r: rows[r] for r in ROWS}
            m = rows["fold0+tta"]
            print(
                f"fold {fold} ({len(test)} patches) {variant:<8} TTA: balanced accuracy "
                f"{m['balanced_accuracy']:.3f}, AUROC {m['auroc']:.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return table


def fold_means(table: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean balanced accuracy and AUROC over folds, per variant and row."""
    variants = next(iter(table.values())).keys()
    return {
        v: {
            row: {
                metric: float(np.mean([folds[v][row][metric] for folds in table.values()]))
                for metric in ("balanced_accuracy", "auroc")
            }
            for row in ROWS
        }
        for v in variants
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a cross-validation RUN directory")
    parser.add_argument("--source", required=True, help="the labelled patches the run was trained on")
    parser.add_argument("--variants", nargs="+", choices=("trained", "all"), default=["trained", "all"])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    table = fold_scores(args.run, args.source, args.variants, args.bootstrap)
    means = fold_means(table)
    print(f"mean of {len(table)} test folds (one model, own threshold)")
    print(f"{'adaptation':<10} {'BA':>6} {'AUROC':>6} {'BA+TTA':>7} {'AUROC+TTA':>9}")
    for v, rows in means.items():
        a, b = rows["fold0"], rows["fold0+tta"]
        print(
            f"{v:<10} {a['balanced_accuracy']:6.3f} {a['auroc']:6.3f} {b['balanced_accuracy']:7.3f} {b['auroc']:9.3f}"
        )
    report = {
        "benchmark": "adapt_bn_folds",
        "run": str(args.run),
        "source": args.source,
        "command": " ".join(sys.argv),
        "folds": table,
        "mean": means,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
