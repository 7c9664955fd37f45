"""Tissue background: stroma with fibres, tumour cells (cytoplasm + nuclei), empty space.

Everything is produced as hematoxylin / eosin concentration maps; :mod:`.region` turns them into RGB.
Large-scale fields are made at low resolution and upsampled, nuclei come from a small per-region
bank of sprites stamped with flips, so a 4096×4096 region takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mitoscope.data.synthetic.domains import DomainStyle
from mitoscope.data.synthetic.sprites import Sprite, discs_field, ellipse, stamp, texture


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, roughly unit-std Gaussian random field with correlation length ``scale`` px.

    Made at a coarse grid and upsampled bilinearly, so cost is small for large ``scale``.

    Examples:
        >>> f = smooth_field(np.random.default_rng(0), (64, 80), 8.0)
        >>> f.shape, f.dtype
        ((64, 80), dtype('float32'))
    """
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    h, w = shape
    f = max(1, int(scale // 3))
    lh, lw = h // f + 4, w // f + 4
    low = gaussian_filter(rng.standard_normal((lh, lw)).astype(np.float32), scale / f, mode="wrap")
    # normalise by the theoretical std of filtered white noise, not the sample (patch-size independent)
    sigma = scale / f
    low *= np.float32(2.0 * np.sqrt(np.pi) * sigma)
    if f == 1:
        return np.ascontiguousarray(low[:h, :w])
    big = Image.fromarray(low, mode="F").resize((lw * f, lh * f), Image.Resampling.BILINEAR)
    off = f // 2
    return np.asarray(big, dtype=np.float32)[off : off + h, off : off + w].copy()


@dataclass
class Layout:
    """Large-scale tissue layout of a canvas at half resolution (float32 in [0, 1]).

    Pixel (i, j) of each field covers canvas pixels (2i, 2j)–(2i+1, 2j+1).

    Attributes:
        lumen: 1 where the slide is empty (white background).
        stroma: 1 where the tissue is stroma rather than tumour cells.
        fibre_angle: local direction of stroma fibres (radians).
    """

    lumen: np.ndarray
    stroma: np.ndarray
    fibre_angle: np.ndarray


def make_layout(rng: np.random.Generator, shape: tuple[int, int], style: DomainStyle) -> Layout:
    """Draw the lumen / stroma / tumour layout of a canvas.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> lay = make_layout(np.random.default_rng(0), (128, 128), get_domain(0))
        >>> lay.lumen.shape
        (64, 64)
    """
    from scipy.special import ndtri

    half = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    lum = smooth_field(rng, half, 45.0)
    strf = smooth_field(rng, half, 60.0)
    ang = smooth_field(rng, half, 80.0)
    t_lum = float(ndtri(1.0 - style.lumen_fraction)) if style.lumen_fraction > 0 else 99.0
    t_str = float(ndtri(1.0 - style.stroma_fraction)) if style.stroma_fraction > 0 else 99.0
    lumen = np.clip((lum - t_lum) * 6.0 + 0.5, 0.0, 1.0)
    stroma = np.clip((strf - t_str) * 3.0 + 0.5, 0.0, 1.0)
    theta0 = float(rng.uniform(0, np.pi))
    return Layout(lumen=lumen, stroma=stroma, fibre_angle=theta0 + 0.8 * ang)


def make_room(layout: Layout, centres: np.ndarray, radius: float = 60.0) -> None:
    """Turn the surroundings of figure ``centres`` into cellular tissue (no lumen, little stroma), in place.

    Mitoses and their imposters sit among tumour cells; this keeps a figure from landing in an
    empty area or in the middle of collagen.
    """
    if len(centres) == 0:
        return
    h, w = layout.lumen.shape
    radius = radius / 2
    for cx, cy in np.asarray(centres, np.float32) / 2:
        x0, x1 = max(int(cx - 3 * radius), 0), min(int(cx + 3 * radius) + 1, w)
        y0, y1 = max(int(cy - 3 * radius), 0), min(int(cy + 3 * radius) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        keep = 1.0 - np.exp(-(xx * xx + yy * yy) / (2 * radius * radius)).astype(np.float32)
        layout.lumen[y0:y1, x0:x1] *= keep
        layout.stroma[y0:y1, x0:x1] *= keep


def upsample2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = shape
    big = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F").resize(
        (a.shape[1] * 2, a.shape[0] * 2), Image.Resampling.BILINEAR
    )
    return np.asarray(big, dtype=np.float32)[:h, :w].copy()


def background(
    rng: np.random.Generator, shape: tuple[int, int], layout: Layout
) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and eosin of the extracellular background: fibrous stroma, pale tumour matrix.

    Computed at half resolution and upsampled (the texture is smooth at that scale).

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> r = np.random.default_rng(0)
        >>> h, e = background(r, (64, 64), make_layout(r, (64, 64), get_domain(0)))
        >>> bool(e.mean() > h.mean())
        True
    """
    h, w = (shape[0] + 1) // 2, (shape[1] + 1) // 2
    half = (h, w)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    warp = smooth_field(rng, half, 20.0)
    warp2 = smooth_field(rng, half, 4.0)
    period = float(rng.uniform(6.0, 9.0))
    th = layout.fibre_angle
    phase = (xx * np.cos(th) + yy * np.sin(th)) * np.float32(2 * np.pi / period)
    phase += 8.0 * warp
    phase += 1.2 * warp2
    # thin pale clefts between wavy collagen bundles, broken up by noise
    cleft = np.cos(phase)
    cleft += 0.9 * smooth_field(rng, half, 2.0)
    cleft -= 0.9
    cleft *= 2.5
    np.clip(cleft, 0.0, 1.0, out=cleft)
    grain = smooth_field(rng, half, 1.3)
    stroma = layout.stroma
    e = stroma * (0.55 - 0.3 * cleft + 0.07 * grain) + (1.0 - stroma) * (0.24 + 0.05 * grain)
    hmap = 0.03 + 0.03 * stroma + 0.01 * grain
    return upsample2(hmap, shape), upsample2(e, shape)


def nucleus_sprite(rng: np.random.Generator, style: DomainStyle, *, cytoplasm: bool = True) -> Sprite:
    """One ordinary (interphase) tumour cell: vesicular nucleus with chromatin grain, nucleoli, rim.

    Nuclei are 6–12 µm (24–48 px at 0.25 µm/px) scaled by the style.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> s = nucleus_sprite(np.random.default_rng(0), get_domain(0))
        >>> bool(s.h.max() > 0.3)
        True
    """
    r = float(rng.uniform(12.0, 23.0)) * style.nucleus_scale
    elong = style.elongation * float(rng.uniform(0.9, 1.2))
    rx = r * np.sqrt(elong) * float(rng.uniform(0.9, 1.05))
    ry = r / np.sqrt(elong) * float(rng.uniform(0.72, 1.0))
    angle = float(rng.uniform(0, np.pi))
    harm = np.stack([rng.normal(0, 0.035, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    cell_r = r * float(rng.uniform(1.45, 1.85)) if cytoplasm else r + 2.0
    size = int(2 * max(cell_r * np.sqrt(elong), rx) + 6) | 1
    off = rng.normal(0, 0.12 * r, 2)
    nuc = ellipse(size, rx, ry, angle, harmonics=harm, soft=1.1, offset=(off[0], off[1]))
    inner = ellipse(size, rx - 2.4, ry - 2.4, angle, harmonics=harm, soft=1.1, offset=(off[0], off[1]))
    base = float(rng.uniform(0.4, 0.95))
    grain = texture(rng, size, 1.1)
    coarse = texture(rng, size, 3.0)
    h = nuc * base * (1.0 + 0.2 * grain + 0.25 * coarse)
    h += 0.3 * (nuc - inner)
    for _ in range(int(rng.integers(0, 3))):
        p = off + rng.normal(0, 0.3 * ry, 2)
        h += float(rng.uniform(0.35, 0.7)) * ellipse(size, 1.8, 1.6, 0.0, soft=0.8, offset=(p[0], p[1])) * nuc
    e_nuc = 0.1 * nuc
    if cytoplasm:
        c_harm = np.stack([rng.normal(0, 0.06, 4), rng.uniform(0, 2 * np.pi, 4)], axis=1)
        crx = cell_r * np.sqrt(elong)
        cry = cell_r / np.sqrt(elong) * float(rng.uniform(0.8, 1.0))
        cell = ellipse(size, crx, cry, angle, harmonics=c_harm, soft=1.5)
        cin = ellipse(size, crx - 2.5, cry - 2.5, angle, harmonics=c_harm, soft=1.5)
        cyto = float(rng.uniform(0.18, 0.36)) * (1.0 + 0.18 * texture(rng, size, 2.0))
        e = np.maximum(cell * cyto + 0.22 * (cell - cin), e_nuc)
        h = np.maximum(h, 0.05 * cell)
        alpha = cell
    else:
        e = e_nuc
        alpha = nuc
    return Sprite(h=h.astype(np.float32), e=e.astype(np.float32), alpha=alpha.astype(np.float32))


def spindle_sprite(rng: np.random.Generator, style: DomainStyle, angle: float) -> Sprite:
    """An elongated stromal (fibroblast) nucleus aligned with the fibres.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> spindle_sprite(np.random.default_rng(0), get_domain(0), 0.3).size > 20
        True
    """
    rx = float(rng.uniform(14.0, 24.0))
    ry = float(rng.uniform(3.0, 5.5))
    size = int(2 * rx + 6) | 1
    m = ellipse(size, rx, ry, angle, harmonics=np.array([[0.04, rng.uniform(0, 6.28)]]), soft=1.0)
    h = m * float(rng.uniform(0.6, 1.0)) * (1.0 + 0.15 * texture(rng, size, 1.2))
    return Sprite(h=h.astype(np.float32), e=(0.1 * m).astype(np.float32), alpha=m)


def pigment_sprite(rng: np.random.Generator, style: DomainStyle) -> Sprite:
    """Brown melanin granules scattered through a cell's cytoplasm (pigment concentration in ``h``/``e``).

    Both maps hold the pigment so the sprite can be max-stamped into a single pigment canvas.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> s = pigment_sprite(np.random.default_rng(0), get_domain("melanoma_xr"))
        >>> bool(s.h.max() > 0.2)
        True
    """
    size = 61
    k = int(rng.integers(10, 30))
    ang = rng.uniform(0, 2 * np.pi, k)
    rad = rng.uniform(12, 26, k) * style.nucleus_scale
    pts = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], axis=1)
    g = discs_field(size, pts, rng.uniform(1.0, 2.2, k), soft=1.0)
    g = g * float(rng.uniform(0.4, 0.9))
    g = np.maximum(g, 0.12 * (ellipse(size, 24, 22, 0.0, soft=3.0) - ellipse(size, 12, 12, 0.0, soft=3.0)))
    g = g.astype(np.float32)
    return Sprite(h=g, e=g, alpha=np.zeros_like(g))


def _flip(sprite: Sprite, code: int) -> Sprite:
    def f(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        if code & 1:
            a = a[:, ::-1]
        if code & 2:
            a = a[::-1, :]
        if code & 4:
            a = a.T
        return a

    return Sprite(h=f(sprite.h), e=f(sprite.e), alpha=f(sprite.alpha), r=f(sprite.r))  # type: ignore[arg-type]


def nucleus_grid(
    rng: np.random.Generator,
    shape: tuple[int, int],
    style: DomainStyle,
    *,
    spacing: float | None = None,
) -> np.ndarray:
    """Jittered-grid candidate centres (n, 2) of cells over a canvas (x, y), cell-packing spacing.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> nucleus_grid(np.random.default_rng(0), (200, 200), get_domain(0)).shape[1]
        2
    """
    sp = spacing or 41.0 * style.nucleus_scale / np.sqrt(style.density)
    h, w = shape
    gy, gx = np.mgrid[-sp / 2 : h + sp / 2 : sp, -sp / 2 : w + sp / 2 : sp]
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    pts[:, 0] += (np.arange(len(pts)) // gx.shape[1] % 2) * sp / 2
    pts += rng.uniform(-0.38 * sp, 0.38 * sp, pts.shape)
    return pts.astype(np.float32)


def stamp_cells(
    rng: np.random.Generator,
    canvas_h: np.ndarray,
    canvas_e: np.ndarray,
    layout: Layout,
    style: DomainStyle,
    *,
    exclude: np.ndarray | None = None,
    exclude_radius: float = 30.0,
    bank_size: int = 40,
    canvas_r: np.ndarray | None = None,
) -> int:
    """Stamp tumour cells (in tumour areas) and spindle nuclei (in stroma) into the canvases.

    Args:
        rng: random generator.
        canvas_h: hematoxylin canvas, modified in place.
        canvas_e: eosin canvas, modified in place.
        layout: tissue layout (no cells in lumen; spindles in stroma).
        style: domain style (density, nucleus size).
        exclude: (m, 2) centres (x, y) around which no cell is placed (figures go there).
        exclude_radius: radius of the exclusion.
        bank_size: at most this many distinct cell sprites (about a third of the cells, at least 4).
        canvas_r: pigment canvas; when given and the style has pigment, some cells carry brown
            melanin granules.

    Returns:
        The number of cells stamped.
    """
    h, w = canvas_h.shape
    pts = nucleus_grid(rng, (h, w), style)
    ix = np.clip(pts[:, 0].astype(int) // 2, 0, layout.lumen.shape[1] - 1)
    iy = np.clip(pts[:, 1].astype(int) // 2, 0, layout.lumen.shape[0] - 1)
    tumour = (1.0 - layout.stroma[iy, ix]) * (1.0 - layout.lumen[iy, ix])
    stroma = layout.stroma[iy, ix] * (1.0 - layout.lumen[iy, ix])
    u = rng.random(len(pts))
    is_cell = u < tumour * 0.97
    is_spindle = (~is_cell) & (rng.random(len(pts)) < stroma * 0.22)
    if exclude is not None and len(exclude):
        d2 = ((pts[:, None, :] - np.asarray(exclude, np.float32)[None, :, :]) ** 2).sum(-1).min(1)
        far = d2 > exclude_radius**2
        is_cell &= far
        is_spindle &= far
    n_cells = int(is_cell.sum())
    bank_size = int(np.clip(n_cells // 3, 4, bank_size))
    bank = [nucleus_sprite(rng, style) for _ in range(bank_size)]
    choice = rng.integers(0, bank_size, len(pts))
    flips = rng.integers(0, 8, len(pts))
    n = 0
    for i in np.flatnonzero(is_cell):
        stamp(canvas_h, canvas_e, _flip(bank[choice[i]], int(flips[i])), pts[i, 0], pts[i, 1], mode="max")
        n += 1
    if canvas_r is not None and style.pigment > 0:
        pig = [pigment_sprite(rng, style) for _ in range(6)]
        for i in np.flatnonzero(is_cell & (rng.random(len(pts)) < 0.18 * style.pigment)):
            g = pig[int(choice[i]) % len(pig)]
            stamp(canvas_r, canvas_r, _flip(g, int(flips[i])), pts[i, 0], pts[i, 1], mode="max")
    sp_idx = np.flatnonzero(is_spindle)
    if len(sp_idx):
        spindles = [spindle_sprite(rng, style, a) for a in np.linspace(0, np.pi, 12, endpoint=False)]
        for i in sp_idx:
            a = (float(layout.fibre_angle[iy[i], ix[i]]) + np.pi / 2) % np.pi
            k = round(a / np.pi * 12) % 12
            stamp(canvas_h, canvas_e, spindles[k], pts[i, 0], pts[i, 1], mode="max")
            n += 1
    return n
