"""Helpers that only the benchmarks use: every member's probability on every test-time view from one pass,
merging views, a focus measure.

Imported by the scripts of this folder (``from bench_helpers import ...``: scripts run from this folder); the
package never imports it. Tested in ``tests/test_bench_helpers.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

    from mitoscope.inference.classify import Classifier


@torch.no_grad()
def member_view_probs(
    clf: Classifier,
    catalog: pd.DataFrame,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    views: bool = True,
    source: object = None,
) -> np.ndarray:
    """P(atypical) of every ensemble member of ``clf`` on every TTA view, ``(N, M, V)``: ``V`` = 8 dihedral views
    (1 without ``views``), times 5 stain variants with ``clf.stain_tta`` (view ``8·s + d``, stain variant 0
    unchanged).

    For comparing single model / ensemble / TTA from one pass over the data (benchmarks, ablations):
    ``member_probs = merge_views(p)``; ``clf.ensemble.combine(member_probs)`` gives the ensemble output.

    Examples:
        >>> p = member_view_probs(clf, catalog)  # doctest: +SKIP
        >>> single, single_tta = p[:, 0, 0], merge_views(p)[:, 0]  # doctest: +SKIP
    """
    from mitoscope.data.stain import STAIN_TTA_SCALES
    from mitoscope.engine.ensemble import model_prob
    from mitoscope.inference.classify import precision_context, prefetch

    loader = clf._catalog_loader(catalog, batch_size=batch_size, num_workers=num_workers, source=source)
    chunks = []
    for batch in prefetch(loader, nice=clf.reader_nice):
        vs = clf._views(batch, views)
        with precision_context(clf.precision, clf.device):
            per_model = [torch.stack([model_prob(m, v) for v in vs], dim=1) for m in clf.ensemble.models]
        chunks.append(torch.stack(per_model, dim=1).cpu().numpy())  # (B, M, V)
    if not chunks:
        n_views = (8 if views else 1) * (1 + len(STAIN_TTA_SCALES) if clf.stain_tta else 1)
        return np.zeros((0, len(clf.ensemble), n_views))
    return np.concatenate(chunks).astype(np.float64)


def merge_views(probs: np.ndarray, how: str = "logits", eps: float = 1e-6) -> np.ndarray:
    """Merge the last (view) axis of probabilities: mean logit (``"logits"``) or mean probability (``"prob"``).

    Examples:
        >>> merge_views(np.array([[0.9, 0.5]]), "prob").round(3).tolist()
        [0.7]
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    if how == "prob":
        return p.mean(axis=-1)
    if how != "logits":
        raise ValueError(f"how must be 'logits' or 'prob', got {how!r}")
    logit = np.log(p) - np.log1p(-p)
    return 1.0 / (1.0 + np.exp(-logit.mean(axis=-1)))


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, a standard focus measure: higher is sharper.

    Examples:
        >>> laplacian_variance(np.full((8, 8, 3), 90, np.uint8))
        0.0
    """
    from scipy.ndimage import laplace

    return float(laplace(image[..., :3].astype(np.float32).mean(-1)).var())
