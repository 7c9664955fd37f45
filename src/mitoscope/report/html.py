"""Self-contained HTML reports: one page per slide and one for the cohort.

Images are embedded as base64 ``data:`` URIs and charts as inline SVG, so each file opens anywhere on its own.
Elements carry stable ids and classes (for readers' styles and for tests):

- slide page: ``#summary`` (filled by the inline script from ``#report-data``; ``body[data-rendered="1"]`` once
  it ran), ``#counts`` (the counts table; rows ``tr[data-key=...]``), ``#overview`` (thumbnail with figures and
  the hotspot drawn, and the analysed tissue outlined when the bundle has its mask: ``#tissue-legend``),
  ``#histogram`` (P(atypical)), ``#score-histogram`` (detection scores), ``#gallery`` with one
  ``figure.crop.normal|.atypical[data-p]`` per crop, sorted by P(atypical) (``#gallery-count`` shows how many are
  visible; the buttons ``#show-all``, ``#show-atypical``, ``#show-normal`` filter them);
- cohort page: ``#summary``, ``#cohort-table`` (``tr.slide-row[data-slide]`` with a link to the slide page),
  ``#cohort-chart`` (stacked bars of normal/atypical counts), ``#failures``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mitoscope.inference.analyze import SlideResult, read_slide_result
from mitoscope.report.plots import (
    ATYPICAL_COLOR,
    HOTSPOT_COLOR,
    NORMAL_COLOR,
    TISSUE_COLOR,
    data_uri,
    draw_overview,
    histogram_svg,
    stacked_bars_svg,
)
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable

REPORT_DIR = "report"

_CSS = f"""
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1b1b1b; }}
h1 {{ font-size: 22px; margin: 0 0 6px; }} h2 {{ font-size: 17px; margin: 22px 0 8px; }}
#summary {{ font-size: 16px; padding: 10px 12px; background: #f2f4f7; border-radius: 6px; min-height: 20px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #d5d9df; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ background: #eef1f5; }}
.row {{ display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }}
#overview {{ max-width: 100%; max-height: 90vh; border: 1px solid #ccc; }}
.legend span {{ display: inline-block; margin-right: 14px; font-size: 13px; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border-radius: 6px; margin-right: 4px;
          vertical-align: -1px; }}
