"""An ``analyze`` output directory made with stand-in models, shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
from mitoscope.inference.analyze import AnalysisConfig
from mitoscope.inference.cohort import Pipeline, run_cohort
from mitoscope.io.slide_base import ArraySlide

FIGURES = pd.DataFrame(
    {
        "x": [400.0, 460.0, 520.0, 600.0, 1500.0, 1700.0, 300.0, 1900.0],
        "y": [500.0, 560.0, 480.0, 620.0, 1200.0, 300.0, 1300.0, 1400.0],
        "p": [0.95, 0.81, 0.12, 0.30, 0.66, 0.05, 0.22, 0.47],
    }
)


def he_like_slide(seed: int) -> np.ndarray:
    """A pinkish 2000×1600 px image with purple nuclei and a white background corner."""
    rng = np.random.default_rng(seed)
    h, w = 1600, 2000
    img = np.empty((h, w, 3), np.uint8)
    img[...] = (236, 170, 205)
    img[:, :, 1] = np.clip(170 + rng.normal(0, 8, (h, w)), 0, 255)
    img[:300, 1500:] = 245
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(120):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(8, 16)
        sl = (slice(max(cy - r, 0), cy + r), slice(max(cx - r, 0), cx + r))
        disk = (yy[sl] - cy) ** 2 + (xx[sl] - cx) ** 2 < r * r
        img[sl][disk] = (120, 80, 160)
    for x, y in FIGURES[["x", "y"]].to_numpy().astype(int):
        img[y - 10 : y + 10, x - 6 : x + 6] = (50, 20, 80)
    return img


def make_analysis(tmp_path: Path, n_slides: int = 2, missing: bool = True) -> Path:
    paths = []
    for k in range(n_slides):
        p = tmp_path / f"case_{k}.npy"
        np.save(p, he_like_slide(k))
        paths.append(p)
    if missing:
        paths.append(tmp_path / "lost_slide.npy")

    def detect(slide):
        return pd.DataFrame(
            {"x": FIGURES["x"], "y": FIGURES["y"], "score": np.linspace(0.95, 0.6, len(FIGURES))}
        )

    def tissue_area(slide):  # as `analyze` does: the tissue mask's area (the report outlines that mask)
        return tissue_area_mm2(*slide_tissue_mask(slide))

    classify = lambda s, pts: FIGURES["p"].to_numpy()  # noqa: E731
    pipe = Pipeline(detect, classify, tissue_area, 0.5, {"detection_threshold": 0.55})
    out = tmp_path / "analysis"
    run_cohort(
        paths,
        out,
        make_pipeline=lambda: pipe,
        config=AnalysisConfig(hpf_area_mm2=0.02, thumbnail_size=800),
        formats=(),
        open_slide_fn=lambda path, mpp: ArraySlide(np.load(path), mpp=0.25, path=path),
    )
    return out


@pytest.fixture
def analysis_dir(tmp_path: Path) -> Path:
    return make_analysis(tmp_path)
