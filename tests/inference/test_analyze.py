"""Per-slide analysis: statistics on a synthetic slide with known figures, bundle written and read back."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mitoscope.inference.analyze import (
    AnalysisConfig,
    analyze_slide,
    is_complete,
    read_slide_result,
    slide_name_of,
    summarize_figures,
    write_slide_result,
)
from mitoscope.io.slide_base import ArraySlide, Slide

RED, BLUE = (230, 20, 20), (20, 20, 230)


def make_slide(mpp: float = 0.25) -> tuple[ArraySlide, pd.DataFrame]:
    """A 3000×2000 px slide with 10 figures: red squares are 'atypical', blue ones 'normal'.

    Six figures are clustered within 300 px (75 µm at 0.25 µm/px), four are spread out.
    """
    rng = np.random.default_rng(1)
    img = np.full((2000, 3000, 3), 235, np.uint8)
    pts = pd.DataFrame(
        {
            "x": [1000, 1060, 1120, 1180, 1240, 1290, 200, 2800, 2500, 400],
            "y": [1000, 1050, 1100, 1150, 1200, 1250, 1800, 200, 1700, 300],
            "atypical": [True, True, False, False, False, True, False, True, False, False],
        }
    ).astype({"x": float, "y": float})
    for x, y, a in pts.itertuples(index=False):
        img[int(y) - 8 : int(y) + 8, int(x) - 8 : int(x) + 8] = RED if a else BLUE
    img += rng.integers(0, 5, img.shape, dtype=np.uint8)
    return ArraySlide(img, mpp=mpp, path="/data/case_7.tif"), pts


def stand_in_detect(points: pd.DataFrame):
    def detect(slide: Slide) -> pd.DataFrame:
        return pd.DataFrame({"x": points["x"], "y": points["y"], "score": np.linspace(0.9, 0.5, len(points))})

    return detect


def colour_classifier(mpp: float = 0.5, size: int = 16):
    """A classifier stand-in that really reads the crops (at its own mpp) and calls red 'atypical'."""

    calls: dict[str, object] = {}

    def classify(slide: Slide, points: pd.DataFrame) -> np.ndarray:
        crops = [slide.read_centered(x, y, size, mpp=mpp) for x, y in points[["x", "y"]].to_numpy()]
        calls["shapes"] = {c.shape for c in crops}
        red = np.array([c[..., 0].mean() - c[..., 2].mean() for c in crops])
        return 1.0 / (1.0 + np.exp(-red / 20.0))

    return classify, calls


def test_slide_statistics_on_known_points() -> None:
    slide, pts = make_slide()
    classify, calls = colour_classifier()
    result = analyze_slide(
        slide,
        detect=stand_in_detect(pts),
        classify=classify,
        tissue_area=lambda s: 0.25,
        atypical_threshold=0.5,
        config=AnalysisConfig(hpf_area_mm2=0.01, hotspot_step_um=5),  # 400×400 px window
        extra_summary={"detection_threshold": 0.5},
    )
    s = result.summary
    assert result.name == "case_7"
    assert s["mitotic_count"] == 10
    assert s["atypical_count"] == 4 and s["normal_count"] == 6
    assert s["atypical_fraction"] == pytest.approx(0.4)
    assert s["density_per_mm2"] == pytest.approx(10 / 0.25)
    # The cluster spans 290×250 px, so the 400×400 px window holds all six.
    assert s["hotspot_count"] == 6
    assert s["hotspot_atypical_count"] == 3
    assert s["detection_threshold"] == 0.5 and s["atypical_threshold"] == 0.5
    # Classes follow the colours, i.e. the crops were read around the right points at the classifier's mpp.
    assert list(result.figures["class"]) == ["atypical" if a else "normal" for a in pts["atypical"]]
    assert calls["shapes"] == {(16, 16, 3)}
    # Millimetres from pixels.
    assert result.figures["x_mm"].iloc[0] == pytest.approx(1000 * 0.25 / 1000)
    # Gallery sorted by P(atypical).
    p = result.figures["p_atypical"].to_numpy()[result.crop_index]
    assert np.all(np.diff(p) <= 0)
    assert result.crops.shape == (10, 96, 96, 3)
    assert result.thumbnail.shape[1] == 1024


def test_threshold_from_config_overrides_and_whole_slide_area() -> None:
    slide, pts = make_slide()
    probs = np.linspace(0.05, 0.95, 10)
    result = analyze_slide(
        slide,
        detect=stand_in_detect(pts),
        classify=lambda s, p: probs,
        atypical_threshold=0.5,
        config=AnalysisConfig(atypical_threshold=0.9, thumbnail_size=0, max_crops=4),
    )
    assert result.summary["atypical_count"] == int((probs >= 0.9).sum())
    assert result.summary["atypical_threshold"] == 0.9
    assert result.summary["tissue_area_mm2"] == pytest.approx(3000 * 2000 * 0.25**2 / 1e6)
    assert result.thumbnail is None
    assert len(result.crop_index) == 4  # the two most and the two least atypical
    assert set(result.crop_index) == {9, 8, 1, 0}


def test_no_figures() -> None:
    slide, _ = make_slide()
    result = analyze_slide(
        slide,
        detect=lambda s: pd.DataFrame({"x": [], "y": [], "score": []}),
        classify=lambda s, p: pytest.fail("classifier must not run without figures"),
        config=AnalysisConfig(thumbnail_size=0),
    )
    assert result.summary["mitotic_count"] == 0
    assert result.summary["hotspot_count"] == 0
    assert math.isnan(result.summary["atypical_fraction"])
    assert result.crops is None


def test_classifier_length_mismatch_raises() -> None:
    slide, pts = make_slide()
    with pytest.raises(ValueError, match="3 probabilities for 10 figures"):
        analyze_slide(slide, detect=stand_in_detect(pts), classify=lambda s, p: np.zeros(3))


def test_summarize_figures_hpf_rectangle() -> None:
    figs = pd.DataFrame({"x": [0.0, 500.0], "y": [0.0, 0.0], "p_atypical": [0.1, 0.6]})
    s, hs = summarize_figures(
        figs,
        slide_dims=(2000, 2000),
        mpp=1.0,
        tissue_area_mm2=None,
        atypical_threshold=0.5,
        config=AnalysisConfig(hpf_area_mm2=0.3, hotspot_aspect=3.0),  # 948×316 px
    )
    assert hs.w / hs.h == pytest.approx(3.0)
    assert s["hotspot_count"] == 2
    assert math.isnan(s["density_per_mm2"])


def test_bundle_round_trip(tmp_path) -> None:
    slide, pts = make_slide()
    classify, _ = colour_classifier()
    result = analyze_slide(
        slide, detect=stand_in_detect(pts), classify=classify, extra_summary={"fingerprint": "abc"}
    )
    out = write_slide_result(tmp_path / "slides" / result.name, result, formats=())
    assert is_complete(out) and is_complete(out, "abc") and not is_complete(out, "other")
    back = read_slide_result(out)
    pd.testing.assert_frame_equal(back.figures, result.figures, check_dtype=False)
    assert back.summary["mitotic_count"] == 10
    assert back.hotspot == result.hotspot
    assert back.thumbnail.shape == result.thumbnail.shape
    np.testing.assert_array_equal(back.crops, result.crops)
    json.loads((out / "summary.json").read_text())  # strict JSON
    # No temporary directories left behind.
    assert [p.name for p in (tmp_path / "slides").iterdir()] == ["case_7"]


def test_failed_write_leaves_previous_bundle(tmp_path, monkeypatch) -> None:
    slide, pts = make_slide()
    classify, _ = colour_classifier()
    result = analyze_slide(
        slide, detect=stand_in_detect(pts), classify=classify, config=AnalysisConfig(thumbnail_size=0)
    )
    out = write_slide_result(tmp_path / "case_7", result, formats=())
    before = (out / "case_7.csv").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    result.figures = result.figures.iloc[:2]
    with pytest.raises(OSError, match="disk full"):
        write_slide_result(out, result, formats=())
    assert (out / "case_7.csv").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["case_7"]


def test_empty_bundle_round_trip(tmp_path) -> None:
    slide, _ = make_slide()
    result = analyze_slide(
        slide,
        detect=lambda s: pd.DataFrame({"x": [], "y": []}),
        classify=lambda s, p: np.zeros(0),
        config=AnalysisConfig(thumbnail_size=0),
    )
    back = read_slide_result(write_slide_result(tmp_path / "x", result, formats=()))
    assert back.summary["mitotic_count"] == 0 and math.isnan(back.summary["atypical_fraction"])
    assert len(back.figures) == 0 and back.crops is None


def test_slide_name_of() -> None:
    assert slide_name_of("a/b/c.svs") == "c"
    assert slide_name_of("x.ome.tif") == "x"


def test_classifier_labels_used_unless_threshold_forced() -> None:
    slide, pts = make_slide()
    probs = np.full(10, 0.4)
    votes = np.array([1, 0] * 5)
    r = analyze_slide(
        slide,
        detect=stand_in_detect(pts),
        classify=lambda s, p: (probs, votes),
        config=AnalysisConfig(thumbnail_size=0, max_crops=0),
    )
    assert r.summary["atypical_count"] == 5
    assert list(r.figures["class"][:2]) == ["atypical", "normal"]
    r = analyze_slide(
        slide,
        detect=stand_in_detect(pts),
        classify=lambda s, p: (probs, votes),
        config=AnalysisConfig(thumbnail_size=0, max_crops=0, atypical_threshold=0.3),
    )
    assert r.summary["atypical_count"] == 10


def test_bundle_formats_carry_normal_and_atypical(tmp_path) -> None:
    from mitoscope.io.geojson import read_geojson

    slide, pts = make_slide()
    classify, _ = colour_classifier()
    result = analyze_slide(
        slide,
        detect=stand_in_detect(pts),
        classify=classify,
        config=AnalysisConfig(thumbnail_size=0, max_crops=0),
    )
    out = write_slide_result(tmp_path / "case_7", result, formats=("geojson", "midog", "sqlite"))
    files = json.loads((out / "summary.json").read_text())["files"]
    assert set(files) == {"csv", "geojson", "midog", "sqlite"}
    assert is_complete(out)
    gj = json.loads((out / files["geojson"]).read_text())["features"]
    names = [f["properties"]["classification"]["name"] for f in gj]
    assert names == ["atypical" if a else "normal" for a in pts["atypical"]]
    colours = {
        f["properties"]["classification"]["name"]: tuple(f["properties"]["classification"]["color"])
        for f in gj
    }
    assert colours["atypical"] != colours["normal"]
    assert len(read_geojson(out / files["geojson"])) == 10
    midog = json.loads((out / files["midog"]).read_text())
    assert len(midog["points"]) == 10 and midog["points"][0]["point"][0] == pytest.approx(0.25)
    # Removing one listed file makes the bundle incomplete (it would be redone).
    (out / files["midog"]).unlink()
    assert not is_complete(out)


def test_bundle_keeps_the_tissue_mask_the_analysis_used(tmp_path) -> None:
    from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2

    img = np.full((1000, 1600, 3), 240, np.uint8)
    img[200:800, 300:1100] = (200, 100, 170)  # one block of pink tissue on glass
    slide = ArraySlide(img, mpp=0.5, path="tissue_case.png")
    det = stand_in_detect(pd.DataFrame({"x": [500.0], "y": [500.0]}))
    cls = lambda s, p: np.array([0.2])  # noqa: E731
    config = AnalysisConfig(thumbnail_size=400)

    def masked(sl):
        return tissue_area_mm2(*slide_tissue_mask(sl))

    # The area came from the tissue mask: the mask is kept for the report's outline and round-trips.
    r = analyze_slide(slide, detect=det, classify=cls, tissue_area=masked, config=config)
    assert r.tissue_mask is not None and r.tissue_mask.dtype == bool
    assert 0.25 < r.tissue_mask.mean() < 0.4  # 600×800 of 1000×1600 px
    back = read_slide_result(write_slide_result(tmp_path / "a", r, formats=()))
    np.testing.assert_array_equal(back.tissue_mask, r.tissue_mask)
    # An explicit mask function is used as it is.
    given = np.ones((10, 16), bool)
    r = analyze_slide(slide, detect=det, classify=cls, tissue_area=masked, config=config,
                      tissue_mask=lambda sl: (given, 50.0))  # fmt: skip
    assert r.tissue_mask is given or np.array_equal(r.tissue_mask, given)
    # Without a tissue mask (whole-slide area, e.g. --no-tissue) or without a thumbnail: no outline.
    whole = lambda sl: 1600 * 1000 * 0.5**2 / 1e6  # noqa: E731
    assert (
        analyze_slide(slide, detect=det, classify=cls, tissue_area=whole, config=config).tissue_mask is None
    )
    r = analyze_slide(
        slide, detect=det, classify=cls, tissue_area=masked, config=AnalysisConfig(thumbnail_size=0)
    )
    assert r.tissue_mask is None
    assert not (tmp_path / "b" / "tissue.png").exists()
    write_slide_result(tmp_path / "b", r, formats=())
    assert (
        not (tmp_path / "b" / "tissue.png").exists() and read_slide_result(tmp_path / "b").tissue_mask is None
    )
