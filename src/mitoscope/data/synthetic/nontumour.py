"""Non-tumour tissue of a synthetic region (opt-in): fat, vessels with red cells, necrosis, dense
collagen, tissue-marking ink and out-of-focus patches.

:func:`plan_nontumour` lays these out at half resolution from its own random generator (a region
without them is rendered exactly as before). :func:`apply_layout` clears their
zones of tumour cells, :func:`paint_nontumour` paints them and returns the absorbers that are not H&E
(red blood cells, ink), and :func:`defocus_blur` blurs the out-of-focus patch. They are unlabelled
background: figures are placed outside them (:func:`forbidden`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mitoscope.data.synthetic.domains import DomainStyle
from mitoscope.data.synthetic.painters import (
    paint_collagen,
    paint_fat,
    paint_necrosis,
    paint_vessels,
    zone_box,
)
from mitoscope.data.synthetic.sprites import Sprite, blob_radius, ellipse, smoothstep, stamp
from mitoscope.data.synthetic.stain import INKS, occupied_tiles, unit
from mitoscope.data.synthetic.tissue import Layout, smooth_field, upsample2

#: Tissue kinds that replace tumour in their zones (ink and blur lie over whatever is there).
TISSUE_KINDS = ("fat", "vessel", "necrosis", "collagen")
#: All kinds, for :func:`single_kind_plan`.
KINDS = (*TISSUE_KINDS, "ink", "blur")
#: Figures keep this far (px) from non-tumour zones and ink.
MARGIN = 40


@dataclass
class NonTumour:
    """Where the non-tumour tissue goes, at half resolution (like :class:`~.tissue.Layout`).

    Attributes:
        zones: soft 0–1 mask of each tissue kind present (their sum is at most 1).
        ink: ink coverage 0–1, or ``None``.
        ink_colour: key of :data:`~.stain.INKS`.
        defocus: 0–1 weight of the out-of-focus blur, or ``None``.
        defocus_sigma: extra blur (px) where ``defocus`` is 1.
        rng: the generator the painters draw from.
    """

    zones: dict[str, np.ndarray]
    ink: np.ndarray | None
    ink_colour: str
    defocus: np.ndarray | None
    defocus_sigma: float
    rng: np.random.Generator

    def cover(self, half: tuple[int, int]) -> np.ndarray:
        """Sum of the tissue zones (0 where there are none)."""
        total = np.zeros(half, np.float32)
        for m in self.zones.values():
            total += m
        return total


def _threshold(field: np.ndarray, share: float) -> float:
    """The value above which ``share`` of ``field`` lies (on a subsample)."""
    return float(np.quantile(field[::3, ::3], 1.0 - share))


def _tissue_edge(lumen: np.ndarray) -> np.ndarray:
    """Near 1 within ~60 px of a tissue / glass border, 0 far from it (half resolution)."""
    from scipy.ndimage import gaussian_filter

    h, w = lumen.shape
    b = gaussian_filter(lumen[::4, ::4].astype(np.float32), 4.0, mode="nearest")
    edge = 4.0 * b * (1.0 - b)
    return upsample2(upsample2(edge, ((h + 1) // 2, (w + 1) // 2)), (h, w))


def plan_nontumour(
    rng: np.random.Generator, shape: tuple[int, int], layout: Layout, share: float
) -> NonTumour:
    """Lay out non-tumour tissue over ``share`` of a canvas of ``shape`` (h, w).

    The four tissue kinds split the ``share`` with random weights; ink (in most regions) favours
    tissue edges, out-of-focus blur (in half of them) is a smooth patch anywhere.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> from mitoscope.data.synthetic.tissue import make_layout
        >>> rng = np.random.default_rng(0)
        >>> lay = make_layout(rng, (256, 256), get_domain(0))
        >>> plan = plan_nontumour(rng, (256, 256), lay, 0.5)
        >>> 0.3 < float(plan.cover((128, 128)).mean()) < 0.7
        True
    """
    half = layout.lumen.shape
    where = smooth_field(rng, half, 90.0)
    cover = np.clip((where - _threshold(where, share)) * 12.0 + 0.5, 0.0, 1.0)
    weights = rng.dirichlet([1.5] * len(TISSUE_KINDS))
    logits = np.stack([40.0 * smooth_field(rng, half, 110.0) for _ in TISSUE_KINDS])
    logits += np.log(weights + 1e-3).astype(np.float32)[:, None, None] * 16.0
    logits -= logits.max(0)
    np.exp(logits, out=logits)
    logits *= cover / logits.sum(0)
    zones = {k: logits[i] for i, k in enumerate(TISSUE_KINDS) if float(logits[i].max()) > 0.5}
    ink = None
    colour = str(rng.choice(list(INKS)))
    if rng.random() < 0.75:
        f = (
            smooth_field(rng, half, 35.0)
            + 1.5 * _tissue_edge(layout.lumen)
            + 0.15 * smooth_field(rng, half, 6.0)
        )
        ink_share = min(0.3, share * float(rng.uniform(0.05, 0.15)))
        ink = np.clip((f - _threshold(f, ink_share)) * 8.0 + 0.5, 0.0, 1.0)
    defocus = None
    sigma = float(rng.uniform(2.5, 5.0))
    if rng.random() < 0.5:
        defocus = _soft_blobs(rng, half, min(0.5, share * float(rng.uniform(0.2, 0.6))))
    return NonTumour(zones, ink, colour, defocus, sigma, rng)


def _soft_blobs(rng: np.random.Generator, half: tuple[int, int], share: float) -> np.ndarray:
    """One or two wobbly elliptical patches with wide soft edges covering about ``share`` of the canvas."""
    out = np.zeros(half, np.float32)
    n = int(rng.integers(1, 3))
    for _ in range(n):
        r = float(np.sqrt(share * half[0] * half[1] / n / np.pi))
        elong = float(rng.uniform(1.0, 2.0))
        rx, ry = r * np.sqrt(elong), r / np.sqrt(elong)
        cy, cx = rng.uniform(0, half[0]), rng.uniform(0, half[1])
        ext = 1.4 * rx
        y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 1, half[0])
        x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 1, half[1])
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        harm = np.stack([rng.normal(0, 0.08, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
        rho = blob_radius(xx, yy, rx, ry, float(rng.uniform(0, np.pi)), harm)
        np.maximum(out[y0:y1, x0:x1], smoothstep((1.0 - rho) * 2.5, 1.0), out=out[y0:y1, x0:x1])
    return out


def single_kind_plan(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> NonTumour:
    """A plan whose whole canvas of ``shape`` (h, w) is one of :data:`KINDS` (for galleries, tests).

    Examples:
        >>> single_kind_plan("fat", (64, 64), np.random.default_rng(0)).zones["fat"].shape
        (32, 32)
    """
    if kind not in KINDS:
        raise ValueError(f"unknown non-tumour kind {kind!r}; one of {', '.join(KINDS)}")
    half = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    ones = np.ones(half, np.float32)
    zones = {kind: ones} if kind in TISSUE_KINDS else {}
    return NonTumour(
        zones, ones if kind == "ink" else None, "black", ones if kind == "blur" else None, 4.0, rng
    )


def forbidden(plan: NonTumour, layout: Layout) -> np.ndarray:
    """Where figures may not go (> 0.2, half resolution): glass, the zones and ink with a margin, strong blur.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> from mitoscope.data.synthetic.tissue import make_layout
        >>> rng = np.random.default_rng(0)
        >>> lay = make_layout(rng, (128, 128), get_domain(0))
        >>> float(forbidden(single_kind_plan("fat", (128, 128), rng), lay).min())
        1.0
    """
    from scipy.ndimage import maximum_filter

    half = layout.lumen.shape
    occupied = plan.cover(half)
    if plan.ink is not None:
        occupied += plan.ink
    quarter = maximum_filter(occupied[::2, ::2], size=MARGIN // 2 + 1, mode="nearest")
    grown = np.repeat(np.repeat(quarter, 2, axis=0), 2, axis=1)[: half[0], : half[1]]
    out = np.maximum(layout.lumen, grown)
    if plan.defocus is not None:
        np.maximum(out, plan.defocus - 0.3, out=out)
    return out


def tissue_share(plan: NonTumour, layout: Layout) -> float:
    """Share of the tumour tissue (non-glass) that the plan leaves to tumour: scales figure counts."""
    tissue = float((1.0 - layout.lumen).mean())
    if tissue <= 0:
        return 1.0
    left = float(np.clip(1.0 - np.maximum(layout.lumen, plan.cover(layout.lumen.shape)), 0.0, 1.0).mean())
    return float(np.clip(left / tissue, 0.0, 1.0))


def apply_layout(plan: NonTumour, layout: Layout) -> None:
    """Clear the tissue zones of tumour cells (vessel zones become stroma), in place."""
    cleared = [m for k, m in plan.zones.items() if k != "vessel"]
    if cleared:
        np.maximum(layout.lumen, np.minimum(sum(cleared), 1.0), out=layout.lumen)
    if "vessel" in plan.zones:
        v = plan.zones["vessel"]
        layout.lumen *= 1.0 - v
        np.maximum(layout.stroma, v, out=layout.stroma)


def paint_nontumour(
    plan: NonTumour,
    canvas_h: np.ndarray,
    canvas_e: np.ndarray,
    style: DomainStyle,
    *,
    avoid: np.ndarray,
    canvas_r: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Paint the plan's tissue into the canvases (in place); return the absorbers that are not H&E.

    Args:
        plan: from :func:`plan_nontumour`, after :func:`apply_layout`.
        canvas_h: hematoxylin canvas.
        canvas_e: eosin canvas.
        style: domain style (the red-cell colour follows its eosin).
        avoid: (m, 2) figure centres (x, y) that ink specks keep away from.
        canvas_r: pigment canvas, if any.

    Returns:
        (concentration, OD vector) pairs: red blood cells and ink, those present.
    """
    rng = plan.rng
    absorbers: list[tuple[np.ndarray, np.ndarray]] = []
    for kind, paint in (("collagen", paint_collagen), ("necrosis", paint_necrosis), ("fat", paint_fat)):
        if kind in plan.zones:
            paint(rng, canvas_h, canvas_e, plan.zones[kind], style)
    if "vessel" in plan.zones:
        blood = np.zeros_like(canvas_h)
        paint_vessels(rng, canvas_h, canvas_e, blood, plan.zones["vessel"], style, canvas_r=canvas_r)
        absorbers.append((blood, style.stains.blood()))
    if plan.ink is not None:
        absorbers.append((_paint_ink(rng, plan.ink, canvas_h.shape, avoid), unit(INKS[plan.ink_colour])))
    return absorbers


