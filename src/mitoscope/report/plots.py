"""Figures for the HTML report without matplotlib: inline SVG charts and PIL drawings.

Every SVG is a plain string that can be embedded in HTML; every raster helper returns an RGB uint8 array or a
``data:`` URI so a report is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mitoscope.data.tissue import mask_outline

if TYPE_CHECKING:
    from mitoscope.inference.tiling import Tile

NORMAL_COLOR = "#1f9e4a"
ATYPICAL_COLOR = "#dc2828"
HOTSPOT_COLOR = "#f2b600"
TISSUE_COLOR = "#0a5cff"
TILE_COLOR = "#00c2d1"


def data_uri(image: np.ndarray, *, fmt: str = "JPEG", quality: int = 85) -> str:
    """An RGB uint8 image as a ``data:image/...;base64,`` URI (JPEG or PNG).

    Examples:
        >>> data_uri(np.zeros((2, 2, 3), np.uint8), fmt="PNG")[:22]
        'data:image/png;base64,'
    """
    from PIL import Image

    buf = io.BytesIO()
    fmt = fmt.upper()
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format=fmt, **kwargs)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def draw_overview(
    thumbnail: np.ndarray,
    figures: pd.DataFrame,
    slide_dims: tuple[int, int],
    *,
    hotspot: tuple[float, float, float, float] | None = None,
    radius: int = 5,
    tissue_mask: np.ndarray | None = None,
) -> np.ndarray:
    """The thumbnail with each figure circled (normal green, atypical red) and the hotspot outlined.

    Args:
        thumbnail: RGB uint8 thumbnail of the whole slide.
        figures: ``x``, ``y`` in level-0 px and ``class`` (``normal``/``atypical``).
        slide_dims: level-0 ``(width, height)`` (to scale points onto the thumbnail).
        hotspot: ``(x, y, w, h)`` of the hotspot window in level-0 px.
        radius: circle radius in thumbnail px.
        tissue_mask: the analysed tissue (a mask covering the whole slide), outlined in :data:`TISSUE_COLOR`.

    Examples:
        >>> figs = pd.DataFrame({"x": [50.0], "y": [50.0], "class": ["atypical"]})
        >>> draw_overview(np.full((10, 10, 3), 255, np.uint8), figs, (100, 100)).shape
        (10, 10, 3)
    """
    from PIL import Image, ImageDraw

    if tissue_mask is not None:
        thumbnail = draw_tissue(thumbnail, tissue_mask)
    th, tw = thumbnail.shape[:2]
    sx, sy = tw / slide_dims[0], th / slide_dims[1]
    image = Image.fromarray(np.ascontiguousarray(thumbnail)).convert("RGB")
    draw = ImageDraw.Draw(image)
    if hotspot is not None:
        x, y, w, h = hotspot
        box = [x * sx, y * sy, min((x + w) * sx, tw - 1), min((y + h) * sy, th - 1)]
        draw.rectangle(box, outline=_hex_to_rgb(HOTSPOT_COLOR), width=3)
    if len(figures):
        # Normal first so that atypical figures are drawn on top.
        atyp = figures["class"].astype(str).eq("atypical").to_numpy()
        xs, ys = figures["x"].to_numpy(float), figures["y"].to_numpy(float)
        for i in np.argsort(atyp, kind="stable"):
            color = _hex_to_rgb(ATYPICAL_COLOR if atyp[i] else NORMAL_COLOR)
            cx, cy = xs[i] * sx, ys[i] * sy
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=color, width=2)
    return np.asarray(image)


def draw_tissue(
    thumbnail: np.ndarray,
    mask: np.ndarray | None,
    *,
    tiles: Sequence[Tile] | None = None,
    slide_dims: tuple[int, int] | None = None,
    color: str = TISSUE_COLOR,
    tile_color: str = TILE_COLOR,
) -> np.ndarray:
    """The thumbnail with the tissue mask outlined and, optionally, the detector's tiles drawn.

    Args:
        thumbnail: RGB uint8 thumbnail of the whole slide.
        mask: tissue mask covering the whole slide (any resolution), or ``None`` for no outline.
        tiles: tiles to draw (their cores, which partition the slide, so the grid has no double lines).
        slide_dims: level-0 ``(width, height)``, needed with ``tiles``.
        color: outline colour.
        tile_color: tile colour (drawn half-transparent).

    Examples:
        >>> img = np.full((40, 40, 3), 240, np.uint8)
        >>> m = np.zeros((10, 10), bool); m[2:8, 2:8] = True
        >>> out = draw_tissue(img, m)
        >>> out.shape, out[8, 20].tolist(), out[20, 20].tolist()
        ((40, 40, 3), [10, 92, 255], [240, 240, 240])
    """
    from PIL import Image, ImageDraw

    out = np.array(thumbnail, dtype=np.uint8, copy=True)
    th, tw = out.shape[:2]
    if tiles:
        if slide_dims is None:
            raise ValueError("slide_dims is needed to draw tiles")
        sx, sy = tw / slide_dims[0], th / slide_dims[1]
        layer = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        rgba = (*_hex_to_rgb(tile_color), 150)
        for t in tiles:
            x0, y0, x1, y1 = t.core
            box = [x0 * t.scale * sx, y0 * t.scale * sy, x1 * t.scale * sx - 1, y1 * t.scale * sy - 1]
            draw.rectangle(box, outline=rgba, width=1)
        base = Image.fromarray(out).convert("RGBA")
        out = np.asarray(Image.alpha_composite(base, layer).convert("RGB")).copy()
    if mask is not None:
        out[mask_outline(mask, (th, tw))] = _hex_to_rgb(color)
    return out


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def histogram_svg(
    values: Sequence[float] | np.ndarray,
    *,
    bins: int = 20,
    value_range: tuple[float, float] = (0.0, 1.0),
    threshold: float | None = None,
    title: str = "",
    element_id: str = "histogram",
    width: int = 420,
    height: int = 200,
    split_at_threshold: bool = True,
) -> str:
    """An inline SVG histogram; bars right of ``threshold`` are drawn red, left green, with a dashed line there.

    Each bar is a ``<rect class="bar" data-count="..">`` so tests (and readers) can check the numbers.

    Examples:
        >>> svg = histogram_svg([0.1, 0.2, 0.9], bins=2, threshold=0.5)
        >>> svg.count('class="bar'), 'data-count="2"' in svg
        (2, True)
    """
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    counts, edges = np.histogram(vals, bins=bins, range=value_range)
    left, right, top, bottom = 36, 10, 24 if title else 8, 28
    pw, ph = width - left - right, height - top - bottom
    peak = max(int(counts.max()) if counts.size else 0, 1)
    lo, hi = value_range

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    parts = [
        f'<svg id="{html.escape(element_id)}" class="histogram" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{html.escape(title or "histogram")}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    if title:
        parts.append(
            f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>'
        )
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        h = ph * c / peak
        mid = (a + b) / 2
        fill = (
            ATYPICAL_COLOR
            if split_at_threshold and threshold is not None and mid >= threshold
            else NORMAL_COLOR
        )
        parts.append(
            f'<rect class="bar" data-count="{int(c)}" data-from="{_fmt(a)}" data-to="{_fmt(b)}" '
            f'x="{sx(a) + 0.5:.1f}" y="{top + ph - h:.1f}" width="{max(sx(b) - sx(a) - 1, 0.5):.1f}" '
            f'height="{h:.1f}" fill="{fill}"><title>{_fmt(a)}–{_fmt(b)}: {int(c)}</title></rect>'
        )
    # Axes and ticks.
    parts.append(
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#333"/>'
    )
    for t in np.linspace(lo, hi, 5):
        parts.append(
            f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="11">{_fmt(t)}</text>'
        )
    parts.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" font-size="11">{peak}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" font-size="11">0</text>')
    if threshold is not None and lo <= threshold <= hi:
        parts.append(
            f'<line class="threshold" x1="{sx(threshold):.1f}" y1="{top}" x2="{sx(threshold):.1f}" '
            f'y2="{top + ph}" stroke="#222" stroke-dasharray="4 3"><title>threshold {_fmt(threshold)}</title></line>'
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars_svg(
    labels: Sequence[str],
    normal: Sequence[float],
    atypical: Sequence[float],
    *,
    element_id: str = "cohort-chart",
    title: str = "",
    width: int = 720,
    bar_height: int = 18,
) -> str:
    """Horizontal stacked bars (normal green + atypical red) per label, e.g. figure counts per slide.

    Examples:
        >>> stacked_bars_svg(["a", "b"], [3, 1], [1, 0]).count('class="bar-normal"')
        2
    """
    n = len(labels)
    left, right, top = 160, 60, 26 if title else 6
    height = top + n * (bar_height + 6) + 10
    total = [float(a) + float(b) for a, b in zip(normal, atypical, strict=True)]
    peak = max([*total, 1.0])
    pw = width - left - right
    parts = [
        f'<svg id="{html.escape(element_id)}" class="bars" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title or "bars")}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    if title:
        parts.append(
            f'<text x="{width / 2}" y="17" text-anchor="middle" font-size="13">{html.escape(title)}</text>'
        )
    for i, (lab, nv, av) in enumerate(zip(labels, normal, atypical, strict=True)):
        y = top + i * (bar_height + 6)
        wn, wa = pw * float(nv) / peak, pw * float(av) / peak
        name = html.escape(str(lab))
        parts.append(
            f'<text x="{left - 6}" y="{y + bar_height - 5}" text-anchor="end" font-size="12">{name}</text>'
            f'<rect class="bar-normal" data-value="{_fmt(float(nv))}" x="{left}" y="{y}" width="{wn:.1f}" '
            f'height="{bar_height}" fill="{NORMAL_COLOR}"><title>{name}: {_fmt(float(nv))} normal</title></rect>'
            f'<rect class="bar-atypical" data-value="{_fmt(float(av))}" x="{left + wn:.1f}" y="{y}" '
            f'width="{wa:.1f}" height="{bar_height}" fill="{ATYPICAL_COLOR}">'
            f"<title>{name}: {_fmt(float(av))} atypical</title></rect>"
            f'<text x="{left + wn + wa + 4:.1f}" y="{y + bar_height - 5}" font-size="12">'
            f"{_fmt(float(nv) + float(av))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
