"""Splits as the published methods make them: stratified group k-fold and leave-one-domain-out.

A :class:`Fold` holds *positional* row indices (use ``catalog.iloc[fold.train]``). Rows of one ``group``
(slide / patient) always fall in one part of a fold, so no group leaks between train, validation and test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

STRATIFY = ("label", "label_hardness")


@dataclass(frozen=True)
class Fold:
    """One split: positional indices of the train, validation and test rows, and a name."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    info: dict[str, str] = field(default_factory=dict)

    def parts(self) -> dict[str, np.ndarray]:
        """``{"train": …, "val": …, "test": …}``."""
        return {"train": self.train, "val": self.val, "test": self.test}


def _strata(catalog: pd.DataFrame, stratify: str) -> np.ndarray:
    if stratify not in STRATIFY:
        raise ValueError(f"stratify must be one of {STRATIFY}, got {stratify!r}")
    y = catalog["target"].to_numpy().astype(int) if "target" in catalog else pd.factorize(catalog["label"])[0]
    if stratify == "label_hardness":
        y = y * 2 + catalog["hard"].to_numpy().astype(int)
    return y


def _groups(catalog: pd.DataFrame) -> np.ndarray:
    if "group" not in catalog:
        raise ValueError("the catalog needs a 'group' column to split without leakage")
    groups = catalog["group"].astype(str).to_numpy()
    if (groups == "").any():
        raise ValueError(
            f"{int((groups == '').sum())} rows have an empty group; fill 'group' (slide or image)"
        )
    return groups


