"""benchmarks/bench_helpers.py: every member on every view from one pass, merging views, the focus measure."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from mitoscope.data.stain import STAIN_TTA_SCALES
from mitoscope.data.transforms import sharpen
from mitoscope.inference.classify import Classifier
from mitoscope.io.catalog import make_catalog
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from tiny_models import TINY_CLASSIFIER, tiny_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_helpers import laplacian_variance, member_view_probs, merge_views  # a benchmark module

ARCH = TINY_CLASSIFIER
SIZE = 32


def _contract() -> ModelContract:
    return ModelContract(
        architecture=ARCH,
        kwargs={},
        task="classification",
        input_size=SIZE,
        mpp=0.5,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        thresholds={"default": 0.5},
        config={},
    )


def test_member_view_probs_reproduce_every_variant(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    patches = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(7)]
    run = tmp_path / "run"
    for k in range(2):
        save_checkpoint(run / f"fold_{k}" / "model.pt", tiny_classifier(k), _contract())
    files = []
    for i, p in enumerate(patches):
        files.append(str(tmp_path / f"p{i}.png"))
        Image.fromarray(p).save(files[-1])
    catalog = make_catalog({"image": f} for f in files)
    clf = Classifier.from_path(run)
    pv = member_view_probs(clf, catalog, batch_size=4)
    assert pv.shape == (7, 2, 8)
    np.testing.assert_allclose(pv[:, :, 0], clf.predict_arrays_full(patches).member_probs, atol=1e-6)
    tta = Classifier.from_path(run, tta=True)
    np.testing.assert_allclose(merge_views(pv), tta.predict_arrays_full(patches).member_probs, atol=1e-5)
    np.testing.assert_allclose(
        clf.ensemble.combine(merge_views(pv)).prob, tta.predict_arrays(patches), atol=1e-5
    )
    assert member_view_probs(clf, catalog, views=False).shape == (7, 2, 1)
    assert member_view_probs(clf, catalog.iloc[:0]).shape == (0, 2, 8)
    stained = Classifier.from_path(run, stain_tta=True)
    spv = member_view_probs(stained, catalog, batch_size=4)
    assert spv.shape == (7, 2, 8 * (1 + len(STAIN_TTA_SCALES)))
    np.testing.assert_allclose(spv[:, :, :8], pv, atol=1e-6)  # stain variant 0 is the unchanged patch
    np.testing.assert_allclose(
        merge_views(spv),
        Classifier.from_path(run, tta=True, stain_tta=True).predict_arrays_full(patches).member_probs,
        atol=1e-5,
    )


def test_merge_views_mean_logit_or_mean_probability() -> None:
    probs = np.array([[0.9, 0.5]])
    assert merge_views(probs, "prob").round(3).tolist() == [0.7]
    logit = np.log(0.9 / 0.1) / 2
    assert merge_views(probs)[0] == pytest.approx(1 / (1 + np.exp(-logit)))
    with pytest.raises(ValueError, match="'logits' or 'prob'"):
        merge_views(probs, "median")


def test_laplacian_variance_orders_blur_and_sharpening() -> None:
    assert laplacian_variance(np.full((8, 8, 3), 90, np.uint8)) == 0.0
    noise = np.random.default_rng(0).normal(128, 60, (128, 128, 3))
    img = np.clip(gaussian_filter(noise, (1.5, 1.5, 0)), 0, 255).astype(np.uint8)
    assert (
        laplacian_variance(sharpen(img, 2.5))
        > laplacian_variance(img)
        > laplacian_variance(sharpen(img, 0.4))
    )
