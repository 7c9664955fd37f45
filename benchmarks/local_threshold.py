"""A local operating point from a few labelled patches: how many are needed, and which threshold rule (rule 21).

A lab that has labelled a few patches of its own chooses the decision threshold on them
(``mitoscope evaluate classification --choose-threshold``, then ``mitoscope classify --threshold``) instead of
the one the model brought from its training domain. For each prediction set given (``NAME=PATH``: a
``mitoscope classify`` CSV, or ``NAME=PROBS.npz[#RUN]`` as ``ensemble_rules.py --probs`` saves it, scored as the
mean of the members with TTA) and each budget ``k``, ``--draws`` seeded draws pick ``k`` atypical and ``k``
normal patches; on them a threshold is chosen by the arg-max of balanced accuracy and by equal error
(:func:`mitoscope.engine.crossval.choose_threshold`), and each is scored on all the other patches beside the
model's own (transferred) decision on the same patches. The verdict of rule 21
(``benchmarks/results/classifier_local_threshold/RULE.md``) is printed for the ``--rule-sets``.

Without slide ids (AtNorM-MD has none) drawn and scored patches may share slides: optimistic for a lab that
calibrates on other slides than it scores.

Run: ``python benchmarks/local_threshold.py
      s0=benchmarks/results/classifier_local_threshold/holdout_seed0/atnorm_tta.csv
      s1=benchmarks/results/classifier_local_threshold/holdout_seed1/atnorm_tta.csv
      cv5=benchmarks/results/classifier_r18_cv5/atnorm_probs.npz --truth ../shared/data/atnorm-md``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench_helpers import merge_views  # benchmarks/ (scripts run from this folder)
from ensemble_rules import load_probs, write_report
from mitoscope.engine.crossval import choose_threshold
from mitoscope.engine.ensemble import combine_members
from mitoscope.metrics.classification import balanced_accuracy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "classifier_local_threshold" / "local_threshold.json"
RULES = {"argmax": "balanced_accuracy", "equal_error": "equal_error"}


def load_prediction_set(path: str, truth: str | None) -> dict[str, np.ndarray]:
    """``targets``, ``probs`` and the model's own ``decisions`` (1/0) of one prediction set.

    ``path`` is a classify CSV (joined to ``truth``; its ``label`` column holds the decisions) or
    ``PROBS.npz[#RUN]`` (members x views probabilities: mean of the members' TTA probabilities, decided at the
    run's ensemble threshold, as ``mitoscope classify RUN --tta`` does)."""
    file, _, run = path.partition("#")
    if file.endswith(".npz"):
        saved = load_probs(file)
        runs = sorted({k.split("/")[0] for k in saved if "/" in k})
        if not run:
            if len(runs) != 1:
                raise ValueError(f"{file}: holds runs {runs}; name one as {file}#RUN")
            run = runs[0]
        if f"{run}/probs" not in saved:
            raise ValueError(f"{file}: no run {run!r} (it holds {runs})")
        mean = combine_members(
            merge_views(saved[f"{run}/probs"]),
            saved[f"{run}/member_thresholds"],
            rule="mean",
            threshold=float(saved[f"{run}/threshold"]),
        )
        return {
            "targets": np.asarray(saved["targets"], dtype=np.int64),
            "probs": mean.prob,
            "decisions": mean.label,
        }
    if truth is None:
        raise ValueError(f"{file}: a predictions CSV needs --truth")
    from mitoscope.metrics.scored import read_scored_predictions

    scored = read_scored_predictions(file, truth)
    decisions = scored.label_decisions()
    if decisions is None:
        raise ValueError(f"{file}: no label column with the model's own decisions")
    if len(scored.unmatched):
        raise ValueError(f"{file}: {len(scored.unmatched)} predictions match no record of {truth}")
    return {"targets": scored.targets, "probs": scored.probs, "decisions": decisions}


def draw_scores(
    targets: np.ndarray, probs: np.ndarray, decisions: np.ndarray, k: int, draws: int, seed: int
) -> dict[str, np.ndarray]:
    """Per draw: held-out balanced accuracy of each local rule and of the transferred decision, and the
    thresholds the local rules chose, for ``k`` labelled patches of each class."""
    positives, negatives = np.flatnonzero(targets == 1), np.flatnonzero(targets == 0)
    if k >= min(len(positives), len(negatives)):
        raise ValueError(f"k={k} labelled patches per class leaves none of one class to score")
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {"transferred": []}
    for name in RULES:
        out[name], out[f"{name}_threshold"] = [], []
    for _ in range(draws):
        drawn = np.concatenate(
            [rng.choice(positives, k, replace=False), rng.choice(negatives, k, replace=False)]
        )
        rest = np.ones(len(targets), dtype=bool)
        rest[drawn] = False
        out["transferred"].append(balanced_accuracy(targets[rest], decisions[rest]))
        for name, metric in RULES.items():
            threshold = choose_threshold(targets[drawn], probs[drawn], metric)
            out[name].append(balanced_accuracy(targets[rest], (probs[rest] >= threshold).astype(np.int64)))
            out[f"{name}_threshold"].append(threshold)
    return {key: np.asarray(values) for key, values in out.items()}


def summarise(scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean and 5th/50th/95th percentiles of each rule's held-out balanced accuracy, the share of draws in which
    it beats the transferred decision, and the median chosen threshold."""
    row: dict[str, Any] = {}
    for name in ("transferred", *RULES):
        values = scores[name]
        row[name] = {
            "mean": float(values.mean()),
            "p5": float(np.percentile(values, 5)),
            "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)),
        }
        if name in RULES:
            row[name]["beats_transferred"] = float(np.mean(values > scores["transferred"]))
            row[name]["median_threshold"] = float(np.median(scores[f"{name}_threshold"]))
    return row


def verdict(table: dict[str, dict[str, Any]], rule_sets: list[str], budgets: list[int]) -> dict[str, Any]:
    """Rule 21's two decisions from the ``rule_sets`` rows (see RULE.md)."""
    cells = [(s, k) for s in rule_sets for k in budgets]
    gains = [table[s][str(k)]["equal_error"]["mean"] - table[s][str(k)]["argmax"]["mean"] for s, k in cells]
    wins = sum(g >= 0 for g in gains)
    switch = wins >= 0.8 * len(cells) and min(gains) >= -0.01  # 12 of the 15 cells of RULE.md
    rule = "equal_error" if switch else "argmax"
    enough = [
        k for k in budgets if all(table[s][str(k)][rule]["beats_transferred"] >= 0.9 for s in rule_sets)
    ]
    smallest = min(enough) if enough else None
    return {
        "equal_error_not_worse_cells": f"{wins}/{len(cells)}",
        "worst_equal_error_gain": min(gains),
        "choose_threshold_rule": rule,
        "smallest_k_beating_transferred_90pct": smallest,
        "mean_at_smallest_k": (
            {s: table[s][str(smallest)][rule]["mean"] for s in rule_sets} if smallest is not None else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="NAME=PREDICTIONS.csv or NAME=PROBS.npz[#RUN]")
    parser.add_argument(
        "--truth", help="the labelled source the CSVs are joined to (e.g. ../shared/data/atnorm-md)"
    )
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 40, 80], help="k per class")
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rule-sets", nargs="*", help="the sets rule 21 decides on (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    named = dict(s.split("=", 1) for s in args.sets)
    rule_sets = args.rule_sets or list(named)
    if unknown := set(rule_sets) - set(named):
        parser.error(f"--rule-sets {sorted(unknown)} are not among the sets given")
    table: dict[str, dict[str, Any]] = {}
    print(
        f"{'set':<12} {'k':>3} {'transferred':>11} {'argmax':>17} {'equal error':>17}   (mean, share > transferred)"
    )
    for name, path in named.items():
        data = load_prediction_set(path, args.truth)
        table[name] = {"n": len(data["targets"]), "atypical": int(data["targets"].sum())}
        for k in args.budgets:
            row = summarise(
                draw_scores(data["targets"], data["probs"], data["decisions"], k, args.draws, args.seed)
            )
            table[name][str(k)] = row
            print(
                f"{name:<12} {k:>3} {row['transferred']['mean']:>11.3f} "
                + " ".join(f"{row[r]['mean']:>9.3f} ({row[r]['beats_transferred']:4.0%})" for r in RULES)
            )
    decided = verdict(table, rule_sets, args.budgets)
    print("rule 21:", decided)
    report = {
        "benchmark": "local_threshold",
        "truth": args.truth,
        "draws": args.draws,
        "seed": args.seed,
        "command": " ".join(sys.argv),
        "table": table,
        "rule_sets": rule_sets,
        "verdict": decided,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
