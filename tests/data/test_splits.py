from __future__ import annotations

import numpy as np
import pytest

from mitoscope.data.splits import (
    Fold,
    check_no_leakage,
    describe_folds,
    leave_one_domain_out,
    stratified_group_kfold,
)
from mitoscope.io.amibr import read_amibr_csv
from mitoscope.io.catalog import make_catalog
from mitoscope.io.midogpp import read_midogpp_json


@pytest.fixture(scope="module")
def amibr(shared_data):
    return read_amibr_csv(shared_data / "amibr" / "amibr_train.csv", check_files=False)


def _assert_clean(folds, catalog):
    groups = catalog["group"].to_numpy()
    for fold in folds:
        parts = [fold.train, fold.val, fold.test]
        assert all(len(p) for p in parts)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(catalog)))  # every row exactly once
        seen = [set(groups[p]) for p in parts]
        assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


@pytest.mark.parametrize("stratify", ["label", "label_hardness"])
def test_group_kfold_on_real_amibr_slides(amibr, stratify):
    folds = stratified_group_kfold(amibr, n_splits=5, stratify=stratify, seed=1)
    assert len(folds) == 5
    _assert_clean(folds, amibr)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(amibr)))  # each row is tested once
    overall = amibr["target"].mean()
    for f in folds:
        assert abs(amibr["target"].iloc[f.test].mean() - overall) < 0.08  # stratified
    again = stratified_group_kfold(amibr, n_splits=5, stratify=stratify, seed=1)
    assert all((a.test == b.test).all() for a, b in zip(folds, again, strict=True))


def test_leave_one_domain_out_real_midogpp(shared_data):
    ann = shared_data / "annotations"
    cat = read_midogpp_json(ann / "MIDOG++.json", xvalidation_csv=ann / "MIDOG++_datasets_xvalidation.csv")
    folds = leave_one_domain_out(cat)
    assert len(folds) == 7
    _assert_clean(folds, cat)
    for f in folds:
        assert set(cat["domain"].iloc[f.test]) == {f.info["test_domain"]}
        assert set(cat["domain"].iloc[f.val]) == {f.info["val_domain"]}
        assert f.info["test_domain"] not in set(cat["domain"].iloc[f.train])
    rand = leave_one_domain_out(cat, val_domain="random", seed=3)
    assert all(f.info["val_domain"] != f.info["test_domain"] for f in rand)
    table = describe_folds(folds, cat)
    assert len(table) == 21 and table.groupby("fold")["rows"].sum().eq(len(cat)).all()


def test_split_errors():
    cat = make_catalog(
        {"image": f"{i}", "slide": f"s{i % 2}", "label": "normal", "domain": "ab"[i % 2]} for i in range(8)
    )
    with pytest.raises(ValueError, match="groups"):
        stratified_group_kfold(cat, n_splits=3)
    with pytest.raises(ValueError, match="at least 3 domains"):
        leave_one_domain_out(cat)
    with pytest.raises(ValueError, match="stratify"):
        stratified_group_kfold(cat, stratify="colour")
    mixed = make_catalog(
        {"image": f"{i}", "slide": "same" if i < 2 else f"s{i}", "label": "normal", "domain": "abc"[i % 3]}
        for i in range(9)
    )
    with pytest.raises(ValueError, match="more than one domain"):
        leave_one_domain_out(mixed)
    with pytest.raises(AssertionError, match="groups in both"):
        check_no_leakage([Fold("f", np.array([0]), np.array([1]), np.array([2]))], mixed.iloc[[0, 1, 2]])
