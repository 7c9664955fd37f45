"""benchmarks/local_threshold.py: draws of a few labelled patches, the local thresholds and rule 21's verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import local_threshold  # a benchmark script, importable from its folder


def _shifted_set(n_pos: int = 60, n_neg: int = 240, seed: int = 0) -> dict[str, np.ndarray]:
    """Scores that rank well but sit below the transferred threshold 0.5: a local threshold should win."""
    rng = np.random.default_rng(seed)
    targets = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    probs = np.r_[rng.uniform(0.2, 0.45, n_pos), rng.uniform(0.0, 0.25, n_neg)]
    return {"targets": targets, "probs": probs, "decisions": (probs >= 0.5).astype(np.int64)}


def test_local_thresholds_beat_a_transferred_threshold_that_is_too_high() -> None:
    data = _shifted_set()
    scores = local_threshold.draw_scores(
        data["targets"], data["probs"], data["decisions"], k=10, draws=50, seed=0
    )
    assert np.allclose(scores["transferred"], 0.5)  # nothing predicted atypical
    row = local_threshold.summarise(scores)
    for rule in local_threshold.RULES:
        assert row[rule]["mean"] > 0.8  # the classes overlap on [0.2, 0.25]: at best 0.9
        assert row[rule]["beats_transferred"] == 1.0
        assert 0.2 <= row[rule]["median_threshold"] <= 0.25
    with pytest.raises(ValueError, match="k=60"):
        local_threshold.draw_scores(data["targets"], data["probs"], data["decisions"], k=60, draws=1, seed=0)


def _row(argmax: float, equal_error: float, beats: float) -> dict:
    return {
        "argmax": {"mean": argmax, "beats_transferred": beats},
        "equal_error": {"mean": equal_error, "beats_transferred": beats},
    }


def test_verdict_counts_cells_and_finds_the_smallest_budget() -> None:
    budgets = [5, 10, 20, 40, 80]
    table = {
        s: {str(k): _row(0.80, 0.81, 0.95 if k >= 20 else 0.8) for k in budgets} for s in ("a", "b", "c")
    }
    decided = local_threshold.verdict(table, ["a", "b", "c"], budgets)
    assert decided["choose_threshold_rule"] == "equal_error"
    assert decided["smallest_k_beating_transferred_90pct"] == 20
    # four cells where equal error is worse: 11 of 15, below the 12 the rule asks for
    for s, k in (("a", 5), ("a", 10), ("b", 5), ("c", 80)):
        table[s][str(k)] = _row(0.80, 0.795, 0.95 if k >= 20 else 0.8)
    assert local_threshold.verdict(table, ["a", "b", "c"], budgets)["choose_threshold_rule"] == "argmax"
    # one cell far worse is enough to keep the arg-max
    table = {s: {str(k): _row(0.80, 0.81, 0.5) for k in budgets} for s in ("a", "b", "c")}
    table["a"]["40"] = _row(0.80, 0.78, 0.5)
    decided = local_threshold.verdict(table, ["a", "b", "c"], budgets)
    assert decided["choose_threshold_rule"] == "argmax"
    assert decided["smallest_k_beating_transferred_90pct"] is None
    assert decided["mean_at_smallest_k"] is None


def test_prediction_sets_from_an_npz_and_clear_errors(tmp_path: Path) -> None:
    probs = np.zeros((4, 2, 8))
    probs[2:] = 0.8
    path = tmp_path / "p.npz"
    np.savez(
        path,
        targets=np.array([0, 0, 1, 1]),
        **{"r/probs": probs, "r/member_thresholds": np.array([0.5, 0.5]), "r/threshold": np.array(0.5)},
    )
    data = local_threshold.load_prediction_set(str(path), None)
    assert data["decisions"].tolist() == [0, 0, 1, 1]
    assert np.allclose(data["probs"][2:], 0.8)
    with pytest.raises(ValueError, match="no run 'x'"):
        local_threshold.load_prediction_set(f"{path}#x", None)
    with pytest.raises(ValueError, match="needs --truth"):
        local_threshold.load_prediction_set(str(tmp_path / "p.csv"), None)
