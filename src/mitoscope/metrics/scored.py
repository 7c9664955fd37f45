"""A predictions CSV joined to its labelled source: what ``evaluate classification`` and the benchmarks score."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from mitoscope.data.sources import load_catalog
from mitoscope.metrics.classification import join_predictions


@dataclasses.dataclass
class ScoredPredictions:
    """Predictions matched to ground truth.

    Attributes:
        joined: the labelled truth rows that have a prediction (``target``, ``p_atypical``, ``pred_label`` when
            the CSV has a ``label`` column, and the source's own columns such as ``domain``).
        unmatched: prediction rows that match no labelled record.
        n_predictions: rows in the predictions CSV.
        n_truth: labelled records in the source.
    """

    joined: Any
    unmatched: Any
    n_predictions: int
    n_truth: int

    @property
    def targets(self) -> np.ndarray:
        """Ground truth, 1 atypical / 0 normal."""
        return self.joined["target"].to_numpy().astype(np.int64)

    @property
    def probs(self) -> np.ndarray:
        """P(atypical) of each matched record."""
        return self.joined["p_atypical"].to_numpy().astype(np.float64)

    @property
    def decision_source(self) -> str | None:
        """Where :meth:`label_decisions` comes from: ``"threshold column"``, ``"label column"`` or None."""
        if "pred_threshold" in self.joined.columns:
            return "threshold column"
        return "label column" if self.label_decisions() is not None else None

    def label_decisions(self) -> np.ndarray | None:
        """The model's own decisions as 1/0, or None when the CSV has none.

        A per-row ``threshold`` column decides (``p_atypical >= threshold``): a training run's
        ``oof_predictions.csv`` has one, and its ``label`` column is the ground truth, not a decision.
        Otherwise the CSV's ``label`` column (``mitoscope classify`` writes the model's decision there).
        """
        if "pred_threshold" in self.joined.columns:
            return (self.probs >= self.joined["pred_threshold"].to_numpy(dtype=np.float64)).astype(np.int64)
        if "pred_label" not in self.joined.columns:
            return None
        names = self.joined["pred_label"].astype(str).str.lower()
        if not names.isin(["atypical", "normal"]).all():
            return None
        return (names == "atypical").astype(np.int64).to_numpy()


def read_scored_predictions(
    predictions: str | os.PathLike[str], truth: str | os.PathLike[str]
) -> ScoredPredictions:
    """Read a ``mitoscope classify`` CSV (``file``/``image``, ``p_atypical``[, ``label``]) and join it to ``truth``.

    ``truth`` is any labelled source :func:`mitoscope.data.sources.load_catalog` reads (AMi-Br, MIDOG 2025,
    AtNorM-MD, a catalog CSV, class folders). Raises ``ValueError``/``FileNotFoundError`` naming the file.

    Examples:
        >>> read_scored_predictions("no/such.csv", "no/truth")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: no/such.csv: predictions file not found
    """
    import pandas as pd

    if not os.path.isfile(predictions):
        raise FileNotFoundError(f"{predictions}: predictions file not found")
    pred = pd.read_csv(predictions)
    catalog = load_catalog(truth)
    joined, unmatched = join_predictions(
        pred, catalog, file_column="file" if "file" in pred.columns else "image"
    )
    if joined.empty:
        raise ValueError(f"{predictions}: no prediction matches a labelled record of {truth}")
    n_truth = int((catalog["target"].astype(int) >= 0).sum())
    return ScoredPredictions(joined, unmatched, n_predictions=len(pred), n_truth=n_truth)