def stratified_group_kfold(
    catalog: pd.DataFrame, *, n_splits: int = 5, stratify: str = "label", seed: int = 0
) -> list[Fold]:
    """K folds by group, stratified by label (or label × hardness): fold k tests on part k, validates on part
    k + 1 and trains on the rest.

    Args:
        catalog: needs ``group`` and ``target``/``label`` (and ``hard`` for ``label_hardness``).
        n_splits: number of parts (≥ 3, so that train, validation and test are all non-empty).
        stratify: ``label`` or ``label_hardness``.
        seed: shuffling seed.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog({"image": f"{i}.png", "slide": f"s{i % 10}", "label": ["normal", "atypical"][i % 2]}
        ...                    for i in range(60))
        >>> folds = stratified_group_kfold(cat, n_splits=5)
        >>> len(folds), sorted(np.concatenate([folds[0].train, folds[0].val, folds[0].test])) == list(range(60))
        (5, True)
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if stratify not in STRATIFY:
        raise ValueError(f"stratify must be one of {STRATIFY}, got {stratify!r}")
    if n_splits < 3:
        raise ValueError(f"n_splits must be at least 3 (train, validation and test parts), got {n_splits}")
    groups = _groups(catalog)
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise ValueError(f"only {n_groups} groups for {n_splits} folds; use fewer folds")
    y = _strata(catalog, stratify)
    part = np.full(len(catalog), -1)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test_idx) in enumerate(splitter.split(np.zeros(len(catalog)), y, groups)):
        part[test_idx] = k
    folds = []
    for k in range(n_splits):
        v = (k + 1) % n_splits
        folds.append(
            Fold(
                name=f"fold{k}",
                train=np.flatnonzero((part != k) & (part != v)),
                val=np.flatnonzero(part == v),
                test=np.flatnonzero(part == k),
                info={"test_part": str(k), "val_part": str(v)},
            )
        )
    check_no_leakage(folds, catalog)
    return folds


def leave_one_domain_out(
    catalog: pd.DataFrame, *, domain_column: str = "domain", val_domain: str = "next", seed: int = 0
) -> list[Fold]:
    """Each domain in turn is the test set, one other domain validates, the rest train (Percannella et al.).

    Args:
        catalog: needs ``domain_column`` and ``group``; a group must lie in a single domain.
        domain_column: the column naming the domain (``domain``, ``tumor``, ``scanner``, …).
        val_domain: ``next`` (the following domain in sorted order) or ``random`` (seeded).
        seed: seed for ``random``.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog({"image": f"{i}.png", "domain": "abc"[i % 3], "label": "normal"} for i in range(9))
        >>> [(f.name, f.info["val_domain"]) for f in leave_one_domain_out(cat)]
        [('test=a', 'b'), ('test=b', 'c'), ('test=c', 'a')]
    """
    if domain_column not in catalog:
        raise ValueError(f"the catalog has no {domain_column!r} column")
    if val_domain not in ("next", "random"):
        raise ValueError(f"val_domain must be 'next' or 'random', got {val_domain!r}")
    domains_of_rows = catalog[domain_column].astype(str).to_numpy()
    if (domains_of_rows == "").any():
        raise ValueError(f"{int((domains_of_rows == '').sum())} rows have no {domain_column}")
    groups = _groups(catalog)
    spread = pd.Series(domains_of_rows).groupby(groups).nunique()
    if (spread > 1).any():
        bad = spread[spread > 1].index.tolist()[:5]
        raise ValueError(f"groups {bad} lie in more than one {domain_column}; a domain split would leak them")
    domains = sorted(set(domains_of_rows))
    if len(domains) < 3:
        raise ValueError(f"leave-one-domain-out needs at least 3 domains, found {domains}")
    rng = np.random.default_rng(seed)
    folds = []
    for i, test in enumerate(domains):
        others = [d for d in domains if d != test]
        val = (
            domains[(i + 1) % len(domains)]
            if val_domain == "next"
            else others[int(rng.integers(len(others)))]
        )
        folds.append(
            Fold(
                name=f"test={test}",
                train=np.flatnonzero((domains_of_rows != test) & (domains_of_rows != val)),
                val=np.flatnonzero(domains_of_rows == val),
                test=np.flatnonzero(domains_of_rows == test),
                info={"test_domain": test, "val_domain": val},
            )
        )
    check_no_leakage(folds, catalog)
    return folds


def check_no_leakage(folds: list[Fold], catalog: pd.DataFrame) -> None:
    """Raise ``AssertionError`` if a group appears in two parts of a fold or a row in two parts.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog([{"image": "a"}, {"image": "a"}])
        >>> check_no_leakage([Fold("f", np.array([0]), np.array([], int), np.array([1]))], cat)
        Traceback (most recent call last):
        ...
        AssertionError: fold f: groups in both train and test: ['a']
    """
    groups = catalog["group"].astype(str).to_numpy()
    for fold in folds:
        parts = fold.parts()
        names = list(parts)
        for a_i, a in enumerate(names):
            for b in names[a_i + 1 :]:
                if np.intersect1d(parts[a], parts[b]).size:
                    raise AssertionError(f"fold {fold.name}: rows in both {a} and {b}")
                shared = set(groups[parts[a]]) & set(groups[parts[b]])
                if shared:
                    raise AssertionError(
                        f"fold {fold.name}: groups in both {a} and {b}: {sorted(shared)[:5]}"
                    )


def describe_folds(folds: list[Fold], catalog: pd.DataFrame) -> pd.DataFrame:
    """One row per fold and part: rows, groups, positives, positive rate, hard cases and domains.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog({"image": f"{i}.png", "domain": "abc"[i % 3], "label": "normal"} for i in range(9))
        >>> describe_folds(leave_one_domain_out(cat), cat).columns.tolist()[:4]
        ['fold', 'part', 'rows', 'groups']
    """
    records = []
    for fold in folds:
        for part, idx in fold.parts().items():
            rows = catalog.iloc[idx]
            positives = int((rows["target"] == 1).sum()) if "target" in rows else 0
            records.append(
                {
                    "fold": fold.name,
                    "part": part,
                    "rows": len(rows),
                    "groups": int(rows["group"].nunique()),
                    "positives": positives,
                    "positive_rate": positives / len(rows) if len(rows) else float("nan"),
                    "hard": int(rows["hard"].sum()) if "hard" in rows else 0,
                    "domains": ", ".join(sorted(rows["domain"].astype(str).unique()))
                    if "domain" in rows
                    else "",
                }
            )
    return pd.DataFrame.from_records(records)