#gallery {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure.crop {{ margin: 0; width: 104px; font-size: 11px; text-align: center; }}
figure.crop img {{ width: 96px; height: 96px; border: 4px solid {NORMAL_COLOR}; image-rendering: auto; }}
figure.crop.atypical img {{ border-color: {ATYPICAL_COLOR}; }}
figure.crop.hidden {{ display: none; }}
button {{ margin-right: 6px; }}
.muted {{ color: #666; font-size: 12px; }}
.failed td {{ background: #fff0f0; }}
"""

_SLIDE_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var s = data.summary;
  var frac = (s.atypical_fraction === null) ? 'n/a' : (100 * s.atypical_fraction).toFixed(1) + '%';
  var dens = (s.density_per_mm2 === null) ? 'n/a' : s.density_per_mm2.toFixed(2);
  document.getElementById('summary').textContent =
    s.mitotic_count + ' mitotic figures (' + s.atypical_count + ' atypical, ' + frac + '); ' +
    dens + ' per mm\\u00b2 of tissue; ' + s.hotspot_count + ' in the densest ' +
    s.hotspot_area_mm2 + ' mm\\u00b2';
  var crops = Array.prototype.slice.call(document.querySelectorAll('#gallery figure.crop'));
  function show(kind) {
    var n = 0;
    crops.forEach(function (c) {
      var on = kind === 'all' || c.classList.contains(kind);
      c.classList.toggle('hidden', !on);
      if (on) { n += 1; }
    });
    document.getElementById('gallery-count').textContent = n + ' of ' + crops.length + ' crops shown';
  }
  ['all', 'atypical', 'normal'].forEach(function (k) {
    var b = document.getElementById('show-' + k);
    if (b) { b.addEventListener('click', function () { show(k); }); }
  });
  show('all');
  document.body.setAttribute('data-rendered', '1');
})();
"""

_COHORT_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var t = data.totals;
  var frac = (t.atypical_fraction === null) ? 'n/a' : (100 * t.atypical_fraction).toFixed(1) + '%';
  document.getElementById('summary').textContent =
    t.analysed + ' of ' + t.slides + ' slides analysed; ' + t.mitotic_count + ' mitotic figures, ' +
    t.atypical_count + ' atypical (' + frac + ')' + (t.failed ? '; ' + t.failed + ' failed' : '');
  document.body.setAttribute('data-rendered', '1');
})();
"""


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float | np.floating):
        f = float(v)
        if not math.isfinite(f):
            return "n/a"
        if f.is_integer() and abs(f) < 1e12:
            return str(int(f))
        return f"{f:.{digits}g}"
    return html.escape(str(v))


def _page(title: str, body: str, data: dict[str, Any], script: str) -> str:
    blob = json.dumps(to_jsonable(data), default=str).replace("</", "<\\/")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<style>{_CSS}</style></head>\n<body data-rendered="0">\n{body}\n'
        f'<script type="application/json" id="report-data">{blob}</script>\n'
        f"<script>{script}</script>\n</body></html>\n"
    )


_COUNT_ROWS = (
    ("mitotic_count", "Mitotic figures"),
    ("density_per_mm2", "Mitotic figures per mm² of tissue"),
    ("hotspot_count", "Figures in the hotspot"),
    ("hotspot_area_mm2", "Hotspot area (mm²)"),
    ("hotspot_atypical_count", "Atypical figures in the hotspot"),
    ("atypical_count", "Atypical figures"),
    ("normal_count", "Normal figures"),
    ("atypical_fraction", "Atypical fraction"),
    ("tissue_area_mm2", "Tissue area (mm²)"),
    ("detection_threshold", "Detection threshold"),
    ("atypical_threshold", "Atypical threshold (P(atypical) ≥)"),
    ("mpp", "Slide µm/px"),
)


def _counts_table(summary: dict[str, Any]) -> str:
    rows = []
    for key, label in _COUNT_ROWS:
        if key in summary:
            rows.append(
                f'<tr data-key="{key}"><td>{html.escape(label)}</td><td>{_num(summary[key])}</td></tr>'
            )
    return (
        '<table id="counts"><thead><tr><th>Measure</th><th>Value</th></tr></thead><tbody>'
        + "".join(rows)
        + ("</tbody></table>")
    )


def _gallery(result: SlideResult) -> str:
    if result.crops is None or result.crop_index is None or not len(result.crop_index):
        return '<div id="gallery"></div><p class="muted">No figures detected.</p>'
    items = []
    for crop, i in zip(result.crops, result.crop_index, strict=True):
        row = result.figures.iloc[int(i)]
        kind = "atypical" if row["class"] == "atypical" else "normal"
        p, score = float(row["p_atypical"]), float(row["score"])
        items.append(
            f'<figure class="crop {kind}" data-p="{p:.4f}" data-index="{int(i)}">'
            f'<img alt="figure {int(i)}" src="{data_uri(crop, fmt="JPEG", quality=90)}">'
            f"<figcaption>P(atyp) {p:.2f}<br>det {score:.2f} · ({row['x']:.0f}, {row['y']:.0f})</figcaption></figure>"
        )
    note = ""
    if len(result.crop_index) < len(result.figures):
        note = (
            f'<p class="muted">Showing the {len(result.crop_index)} most and least atypical of '
            f"{len(result.figures)} figures.</p>"
        )
    return note + '<div id="gallery">' + "".join(items) + "</div>"


def render_slide_report(result: SlideResult, *, cohort_link: str | None = None) -> str:
    """The HTML of one slide's report (self-contained).

    Examples:
        >>> from mitoscope.inference.analyze import AnalysisConfig, analyze_slide
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> s = ArraySlide(np.full((200, 200, 3), 200, np.uint8), mpp=0.25, path="s1.png")
        >>> r = analyze_slide(s, detect=lambda sl: pd.DataFrame({"x": [50.0], "y": [60.0], "score": [0.9]}),
        ...                   classify=lambda sl, p: np.array([0.8]), config=AnalysisConfig(thumbnail_size=100))
        >>> page = render_slide_report(r)
        >>> 'id="gallery"' in page and 'class="crop atypical"' in page
        True
    """
    s = result.summary
    name = html.escape(result.name)
    parts = [f'<h1 id="title">mitoscope report: {name}</h1>']
    if cohort_link:
        parts.append(f'<p><a id="cohort-link" href="{html.escape(cohort_link)}">← cohort</a></p>')
    parts.append(f'<p class="muted">{html.escape(str(s.get("path", "")))}</p>')
    parts.append('<div id="summary"></div>')
    parts.append('<div class="row"><div><h2>Counts</h2>' + _counts_table(s) + "</div>")
    threshold = s.get("atypical_threshold")
    p = result.figures["p_atypical"].to_numpy(float) if len(result.figures) else np.zeros(0)
    det = result.figures["score"].to_numpy(float) if len(result.figures) else np.zeros(0)
    parts.append(
        "<div><h2>Scores</h2>"
        + histogram_svg(
            p, threshold=threshold, title="P(atypical) of detected figures", element_id="histogram"
        )
        + "<br>"
        + histogram_svg(
            det,
            threshold=s.get("detection_threshold"),
            title="Detection scores",
            element_id="score-histogram",
            split_at_threshold=False,
        )
        + "</div></div>"
    )
    if result.thumbnail is not None:
        hs = result.hotspot
        over = draw_overview(
            result.thumbnail,
            result.figures,
            (int(s["width"]), int(s["height"])),
            hotspot=(hs.x, hs.y, hs.w, hs.h),
            tissue_mask=result.tissue_mask,
        )
        tissue = (
            f'<span id="tissue-legend"><i class="swatch" style="background:{TISSUE_COLOR};border-radius:0"></i>'
            "tissue analysed (outline)</span>"
            if result.tissue_mask is not None
            else ""
        )
        parts.append(
            "<h2>Slide</h2>"
            '<p class="legend">'
            f'<span><i class="swatch" style="background:{NORMAL_COLOR}"></i>normal</span>'
            f'<span><i class="swatch" style="background:{ATYPICAL_COLOR}"></i>atypical</span>'
            f'<span><i class="swatch" style="background:{HOTSPOT_COLOR};border-radius:0"></i>'
            f"hotspot ({_num(s.get('hotspot_area_mm2'))} mm², {s.get('hotspot_count')} figures)</span>{tissue}</p>"
            f'<img id="overview" alt="slide overview" src="{data_uri(over, fmt="JPEG", quality=88)}">'
        )
    parts.append(
        "<h2>Figures by P(atypical)</h2><p>"
        '<button id="show-all" type="button">all</button>'
        '<button id="show-atypical" type="button">atypical</button>'
        '<button id="show-normal" type="button">normal</button>'
        '<span id="gallery-count" class="muted"></span></p>' + _gallery(result)
    )
    data = {"slide": result.name, "summary": s}
    return _page(f"mitoscope: {result.name}", "\n".join(parts), data, _SLIDE_SCRIPT)


def write_slide_report(
    result: SlideResult, path: str | os.PathLike[str], *, cohort_link: str | None = None
) -> Path:
    """Write one slide's report to ``path`` (atomically)."""
    return write_text_atomic(path, render_slide_report(result, cohort_link=cohort_link))


def render_cohort_report(
    table: pd.DataFrame,
    *,
    links: dict[str, str] | None = None,
    thumbs: dict[str, str] | None = None,
    totals: dict[str, Any] | None = None,
) -> str:
    """The HTML of the cohort page from a ``cohort.csv`` table (links and thumbnail URIs per slide)."""
    links, thumbs = links or {}, thumbs or {}
    ok = table[table["status"] == "ok"]
    if totals is None:
        m, a = int(ok["mitotic_count"].sum()), int(ok["atypical_count"].sum())
        totals = {
            "slides": len(table), "analysed": len(ok), "failed": len(table) - len(ok),
            "mitotic_count": m, "atypical_count": a, "atypical_fraction": a / m if m else None,
        }  # fmt: skip
    cols = [
        ("mitotic_count", "figures"), ("density_per_mm2", "per mm²"), ("hotspot_count", "hotspot"),
        ("atypical_count", "atypical"), ("atypical_fraction", "atypical fraction"),
        ("tissue_area_mm2", "tissue mm²"),
    ]  # fmt: skip
    head = (
        "<tr><th>slide</th><th>overview</th>"
        + "".join(f"<th>{html.escape(c[1])}</th>" for c in cols)
        + "</tr>"
    )
    rows = []
    for _, r in table.iterrows():
        name = str(r["slide"])
        esc = html.escape(name)
        failed = r["status"] != "ok"
        cell = f'<a href="{html.escape(links[name])}">{esc}</a>' if name in links and not failed else esc
        thumb = f'<img alt="{esc}" src="{thumbs[name]}" height="60">' if name in thumbs and not failed else ""
        vals = (
            f'<td colspan="{len(cols)}">failed: {html.escape(str(r["error"]))}</td>'
            if failed
            else "".join(f"<td>{_num(r[c[0]])}</td>" for c in cols)
        )
        rows.append(
            f'<tr class="slide-row{" failed" if failed else ""}" data-slide="{esc}"><td>{cell}</td>'
            f"<td>{thumb}</td>{vals}</tr>"
        )
    chart = stacked_bars_svg(
        [str(n) for n in ok["slide"]],
        ok["normal_count"].fillna(0).tolist(),
        ok["atypical_count"].fillna(0).tolist(),
        element_id="cohort-chart",
        title="Mitotic figures per slide (normal / atypical)",
    )
    failures = table[table["status"] != "ok"]
    fail_html = "".join(
        f"<li>{html.escape(str(r['slide']))}: {html.escape(str(r['error']))}</li>"
        for _, r in failures.iterrows()
    )
    body = (
        '<h1 id="title">mitoscope cohort report</h1><div id="summary"></div>'
        f'<h2>Slides</h2><table id="cohort-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
        f"<h2>Counts</h2>{chart}"
        f'<h2>Failures</h2><ul id="failures">{fail_html or "<li>none</li>"}</ul>'
    )
    return _page("mitoscope cohort report", body, {"totals": totals}, _COHORT_SCRIPT)


def write_report(
    out_dir: str | os.PathLike[str], *, slides: Sequence[str] | None = None, report_dir: str | None = None
) -> Path:
    """Write ``OUT/report/index.html`` and one page per analysed slide from an ``analyze`` output directory.

    Args:
        out_dir: the directory ``mitoscope analyze`` wrote (``cohort.csv``, ``slides/``).
        slides: only these slide names (default: every row of ``cohort.csv``).
        report_dir: where to write (default ``OUT/report``).

    Returns:
        The path of the cohort page.
    """
    out_dir = Path(out_dir)
    cohort_csv = out_dir / "cohort.csv"
    if not cohort_csv.is_file():
        raise InputError("no cohort.csv: not a `mitoscope analyze` output directory", path=out_dir)
    table = pd.read_csv(cohort_csv, keep_default_na=False, na_values=[""])
    table["error"] = table["error"].astype(object).fillna("")
    if slides is not None:
        table = table[table["slide"].isin(list(slides))]
    dest = Path(report_dir) if report_dir else out_dir / REPORT_DIR
    links, thumbs = {}, {}
    for _, r in table[table["status"] == "ok"].iterrows():
        name = str(r["slide"])
        result = read_slide_result(out_dir / "slides" / name)
        page = dest / f"{name}.html"
        write_slide_report(result, page, cohort_link="index.html")
        links[name] = page.name
        if result.thumbnail is not None:
            from PIL import Image

            im = Image.fromarray(result.thumbnail)
            im.thumbnail((120, 120))
            thumbs[name] = data_uri(np.asarray(im), fmt="JPEG", quality=80)
    totals = None
    meta_path = out_dir / "cohort.json"
    if meta_path.is_file() and slides is None:
        totals = json.loads(meta_path.read_text(encoding="utf-8")).get("totals")
    return write_text_atomic(
        dest / "index.html", render_cohort_report(table, links=links, thumbs=thumbs, totals=totals)
    )
