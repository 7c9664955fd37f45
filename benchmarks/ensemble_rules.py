"""Ensemble rules and test-time augmentation compared on one labelled set, from one pass over the data.

For every cross-validation run given (``name=RUN_DIR``, as ``mitoscope train classifier --out`` writes them),
each fold model scores every patch of ``--source`` on the 8 dihedral views once
(``bench_helpers.member_view_probs``); the probabilities, the members' own
validation thresholds and each run's ``ensemble.json`` threshold are saved (``--probs``). Then every row below
is computed from them with the package's own :func:`mitoscope.engine.ensemble.combine_members`:

* ``fold0``: the first fold model alone at its threshold;
* ``mean@run``: mean probability at the run's ensemble threshold (what ``mitoscope classify RUN`` does for the
  ``mean`` rule: the threshold chosen on the pooled out-of-fold predictions);
* ``mean@members``: mean probability at the mean of the members' thresholds;
* ``majority``: each member votes at its own threshold (Percannella et al.);

each without and with TTA (mean logit of the views), for each run and for all runs' members together
(``all``: a cross-architecture ensemble). Metrics: balanced accuracy (95 % bootstrap CI), AUROC, sensitivity,
specificity. ``--from-probs`` recomputes the table from a saved file without a model or data.
``--diagnose-threshold`` adds, per run, ``mean+tta@this-set``: the mean with TTA at the threshold that is best
on the scored set itself (its own labels: a diagnosis of how much the transferred threshold costs, not a result).

Run (GPU):  ``python benchmarks/ensemble_rules.py single=runs/gpu/single experts=runs/gpu/experts
            --source ../shared/data/atnorm-md --device cuda --num-workers 8 --probs runs/gpu/atnorm_probs.npz``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_helpers import member_view_probs, merge_views  # benchmarks/ (scripts run from this folder)
from mitoscope.engine.ensemble import combine_members
from mitoscope.metrics.classification import classification_report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ensemble_rules.json"


def member_probabilities(
    runs: dict[str, Path], source: str, device: str, num_workers: int, adapt_bn: str | None = None
) -> dict[str, Any]:
    """Per run: member x view probabilities ``(N, M, 8)``, member thresholds, ensemble threshold; targets.
    ``adapt_bn`` ``"trained"`` / ``"all"``: first re-estimate the batch-norm statistics of each member's trained
    layers / of all its layers on ``source`` (no labels; AdaBN)."""
    from mitoscope.data.sources import load_catalog
    from mitoscope.inference.classify import Classifier

    catalog = load_catalog(source)
    saved: dict[str, Any] = {"targets": catalog["target"].to_numpy()}
    for name, run in runs.items():
        t0 = time.perf_counter()
        clf = Classifier.from_path(run, device=device, rule="mean", fuse_batchnorm=adapt_bn is None)
        if adapt_bn is not None:
            clf.adapt_batchnorm(catalog, num_workers=num_workers, include_frozen=adapt_bn == "all")
        saved[f"{name}/probs"] = member_view_probs(clf, catalog, num_workers=num_workers)
        saved[f"{name}/member_thresholds"] = clf.ensemble.member_thresholds
        saved[f"{name}/threshold"] = np.array(clf.threshold)
        print(
            f"{name}: {len(clf.ensemble)} members on {len(catalog)} patches x 8 views, "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return saved


def load_probs(path: str | Path) -> dict[str, Any]:
    """What :func:`member_probabilities` saved with ``--probs``: ``targets`` and ``RUN/probs``,
    ``RUN/member_thresholds``, ``RUN/threshold`` per run."""
    with np.load(path) as npz:
        return dict(npz)


def rows_for(
    y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, run_threshold: float | None, n_bootstrap: int
) -> dict[str, dict[str, Any]]:
    """The rows of one ensemble (``probs`` is ``(N, M, V)``); ``run_threshold`` ``None``: a mix of runs, whose
    members have no pooled threshold and whose first member is already a row of its own run."""
    rows: dict[str, dict[str, Any]] = {}
    for tta, views in (("", probs[:, :, :1]), ("+tta", probs)):
        member = merge_views(views)  # (N, M)
        rules = {
            "mean@members": (member, thresholds, "mean", float(thresholds.mean())),
            "majority": (member, thresholds, "majority", float(thresholds.mean())),
        }
        if run_threshold is not None:
            rules["fold0"] = (member[:, :1], thresholds[:1], "mean", float(thresholds[0]))
            rules["mean@run"] = (member, thresholds, "mean", run_threshold)
        for rule_name, (p, t, rule, thr) in rules.items():
            out = combine_members(p, t, rule=rule, threshold=thr)
            rep = classification_report(y, out.prob, preds=out.label, threshold=thr, n_bootstrap=n_bootstrap)
            rows[rule_name + tta] = {
                k: rep[k]
                for k in ("balanced_accuracy", "balanced_accuracy_ci", "auroc", "sensitivity", "specificity")
                if k in rep
            }
    return rows


def diagnosis_row(y: np.ndarray, probs: np.ndarray, n_bootstrap: int) -> dict[str, Any]:
    """Mean probability with TTA at the balanced-accuracy-best threshold of ``(y, probs)`` itself."""
    from mitoscope.engine.crossval import choose_threshold

    p = merge_views(probs).mean(axis=1)
    threshold = choose_threshold(y, p, "balanced_accuracy")
    rep = classification_report(y, p, threshold=threshold, n_bootstrap=n_bootstrap)
    keys = ("threshold", "balanced_accuracy", "balanced_accuracy_ci", "auroc", "sensitivity", "specificity")
    return {k: rep[k] for k in keys if k in rep}


def evaluate(
    saved: dict[str, Any], n_bootstrap: int, diagnose: bool = False
) -> dict[str, dict[str, dict[str, Any]]]:
    """All rows for every run and for all runs' members together (``diagnose``: :func:`diagnosis_row` too)."""
    y = np.asarray(saved["targets"])
    names = sorted({k.split("/")[0] for k in saved if "/" in k})
    table = {
        name: rows_for(
            y,
            saved[f"{name}/probs"],
            np.asarray(saved[f"{name}/member_thresholds"]),
            float(saved[f"{name}/threshold"]),
            n_bootstrap,
        )
        for name in names
    }
    if diagnose:
        for name in names:
            table[name]["mean+tta@this-set"] = diagnosis_row(y, saved[f"{name}/probs"], n_bootstrap)
    if len(names) > 1:
        probs = np.concatenate([saved[f"{n}/probs"] for n in names], axis=1)
        thresholds = np.concatenate([np.asarray(saved[f"{n}/member_thresholds"]) for n in names])
        table["all"] = rows_for(y, probs, thresholds, None, n_bootstrap)
    return table


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a benchmark's JSON report (parents created) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"written {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="NAME=RUN_DIR of cross-validation runs")
    parser.add_argument("--source", help="labelled patches (e.g. ../shared/data/atnorm-md)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-workers", type=int, default=0, help="reader processes")
    parser.add_argument("--probs", type=Path, help="save the member x view probabilities here (.npz)")
    parser.add_argument("--from-probs", type=Path, help="recompute the table from a saved .npz")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--adapt-bn",
        choices=("trained", "all"),
        help="re-estimate each member's batch-norm statistics on --source first (AdaBN; labels unused): those "
        "of the trained layers, or all (frozen stages too)",
    )
    parser.add_argument(
        "--diagnose-threshold",
        action="store_true",
        help="add the mean + TTA at the threshold best on this set itself (a diagnosis that uses its labels)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if args.from_probs:
        saved = load_probs(args.from_probs)
    else:
        if not args.runs or not args.source:
            parser.error("give NAME=RUN_DIR runs and --source, or --from-probs")
        runs = {r.split("=", 1)[0]: Path(r.split("=", 1)[1]) for r in args.runs}
        saved = member_probabilities(runs, args.source, args.device, args.num_workers, args.adapt_bn)
        if args.probs:
            args.probs.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.probs, **saved)
    table = evaluate(saved, args.bootstrap, args.diagnose_threshold)

    print(f"{len(saved['targets'])} patches ({int(np.sum(saved['targets']))} atypical)")
    print(f"{'ensemble':<10} {'rule':<16} {'BA':>6} {'95% CI':>13} {'AUROC':>6} {'sens':>6} {'spec':>6}")
    for name, rows in table.items():
        for rule, m in rows.items():
            ci = m.get("balanced_accuracy_ci", [float("nan")] * 2)
            print(
                f"{name:<10} {rule:<16} {m['balanced_accuracy']:6.3f} [{ci[0]:.3f}–{ci[1]:.3f}] "
                f"{m['auroc']:6.3f} {m['sensitivity']:6.3f} {m['specificity']:6.3f}"
            )
    report = {
        "benchmark": "ensemble_rules",
        "source": args.source or str(args.from_probs),
        "n": len(saved["targets"]),
        "command": " ".join(sys.argv),
        "table": table,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
