"""Which validation threshold transfers: the stored one, one chosen with TTA, or another rule?

``mitoscope classify --tta`` thresholds the mean logit of the 8 dihedral views at the threshold that training
chose on the *plain* (one-view) validation predictions (the arg-max of balanced accuracy). For every
``fold_k/model.pt`` of a run, this script predicts the fold's validation part (rebuilt from the run's
``config.yaml`` with :func:`mitoscope.engine.classifier_training.recipe_folds`, checked against ``oof_predictions.csv``) and
its test part on the 8 views, and scores the test predictions (``plain``: one view; ``tta``: mean logit of 8)
at thresholds chosen on the same model's validation predictions of the same kind:

* ``VIEW@stored``: the threshold in the model file (what ``classify`` / ``classify --tta`` do now);
* ``VIEW@RULE`` for each ``--rules`` (:func:`mitoscope.engine.crossval.choose_threshold` metrics, default
  ``balanced_accuracy`` and ``equal_error``), chosen on this script's validation predictions.

Per fold, pooled out of fold (each fold at its own threshold), and the mean over folds. ``--external SOURCE``
also scores every fold model on another labelled set (e.g. AtNorM-MD). Hold-out runs (no test part) give
external rows only. ``--merge EARLIER.json`` adds the test folds of an earlier report of the same split whose
models are gone (run directories do not travel between machines); the pooled out-of-fold balanced accuracy then
comes from each fold's confusion counts (sensitivity x positives, specificity x negatives), without AUROC.

Run (CPU): ``python benchmarks/threshold_rules.py runs/cpu_lite0_cv5 --source ../shared/data/amibr
            --out benchmarks/results/classifier_threshold_rules/cv5.json``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench_helpers import member_view_probs, merge_views  # benchmarks/ (scripts run from this folder)
from ensemble_rules import write_report
from mitoscope.engine.crossval import choose_threshold

VIEWS = ("plain", "tta")


def _resolved(images: pd.Series) -> np.ndarray:
    return np.array([str(Path(f).resolve()) for f in images])


def _run_folds(run: Path, catalog: pd.DataFrame) -> list[Any]:
    """The folds the run's ``config.yaml`` makes of ``catalog`` (the split training used)."""
    from mitoscope.engine.classifier_training import recipe_folds
    from mitoscope.engine.config import ClassifierConfig, load_config

    return recipe_folds(load_config(run / "config.yaml", ClassifierConfig), catalog)


def fold_parts(run: Path, catalog: pd.DataFrame) -> dict[int, dict[str, pd.DataFrame]]:
    """``{fold: {"val": rows, "test": rows}}`` of the run's folds, rebuilt as training made them."""
    folds = _run_folds(run, catalog)
    oof = pd.read_csv(run / "oof_predictions.csv")
    images = _resolved(catalog["image"])
    parts: dict[int, dict[str, pd.DataFrame]] = {}
    for fold in folds:
        if not (run / f"fold_{fold.index}" / "model.pt").is_file():
            continue
        parts[fold.index] = {"val": catalog.iloc[fold.val], "test": catalog.iloc[fold.test]}
        for part in ("val", "test"):
            saved = oof.loc[(oof["fold"] == fold.index) & (oof["part"] == part), "image"]
            if len(saved) and set(_resolved(saved)) != set(images[getattr(fold, part)]):
                raise ValueError(f"{run}: fold {fold.index} {part} part differs from the one training used")
    return parts


def test_class_counts(run: Path, catalog: pd.DataFrame) -> dict[str, dict[str, int]]:
    """``{fold: {"positives": P, "negatives": N}}`` of every test fold of the run's split."""
    counts = {}
    for fold in _run_folds(run, catalog):
        y = catalog["target"].to_numpy()[fold.test]
        counts[str(fold.index)] = {"positives": int((y == 1).sum()), "negatives": int((y == 0).sum())}
    return counts


def pooled_from_counts(
    folds: dict[str, Any], counts: dict[str, dict[str, int]], rows: list[str]
) -> dict[str, dict[str, float]]:
    """Out-of-fold balanced accuracy, sensitivity and specificity of ``folds`` pooled by confusion counts."""
    pooled = {}
    for row in rows:
        tp = tn = positives = negatives = 0
        for index, entry in folds.items():
            test, n = entry["test"], counts[index]
            if test["n"] != n["positives"] + n["negatives"]:
                raise ValueError(f"fold {index}: {test['n']} test records, the split has {sum(n.values())}")
            tp += round(test[row]["sensitivity"] * n["positives"])
            tn += round(test[row]["specificity"] * n["negatives"])
            positives, negatives = positives + n["positives"], negatives + n["negatives"]
        sensitivity, specificity = tp / positives, tn / negatives
        pooled[row] = {
            "balanced_accuracy": (sensitivity + specificity) / 2,
            "sensitivity": sensitivity,
            "specificity": specificity,
        }
    return pooled


def fold_means(folds: dict[str, Any], rows: list[str]) -> dict[str, Any]:
    """``{"test_mean": …, "external_mean": …}``: each row's metrics averaged over the folds with that part."""
    means = {}
    for name in ("test", "external"):
        with_part = [f[name] for f in folds.values() if name in f]
        if with_part:
            means[f"{name}_mean"] = {
                r: {k: float(np.mean([f[r][k] for f in with_part])) for k in ("balanced_accuracy", "auroc")}
                for r in rows
            }
    return means


