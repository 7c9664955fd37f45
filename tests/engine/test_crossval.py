"""Cross-validation: threshold choice, folds per scheme, the resumable fold loop and its outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mitoscope.engine.crossval import (
    FOLD_METRICS,
    FOLD_PREDICTIONS,
    Fold,
    choose_threshold,
    make_folds,
    run_crossval,
)
from mitoscope.io.catalog import make_catalog
from mitoscope.utils.errors import InputError


def test_choose_threshold_separates_known_data():
    labels = [0, 0, 0, 1, 1, 1]
    probs = [0.05, 0.1, 0.2, 0.25, 0.3, 0.8]
    t = choose_threshold(labels, probs)
    assert 0.2 < t <= 0.25
    preds = (np.array(probs) >= t).astype(int)
    assert preds.tolist() == labels


def test_choose_threshold_maximises_balanced_accuracy_not_accuracy():
    # 9 negatives spread over [0, 0.8]; 1 positive at 0.7: accuracy prefers predicting all negative (0.9),
    # balanced accuracy prefers catching the positive
    labels = [0] * 9 + [1]
    probs = [*np.linspace(0.0, 0.8, 9).tolist(), 0.7]
    t = choose_threshold(labels, probs)
    assert 0.6 < t <= 0.7


def test_choose_threshold_prefers_half_on_ties_and_validates():
    assert choose_threshold([0, 1], [0.1, 0.9]) == 0.5
    assert choose_threshold([0, 0], [0.1, 0.9]) == 0.5
    with pytest.raises(ValueError):
        choose_threshold([0, 1], [0.1])
    with pytest.raises(ValueError):
        choose_threshold([0, 1], [0.1, float("nan")])
    t_f1 = choose_threshold([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9], metric="f1")
    assert 0.6 < t_f1 <= 0.7


def test_equal_error_threshold_balances_sensitivity_and_specificity():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(400, int), np.ones(100, int)]
    probs = np.r_[rng.beta(2, 5, 400), rng.beta(5, 2, 100)]
    t = choose_threshold(labels, probs, metric="equal_error")
    sens = (probs[labels == 1] >= t).mean()
    spec = (probs[labels == 0] < t).mean()
    assert abs(sens - spec) <= 0.01  # one positive is 0.01 of sensitivity
    # a crossing of two monotone curves: small changes of the scores move it little
    noisy = np.clip(probs + rng.normal(0, 0.02, probs.shape), 0, 1)
    assert abs(choose_threshold(labels, noisy, metric="equal_error") - t) <= 0.05
    with pytest.raises(ValueError, match="equal_error"):
        choose_threshold(labels, probs, metric="nope")


@pytest.mark.parametrize("metric", ["balanced_accuracy", "f1", "youden", "equal_error"])
def test_choose_threshold_matches_a_threshold_by_threshold_search(metric):
    """The counting implementation picks what scoring each candidate threshold one at a time picks."""
    from mitoscope.metrics.classification import balanced_accuracy, f1, sensitivity, specificity

    score = {
        "balanced_accuracy": balanced_accuracy,
        "f1": f1,
        "youden": lambda y, q: sensitivity(y, q) + specificity(y, q) - 1.0,
        "equal_error": lambda y, q: -abs(sensitivity(y, q) - specificity(y, q)),
    }[metric]
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        probs = np.round(rng.random(n), 1)  # many ties
        values = np.unique(probs)
        candidates = np.unique(np.r_[(values[:-1] + values[1:]) / 2, 0.5, values[:1], values[-1:] + 1e-9])
        scores = np.array([score(labels, (probs >= t).astype(int)) for t in candidates])
        best = candidates[scores >= np.nanmax(scores) - 1e-12]
        assert choose_threshold(labels, probs, metric) == pytest.approx(best[np.argmin(np.abs(best - 0.5))])


def _catalog(n=60, n_slides=12):
    rows = []
    for i in range(n):
        rows.append(
            {
                "image": f"{i}.png",
                "slide": f"s{i % n_slides}",
                "label": "atypical" if i % 3 == 0 else "normal",
                "experts": (1, 0, 1) if i % 4 == 0 else (0, 0, 0),
                "domain": f"d{i % 3}",
            }
        )
    rows.append({"image": "unlabelled.png", "slide": "s0"})
    return make_catalog(rows)


@pytest.mark.parametrize("scheme", ["group_kfold", "label_hardness_kfold"])
def test_kfold_groups_never_straddle_and_val_covers_labelled_rows(scheme):
    cat = _catalog()
    folds = make_folds(cat, scheme=scheme, n_splits=4, seed=1)
    assert [f.index for f in folds] == [0, 1, 2, 3]
    all_test = np.sort(np.concatenate([f.test for f in folds]))
    assert all_test.tolist() == list(range(60))  # the unlabelled row (60) is never used
    for f in folds:
        parts = (f.train, f.val, f.test)
        for a in range(3):
            for b in range(a + 1, 3):
                assert not set(cat["group"].iloc[parts[a]]) & set(cat["group"].iloc[parts[b]])
        assert cat["target"].iloc[f.val].sum() > 0 and cat["target"].iloc[f.test].sum() > 0


def test_lodo_and_holdout():
    cat = _catalog()
    folds = make_folds(cat, scheme="lodo", domain_column="domain")
    assert len(folds) == 3
    for k, f in enumerate(folds):
        held = f"d{k}"
        assert set(cat["domain"].iloc[f.test]) == {held} and held not in set(cat["domain"].iloc[f.train])
        assert held in f.name and set(cat["domain"].iloc[f.val]) == {f"d{(k + 1) % 3}"}
    (hold,) = make_folds(cat, scheme="holdout", val_fraction=0.25)
    assert 0.15 < len(hold.val) / 60 < 0.35 and len(hold.test) == 0


def test_group_kfold_val_validates_every_row_once_and_starts_with_the_holdout_split():
    cat = _catalog()
    folds = make_folds(cat, scheme="group_kfold_val", n_splits=4)
    assert len(folds) == 4 and all(len(f.test) == 0 for f in folds)
    assert sorted(np.concatenate([f.val for f in folds]).tolist()) == list(range(60))
    for f in folds:
        assert not set(cat["slide"].iloc[f.train]) & set(cat["slide"].iloc[f.val])
        assert len(f.train) + len(f.val) == 60
    (hold,) = make_folds(cat, scheme="holdout", val_fraction=0.25)
    np.testing.assert_array_equal(np.sort(folds[0].val), np.sort(hold.val))


def test_fold_errors():
    cat = _catalog(n=12, n_slides=2)
    with pytest.raises(InputError, match="only 2 groups for 5 folds"):
        make_folds(cat, scheme="group_kfold", n_splits=5)
    one_domain = make_catalog([{"image": f"{i}", "label": "normal", "domain": "a"} for i in range(4)])
    with pytest.raises(InputError, match="at least 3 domains"):
        make_folds(one_domain, scheme="lodo")
    with pytest.raises(InputError, match="unknown cross-validation scheme"):
        make_folds(cat, scheme="loo")
    with pytest.raises(InputError, match="no labelled rows"):
        make_folds(make_catalog([{"image": "a"}]), scheme="holdout")


def _fake_train(calls):
    def train_fold(fold, fold_dir):
        calls.append(fold.index)
        fold_dir.mkdir(parents=True, exist_ok=True)
        y = (fold.val % 2).astype(int)
        p = np.where(y == 1, 0.6, 0.4) if fold.index == 0 else np.where(y == 1, 0.9, 0.1)
        pd.DataFrame(
            {"row": fold.val, "fold": fold.index, "target": y, "p_atypical": p, "threshold": 0.5}
        ).to_csv(fold_dir / FOLD_PREDICTIONS, index=False)
        (fold_dir / FOLD_METRICS).write_text(json.dumps({"balanced_accuracy": 1.0, "auroc": 1.0}))

    return train_fold


def test_run_crossval_writes_outputs_and_resume_skips_finished_folds(tmp_path):
    folds = [Fold(k, np.arange(10) + 10 * (1 - k), np.arange(10) + 10 * k) for k in range(2)]
    calls: list[int] = []
    summary = run_crossval(folds, _fake_train(calls), tmp_path)
    assert calls == [0, 1]
    oof = pd.read_csv(tmp_path / "oof_predictions.csv")
    assert sorted(oof["row"]) == list(range(20)) and set(oof["fold"]) == {0, 1}
    saved = json.loads((tmp_path / "cv_summary.json").read_text())
    assert saved["oof"]["balanced_accuracy"] == 1.0 == summary["oof"]["balanced_accuracy"]
    assert saved["folds_finished"] == [0, 1] and saved["fold_mean"]["auroc"] == 1.0
    assert 0.4 < saved["oof_pooled_threshold"] <= 0.6

    # an interrupted fold (no metrics.json) is retrained, finished ones are skipped
    (tmp_path / "fold_1" / FOLD_METRICS).unlink()
    calls.clear()
    summary = run_crossval(folds, _fake_train(calls), tmp_path)
    assert calls == [1] and summary["folds_skipped"] == [0]
    calls.clear()
    run_crossval(folds, _fake_train(calls), tmp_path)
    assert calls == []
    run_crossval(folds, _fake_train(calls), tmp_path, resume=False)
    assert calls == [0, 1]


def test_run_crossval_pools_folds_from_earlier_calls(tmp_path):
    folds = [Fold(k, np.arange(4) + 4 * (1 - k), np.arange(4) + 4 * k) for k in range(2)]
    calls: list[int] = []
    run_crossval(folds[:1], _fake_train(calls), tmp_path)
    summary = run_crossval(folds[1:], _fake_train(calls), tmp_path)
    assert summary["folds_finished"] == [0, 1] and summary["folds_trained_now"] == [1]
    assert len(pd.read_csv(tmp_path / "oof_predictions.csv")) == 8


def test_run_crossval_requires_fold_outputs(tmp_path):
    with pytest.raises(RuntimeError, match="left no"):
        run_crossval([Fold(0, np.arange(2), np.arange(2, 4))], lambda f, d: None, tmp_path)


def test_split_scheme_follows_the_split_column() -> None:
    from mitoscope.engine.crossval import make_folds
    from mitoscope.io.catalog import make_catalog

    cat = make_catalog(
        [{"image": f"{i}.png", "label": ["normal", "atypical"][i % 2], "group": f"g{i}"} for i in range(8)]
    )
    cat["split"] = ["train", "train", "val", "val", "test", "test", "TRAIN", "train"]
    (fold,) = make_folds(cat, scheme="split")
    assert fold.train.tolist() == [0, 1, 6, 7] and fold.val.tolist() == [2, 3] and len(fold.test) == 0
    with pytest.raises(InputError, match="needs a 'split' column"):
        make_folds(cat.drop(columns="split"), scheme="split")