def _paint_ink(
    rng: np.random.Generator, ink: np.ndarray, shape: tuple[int, int], avoid: np.ndarray
) -> np.ndarray:
    """Ink concentration: dense, slightly grainy layers plus nucleus-sized specks around them."""
    from scipy.ndimage import maximum_filter

    conc = np.zeros(shape, np.float32)
    box = zone_box(ink, shape)
    if box is not None:
        (hy, hx), full, m = box
        half = (hy.stop - hy.start, hx.stop - hx.start)
        grain = 0.12 * smooth_field(rng, half, 12.0)
        layer = np.sqrt(ink[hy, hx]) * (float(rng.uniform(2.5, 4.0)) * np.clip(1.0 + grain, 0.3, None))
        conc[full] = upsample2(layer.astype(np.float32), m.shape)
    near = maximum_filter(ink[::8, ::8], size=25, mode="constant")
    area = shape[0] * shape[1]
    n = int(rng.poisson(6 + 60 * float(near.mean()) * area / 4e6))
    specks = [_speck(rng) for _ in range(8)]
    avoid = np.asarray(avoid, np.float32).reshape(-1, 2)
    for _ in range(n):
        x, y = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        if (
            rng.random()
            > 0.1 + 0.9 * near[min(int(y) // 16, near.shape[0] - 1), min(int(x) // 16, near.shape[1] - 1)]
        ):
            continue
        if len(avoid) and float(np.min(((avoid - (x, y)) ** 2).sum(1))) < (2 * MARGIN) ** 2:
            continue
        s = specks[int(rng.integers(len(specks)))]
        stamp(conc, conc, s, x, y, mode="max")
    return conc


def _speck(rng: np.random.Generator) -> Sprite:
    r = float(rng.uniform(4.0, 20.0))
    size = int(2 * r * 1.3 + 6) | 1
    harm = np.stack([rng.normal(0, 0.06, 2), rng.uniform(0, 2 * np.pi, 2)], axis=1)
    m = ellipse(
        size, r, r * float(rng.uniform(0.6, 1.0)), float(rng.uniform(0, np.pi)), harmonics=harm, soft=1.5
    )
    m = (m * float(rng.uniform(1.0, 3.5))).astype(np.float32)
    return Sprite(h=m, e=m, alpha=np.zeros_like(m))


def sparse_psf(a: np.ndarray, taps: np.ndarray) -> None:
    """Correlate a map that is zero outside a few tiles with separable ``taps``, tile by tile (in place).

    Gives the same result as correlating the whole map (``mode="nearest"``), at the cost of its tiles.

    Examples:
        >>> a = np.zeros((300, 300), np.float32); a[10, 10] = 1
        >>> sparse_psf(a, np.array([0.25, 0.5, 0.25], np.float32)); float(a.sum())
        1.0
    """
    from scipy.ndimage import correlate1d

    pad = len(taps) // 2
    done = []
    for ys, xs in occupied_tiles(a, pad=pad):
        y0, x0 = max(ys.start - pad, 0), max(xs.start - pad, 0)
        win = a[y0 : ys.stop + pad, x0 : xs.stop + pad].copy()
        correlate1d(win, taps, axis=0, output=win, mode="nearest")
        correlate1d(win, taps, axis=1, output=win, mode="nearest")
        done.append(((ys, xs), win[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]))
    for box, win in done:
        a[box] = win


def defocus_blur(maps: list[np.ndarray], weight: np.ndarray, sigma: float) -> None:
    """Blur concentration ``maps`` by ``sigma`` px where the half-resolution ``weight`` is 1 (in place).

    The blur runs at half resolution inside the weight's bounding box and is blended by the weight.

    Examples:
        >>> m = np.zeros((64, 64), np.float32); m[::4] = 1.0
        >>> defocus_blur([m], np.ones((32, 32), np.float32), 4.0)
        >>> float(m.std()) < 0.1
        True
    """
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rows = np.flatnonzero(weight.max(1) > 0.01)
    cols = np.flatnonzero(weight.max(0) > 0.01)
    if len(rows) == 0:
        return
    pad = int(np.ceil(1.5 * sigma)) + 2
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, weight.shape[0])
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, weight.shape[1])
    h, w = maps[0].shape
    sl = (slice(2 * y0, min(2 * y1, h)), slice(2 * x0, min(2 * x1, w)))
    bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    wfull = upsample2(weight[y0:y1, x0:x1], (bh, bw))
    for a in maps:
        crop = a[sl]
        if not crop.any():
            continue
        even = np.pad(crop, ((0, bh % 2), (0, bw % 2)), mode="edge") if bh % 2 or bw % 2 else crop
        small = even[0::2, 0::2] + even[1::2, 0::2]
        small += even[0::2, 1::2]
        small += even[1::2, 1::2]
        small *= np.float32(0.25)
        gaussian_filter(small, sigma / 2, output=small, mode="nearest")
        big = Image.fromarray(small, mode="F").resize(
            (even.shape[1], even.shape[0]), Image.Resampling.BILINEAR
        )
        blurred = np.array(big, dtype=np.float32)[:bh, :bw]
        blurred -= crop
        blurred *= wfull
        crop += blurred
