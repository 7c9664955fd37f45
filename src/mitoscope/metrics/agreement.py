"""Models against the experts themselves: leave-one-expert-out references from several experts' votes.

With several experts per record (AMi-Br: 3, AtNorM-MD: 5) the honest human reference for expert ``k`` is the
majority of the *other* experts (ties left out). Scoring each expert and a model against the same references
tells whether a model's errors exceed the experts' own disagreement.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mitoscope.metrics.classification import auroc, balanced_accuracy


def leave_one_out_reference(votes: np.ndarray, k: int) -> np.ndarray:
    """Per record, the majority vote of every expert but ``k``: 1, 0, or -1 (a tie, or no votes).

    Examples:
        >>> v = np.array([[1, 1, 0], [0, 1, 0], [1, 0, -1]], dtype=float)
        >>> leave_one_out_reference(v, 0).tolist(), leave_one_out_reference(v, 2).tolist()
        ([-1, -1, 0], [1, -1, -1])
    """
    others = np.delete(votes, k, axis=1)
    pos, neg = (others == 1).sum(axis=1), (others == 0).sum(axis=1)
    return np.where(pos > neg, 1, np.where(neg > pos, 0, -1))


def agreement_table(votes: np.ndarray, models: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Each expert, and each model (``name -> (decisions, probs)``, aligned with ``votes``), against the
    majority of the other experts, leaving out records where those tie or where expert ``k`` gave no vote.

    Returns:
        ``experts``: per expert its balanced accuracy, ``n`` and ``n_atypical`` of its reference;
        ``experts_mean_balanced_accuracy``; ``models``: per model its balanced accuracy and AUROC averaged
        over the experts' references (and the balanced accuracy on each).

    Examples:
        >>> v = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]] * 3, dtype=float)
        >>> t = agreement_table(v, {"m": (v[:, 0].astype(int), v[:, 0])})
        >>> t["experts"]["expert_1"]["balanced_accuracy"], t["models"]["m"]["balanced_accuracy"]
        (1.0, 1.0)
    """
    experts: dict[str, dict[str, Any]] = {}
    per_model: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for k in range(votes.shape[1]):
        ref = leave_one_out_reference(votes, k)
        scored = (ref >= 0) & (votes[:, k] >= 0)
        y = ref[scored]
        experts[f"expert_{k + 1}"] = {
            "balanced_accuracy": balanced_accuracy(y, votes[scored, k].astype(int)),
            "n": int(scored.sum()),
            "n_atypical": int(y.sum()),
        }
        for name, (decisions, probs) in models.items():
            per_model[name].append((balanced_accuracy(y, decisions[scored]), auroc(y, probs[scored])))
    model_rows = {
        name: {
            "balanced_accuracy": float(np.mean([ba for ba, _ in rows])),
            "auroc": float(np.mean([au for _, au in rows])),
            "per_reference_balanced_accuracy": [ba for ba, _ in rows],
        }
        for name, rows in per_model.items()
    }
    mean = float(np.mean([e["balanced_accuracy"] for e in experts.values()]))
    return {"experts": experts, "experts_mean_balanced_accuracy": mean, "models": model_rows}


def unanimous(votes: np.ndarray) -> np.ndarray:
    """Records on which every expert who voted gave the same vote (missing votes ``-1`` ignored).

    Examples:
        >>> unanimous(np.array([[1, 1, -1], [0, 1, 0], [0, 0, 0]], dtype=float)).tolist()
        [True, False, True]
    """
    given = votes >= 0
    return np.all((votes == 1) | ~given, axis=1) | np.all((votes == 0) | ~given, axis=1)


def by_agreement(
    targets: np.ndarray, votes: np.ndarray, decisions: np.ndarray, probs: np.ndarray
) -> dict[str, dict[str, Any]]:
    """A model against the label (``targets``) on the records all experts agree on and on the disputed ones."""
    agreed = unanimous(votes)
    out = {}
    for name, mask in (("unanimous", agreed), ("disputed", ~agreed)):
        y = targets[mask]
        out[name] = {
            "n": int(mask.sum()),
            "n_atypical": int(y.sum()),
            "balanced_accuracy": balanced_accuracy(y, decisions[mask]),
            "auroc": auroc(y, probs[mask]),
        }
    return out