def merge_reports(
    report: dict[str, Any], earlier: list[dict[str, Any]], counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """``report`` with the test folds of ``earlier`` reports added; fold means and pooled rows recomputed."""
    folds = dict(report["folds"])
    for other in earlier:
        if other["rows"] != report["rows"]:
            raise ValueError(f"merged report compares {other['rows']}, this one {report['rows']}")
        for index, entry in other["folds"].items():
            if index in folds:
                raise ValueError(f"fold {index} is in more than one report")
            folds[index] = {**entry, "merged_from": other["run"]}
    folds = dict(sorted(folds.items(), key=lambda item: int(item[0])))
    with_test = {index: f for index, f in folds.items() if "test" in f}
    return {
        **report,
        "folds": folds,
        **fold_means(folds, report["rows"]),
        "out_of_fold": pooled_from_counts(with_test, counts, report["rows"]),
    }


def _views(probs: np.ndarray) -> dict[str, np.ndarray]:
    """``(N, 1, 8)`` member x view probabilities -> the plain (first view) and TTA predictions."""
    return {"plain": probs[:, 0, 0], "tta": merge_views(probs)[:, 0]}


def _report(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, sensitivity, specificity of ``p >= thresholds`` (per row: folds pooled), and AUROC."""
    from mitoscope.metrics.classification import classification_report

    report = classification_report(y, p, preds=(p >= thresholds).astype(np.int64))
    return {k: float(report[k]) for k in ("balanced_accuracy", "sensitivity", "specificity", "auroc")}


def evaluate_run(
    run: Path, catalog: pd.DataFrame, ext: pd.DataFrame | None, rules: list[str]
) -> dict[str, Any]:
    """Per fold: the thresholds, test and ``ext`` rows; pooled out-of-fold rows and fold means."""
    from mitoscope.inference.classify import Classifier

    rows = [f"{v}@{r}" for v in VIEWS for r in ("stored", *rules)]
    folds: dict[str, Any] = {}
    pooled: dict[str, list[np.ndarray]] = {"y": [], **{v: [] for v in VIEWS}, **{r: [] for r in rows}}
    for index, parts in fold_parts(run, catalog).items():
        t0 = time.perf_counter()
        clf = Classifier.from_path(run / f"fold_{index}" / "model.pt")
        y_val = parts["val"]["target"].to_numpy()
        val = _views(member_view_probs(clf, parts["val"]))
        thresholds = {f"{v}@stored": float(clf.threshold) for v in VIEWS}
        thresholds.update({f"{v}@{r}": choose_threshold(y_val, val[v], r) for v in VIEWS for r in rules})
        entry: dict[str, Any] = {"thresholds": thresholds}
        for name, part in (("test", parts["test"]), ("external", ext)):
            if part is None or not len(part):
                continue
            y, preds = part["target"].to_numpy(), _views(member_view_probs(clf, part))
            entry[name] = {
                row: _report(y, preds[row.split("@")[0]], np.full(len(y), t)) for row, t in thresholds.items()
            }
            entry[name]["n"] = len(part)
            if name == "test":
                pooled["y"].append(y)
                for v in VIEWS:
                    pooled[v].append(preds[v])
                for row, t in thresholds.items():
                    pooled[row].append(np.full(len(y), t))
        folds[str(index)] = entry
        print(
            f"fold {index} ({time.perf_counter() - t0:.0f} s): thresholds "
            + ", ".join(f"{row} {t:.3f}" for row, t in thresholds.items()),
            flush=True,
        )
    report: dict[str, Any] = {"rows": rows, "folds": folds, **fold_means(folds, rows)}
    if pooled["y"]:
        y = np.concatenate(pooled["y"])
        report["out_of_fold"] = {
            r: _report(y, np.concatenate(pooled[r.split("@")[0]]), np.concatenate(pooled[r])) for r in rows
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a RUN directory of `mitoscope train classifier`")
    parser.add_argument("--source", required=True, help="the labelled patches the run was trained on")
    parser.add_argument("--external", help="another labelled set to score every fold model on")
    parser.add_argument(
        "--rules",
        nargs="+",
        default=["balanced_accuracy", "equal_error"],
        help="threshold metrics to compare",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=[],
        help="earlier reports of other folds of the same split (their models gone) to pool with this run's",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from mitoscope.data.sources import load_catalog

    catalog = load_catalog(args.source).reset_index(drop=True)
    external = load_catalog(args.external) if args.external else None
    report = evaluate_run(args.run, catalog, external, args.rules)
    if args.merge:
        earlier = [json.loads(path.read_text()) for path in args.merge]
        report = merge_reports(report, earlier, test_class_counts(args.run, catalog))
    print(f"{'balanced accuracy':<18}" + "".join(f"{r:>24}" for r in report["rows"]))
    for name in ("out_of_fold", "test_mean", "external_mean"):
        if name in report:
            print(
                f"{name:<18}"
                + "".join(f"{report[name][r]['balanced_accuracy']:>24.3f}" for r in report["rows"])
            )
    write_report(
        args.out,
        {
            "benchmark": "threshold_rules",
            "run": str(args.run),
            "source": args.source,
            "external": args.external,
            "rules": args.rules,
            "merged": [str(path) for path in args.merge],
            "command": " ".join(sys.argv),
            **report,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
