"""A second look at each detector candidate, at full resolution (the two-stage design of the MIDOG 2021/2022
leaders: candidate detection, then a patch classifier).

The detector works at 0.5 µm/px, where chromatin detail is gone, and on tissue it has never seen it calls
fibroblast nuclei, ink and keratin mitoses. The verifier is a binary patch classifier (class names
``hard negative`` / ``mitotic figure``) that reads each candidate centred at its own mpp (0.25 µm/px) and
gives P(mitotic figure). A candidate is a detection above the detector's low ``candidate`` threshold; its
final score is the verifier's probability, and it is a mitotic figure when that reaches the ``verified``
threshold. Both thresholds are chosen together on validation data for a realistic figure density.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mitoscope.inference.classify import Classifier
    from mitoscope.io.slide_base import Slide

POSITIVE_LABEL = "mitotic figure"
BELOW_THRESHOLD_LABEL = "non-mitotic figure"


def verify_candidates(
    slide: Slide,
    candidates: pd.DataFrame,
    verifier: Classifier,
    *,
    threshold: float,
    keep_below_threshold: bool = False,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Score detector ``candidates`` (``x, y, score``) with the verifier.

    Returns:
        The candidates with ``detector_score`` (the detector's score), ``score`` (P(mitotic figure) from the
        verifier) and ``label`` by ``threshold``, by descending score; only those at or above ``threshold``
        unless ``keep_below_threshold``. ``attrs`` are kept, with ``verified_threshold`` added.

    Examples:
        >>> import torch
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> class Half:
        ...     def classify_points(self, slide, points, batch_size=64):
        ...         return np.full(len(points), 0.5)
        >>> c = pd.DataFrame({"x": [5.0, 9.0], "y": [5.0, 9.0], "score": [0.9, 0.2], "label": "mitotic figure"})
        >>> verify_candidates(ArraySlide(np.zeros((16, 16, 3), np.uint8)), c, Half(), threshold=0.6,
        ...                   keep_below_threshold=True)["label"].tolist()
        ['non-mitotic figure', 'non-mitotic figure']
    """
    out = candidates.copy()
    probs = (
        np.asarray(verifier.classify_points(slide, out, batch_size=batch_size), dtype=float)
        if len(out)
        else np.zeros(0)
    )
    out["detector_score"] = out["score"].to_numpy(dtype=float) if len(out) else np.zeros(0)
    out["score"] = probs
    above = probs >= float(threshold)
    out["label"] = np.where(above, POSITIVE_LABEL, BELOW_THRESHOLD_LABEL).astype(object)
    if not keep_below_threshold:
        out = out[above]
    out = out.sort_values("score", ascending=False, kind="mergesort").reset_index(drop=True)
    attrs: dict[str, Any] = dict(candidates.attrs)
    attrs["verified_threshold"] = float(threshold)
    out.attrs.update(attrs)
    return out
