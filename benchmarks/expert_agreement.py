"""Models against the experts themselves: each expert and each model scored on the same leave-one-out references.

A labelled set with several experts' votes (AMi-Br: 3, AtNorM-MD: 5) gives an honest human reference: for each
expert ``k``, the majority of the *other* experts (records where they tie are left out). Expert ``k`` is scored
against it, and so is every model given (``NAME=PREDICTIONS.csv``: a ``mitoscope classify`` CSV, or a training
run's ``oof_predictions.csv``, decided by its per-row thresholds), on exactly the same records; the table
reports each expert, the experts' mean, and each model's mean over the ``k`` references (balanced accuracy;
AUROC for models). Then each model against the dataset's label (the majority of all experts) on the records
all experts agree on and on those they dispute — where the errors are.

Run:  ``python benchmarks/expert_agreement.py --source ../shared/data/atnorm-md/expert_votes.csv
      recipe=runs/cpu_hed02/atnorm_tta.csv --out benchmarks/results/expert_agreement_atnorm.json``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mitoscope.data.datasets import expert_matrix
from mitoscope.metrics.agreement import agreement_table, by_agreement

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from ensemble_rules import write_report  # noqa: E402


def _model_decisions(path: Path, catalog: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row positions in the catalog, decisions, probs)`` of a predictions CSV joined to ``catalog``."""
    import pandas as pd

    from mitoscope.metrics.classification import join_predictions
    from mitoscope.metrics.scored import ScoredPredictions

    pred = pd.read_csv(path)
    joined, unmatched = join_predictions(
        pred,
        catalog.assign(position=np.arange(len(catalog))),
        file_column="file" if "file" in pred else "image",
    )
    decisions = ScoredPredictions(joined, unmatched, len(pred), len(catalog)).label_decisions()
    if decisions is None:
        raise SystemExit(f"{path}: no decisions (neither a label nor a threshold column)")
    return joined["position"].to_numpy(), decisions, joined["p_atypical"].to_numpy(dtype=float)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", help="NAME=PREDICTIONS.csv (classify output or oof_predictions.csv)"
    )
    parser.add_argument("--source", required=True, help="labelled set with expert votes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from mitoscope.data.sources import load_catalog

    catalog = load_catalog(args.source)
    catalog = catalog[catalog["target"].astype(int) >= 0].reset_index(drop=True)
    votes = expert_matrix(catalog["experts"])
    targets = catalog["target"].to_numpy().astype(int)
    keep = np.ones(len(catalog), dtype=bool)
    models: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        rows, decisions, probs = _model_decisions(Path(path), catalog)
        full_d, full_p = np.full(len(catalog), -1), np.full(len(catalog), np.nan)
        full_d[rows], full_p[rows] = decisions, probs
        keep &= full_d >= 0
        models[name] = (full_d, full_p)
    if not keep.all():
        print(f"scoring the {int(keep.sum())} of {len(catalog)} records every model predicted")
    votes, targets = votes[keep], targets[keep]
    models = {name: (d[keep], p[keep]) for name, (d, p) in models.items()}

    table = agreement_table(votes, models)
    report: dict[str, Any] = {
        "source": args.source,
        "n": int(keep.sum()),
        "n_experts": votes.shape[1],
        **table,
    }
    report["by_agreement"] = {name: by_agreement(targets, votes, d, p) for name, (d, p) in models.items()}

    print(
        f"\n{args.source}: {report['n']} records, {votes.shape[1]} experts; reference = majority of the others"
    )
    print("| who | bal. acc. vs the others' majority | AUROC |\n| --- | --- | --- |")
    for name, row in table["experts"].items():
        print(f"| {name} (n = {row['n']}, {row['n_atypical']} atypical) | {row['balanced_accuracy']:.3f} | |")
    print(f"| experts' mean | {table['experts_mean_balanced_accuracy']:.3f} | |")
    for name, row in table["models"].items():
        print(f"| {name} (mean over the references) | {row['balanced_accuracy']:.3f} | {row['auroc']:.3f} |")
    print(
        "\n| model | records | n | atypical | bal. acc. vs the label | AUROC |\n| --- | --- | --- | --- | --- | --- |"
    )
    for name, parts in report["by_agreement"].items():
        for part, row in parts.items():
            print(
                f"| {name} | {part} | {row['n']} | {row['n_atypical']} | {row['balanced_accuracy']:.3f} "
                f"| {row['auroc']:.3f} |"
            )
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
