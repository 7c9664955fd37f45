"""The HTML report: structure, numbers and self-containedness (the browser test renders it for real)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from mitoscope.report.html import write_report
from mitoscope.report.plots import draw_overview, histogram_svg, stacked_bars_svg
from mitoscope.utils.errors import InputError


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.items.append((tag, {k: v or "" for k, v in attrs}))

    def by_id(self, id_: str):
        return [a for t, a in self.items if a.get("id") == id_]

    def with_class(self, cls: str):
        return [a for t, a in self.items if cls in a.get("class", "").split()]


def parse(path) -> Elements:
    p = Elements()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_slide_page_structure_and_numbers(analysis_dir) -> None:
    index = write_report(analysis_dir)
    assert index == analysis_dir / "report" / "index.html"
    page = analysis_dir / "report" / "case_0.html"
    el = parse(page)
    for id_ in ("summary", "counts", "overview", "histogram", "score-histogram", "gallery", "report-data"):
        assert el.by_id(id_), id_
    crops = el.with_class("crop")
    assert len(crops) == 8
    assert len(el.with_class("atypical")) == 3  # P ≥ 0.5: 0.95, 0.81, 0.66
    ps = [float(c["data-p"]) for c in crops]
    assert ps == sorted(ps, reverse=True)
    bars = [int(a["data-count"]) for a in el.with_class("bar")]
    assert sum(bars) == 16  # two histograms of 8 figures
    text = page.read_text()
    # Self-contained: every image is embedded.
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert 'data-key="hotspot_count"' in text and 'data-key="atypical_fraction"' in text
    # The overview outlines the tissue the analysis used (its mask is in the bundle).
    assert el.by_id("tissue-legend") and (analysis_dir / "slides" / "case_0" / "tissue.png").is_file()


def test_cohort_page_lists_slides_and_failures(analysis_dir) -> None:
    el = parse(write_report(analysis_dir))
    rows = el.with_class("slide-row")
    assert [r["data-slide"] for r in rows] == ["case_0", "case_1", "lost_slide"]
    assert "failed" in rows[2]["class"]
    links = [a["href"] for t, a in el.items if t == "a"]
    assert links == ["case_0.html", "case_1.html"]
    assert el.by_id("cohort-chart") and el.by_id("failures")
    text = (analysis_dir / "report" / "index.html").read_text()
    assert "lost_slide" in text and "not found" in text


def test_report_needs_an_analysis_dir(tmp_path) -> None:
    with pytest.raises(InputError, match=r"cohort\.csv"):
        write_report(tmp_path)


def test_histogram_counts_and_threshold_line() -> None:
    svg = histogram_svg(np.array([0.05, 0.5, 0.55, 0.99, np.nan]), bins=4, threshold=0.5)
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', svg)]
    assert counts == [1, 0, 2, 1]
    assert 'class="threshold"' in svg


def test_bars_and_overview_drawing() -> None:
    svg = stacked_bars_svg(["a", "b<c"], [2, 0], [1, 3])
    assert "b&lt;c" in svg and svg.count("bar-atypical") == 2
    thumb = np.full((50, 100, 3), 255, np.uint8)
    figs = pd.DataFrame({"x": [200.0, 800.0], "y": [250.0, 250.0], "class": ["normal", "atypical"]})
    out = draw_overview(thumb, figs, (1000, 500), hotspot=(0, 0, 500, 250))
    # Green around the normal figure at (20, 25) px, red around the atypical one at (80, 25).
    assert out[25, 15, 1] > out[25, 15, 0]
    assert out[25, 75, 0] > out[25, 75, 1]
    assert not np.array_equal(out[0, :50], thumb[0, :50])  # hotspot outline
    mask = np.zeros((5, 10), bool)
    mask[1:4, 1:9] = True
    outlined = draw_overview(thumb, figs.iloc[:0], (1000, 500), tissue_mask=mask)
    assert outlined[10, 50].tolist() == [10, 92, 255] and outlined[25, 50].tolist() == [255, 255, 255]
