"""Painters of non-tumour tissue zones: fat, vessels with red cells, necrosis, dense collagen.

Each painter adds (or, for vessels, stamps over) hematoxylin / eosin concentrations inside a
half-resolution zone mask, working only in the zone's bounding box. :mod:`.nontumour` decides
where the zones are.
"""

from __future__ import annotations

import numpy as np

from mitoscope.data.synthetic.domains import DomainStyle
from mitoscope.data.synthetic.sprites import (
    Sprite,
    blob_radius,
    discs_field,
    ellipse,
    segments_field,
    stamp,
    texture,
)
from mitoscope.data.synthetic.tissue import smooth_field, upsample2

Box = tuple[tuple[slice, slice], tuple[slice, slice], np.ndarray]


def zone_box(zone: np.ndarray, shape: tuple[int, int], pad: int = 2) -> Box | None:
    """Bounding box of a half-resolution ``zone``: (half slices, full slices, full-res mask) or ``None``.

    Examples:
        >>> z = np.zeros((8, 8), np.float32); z[2:4, 3:5] = 1
        >>> half, full, m = zone_box(z, (16, 16), pad=0)
        >>> full, m.shape
        ((slice(4, 8, None), slice(6, 10, None)), (4, 4))
    """
    rows = np.flatnonzero(zone.max(1) > 0.01)
    cols = np.flatnonzero(zone.max(0) > 0.01)
    if len(rows) == 0:
        return None
    y0, y1 = max(int(rows[0]) - pad, 0), min(int(rows[-1]) + pad + 1, zone.shape[0])
    x0, x1 = max(int(cols[0]) - pad, 0), min(int(cols[-1]) + pad + 1, zone.shape[1])
    full = (slice(2 * y0, min(2 * y1, shape[0])), slice(2 * x0, min(2 * x1, shape[1])))
    fh, fw = full[0].stop - full[0].start, full[1].stop - full[1].start
    return (slice(y0, y1), slice(x0, x1)), full, upsample2(zone[y0:y1, x0:x1], (fh, fw))


def _flat_bank(
    rng: np.random.Generator, n: int, length: tuple[float, float], width: tuple[float, float]
) -> list[Sprite]:
    """``n`` flat nuclei, sprite ``k`` oriented at ``k * pi / n``."""
    out = []
    for k in range(n):
        rx, ry = float(rng.uniform(*length)), float(rng.uniform(*width))
        size = int(2 * rx + 6) | 1
        m = ellipse(size, rx, ry, k * np.pi / n, harmonics=np.array([[0.05, rng.uniform(0, 6.28)]]), soft=1.0)
        h = m * float(rng.uniform(0.6, 0.95)) * (1.0 + 0.12 * texture(rng, size, 1.2))
        out.append(Sprite(h=h.astype(np.float32), e=(0.08 * m).astype(np.float32), alpha=m))
    return out


def _angle_index(angle: float, n: int) -> int:
    return round((angle % np.pi) / np.pi * n) % n


def paint_fat(
    rng: np.random.Generator, canvas_h: np.ndarray, canvas_e: np.ndarray, zone: np.ndarray, style: DomainStyle
) -> None:
    """Adipocytes: large empty polygonal cells (Voronoi), thin eosin membranes, a few flat nuclei on them."""
    box = zone_box(zone, canvas_h.shape)
    if box is None:
        return
    _, (fy, fx), m = box
    hh, ww = m.shape
    spacing = float(rng.uniform(220.0, 380.0)) * style.nucleus_scale
    qh, qw = (hh + 3) // 4, (ww + 3) // 4  # quarter resolution, samples at full px 4k + 1.5
    warp_y = smooth_field(rng, (qh, qw), 15.0) * np.float32(0.04 * spacing)
    warp_x = smooth_field(rng, (qh, qw), 15.0) * np.float32(0.04 * spacing)
    qy = (fy.start + 4 * np.arange(qh, dtype=np.float32) + 1.5)[:, None] + warp_y
    qx = (fx.start + 4 * np.arange(qw, dtype=np.float32) + 1.5)[None, :] + warp_x
    gy0, gx0 = int(np.floor(qy.min() / spacing)) - 1, int(np.floor(qx.min() / spacing)) - 1
    ny, nx = int(np.floor(qy.max() / spacing)) + 2 - gy0, int(np.floor(qx.max() / spacing)) + 2 - gx0
    sy = (np.arange(gy0, gy0 + ny)[:, None] + 0.5 + rng.uniform(-0.33, 0.33, (ny, nx))) * spacing
    sx = (np.arange(gx0, gx0 + nx)[None, :] + 0.5 + rng.uniform(-0.33, 0.33, (ny, nx))) * spacing
    iy = np.floor(qy / spacing).astype(np.int64) - gy0
    ix = np.floor(qx / spacing).astype(np.int64) - gx0
    f1 = np.full((qh, qw), np.inf, np.float32)
    f2 = np.full((qh, qw), np.inf, np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            jy, jx = np.clip(iy + dy, 0, ny - 1), np.clip(ix + dx, 0, nx - 1)
            d = np.hypot(qx - sx[jy, jx], qy - sy[jy, jx]).astype(np.float32)
            np.minimum(f2, np.maximum(f1, d), out=f2)
            np.minimum(f1, d, out=f1)
    gap = upsample4(f2 - f1, (hh, ww))  # twice the distance to the nearest membrane
    width = float(rng.uniform(3.0, 5.0))
    membrane = np.clip((width - gap) / 1.6 + 0.5, 0.0, 1.0)
    membrane *= m
    canvas_h[fy, fx] += membrane * np.float32(0.04)
    membrane *= np.float32(rng.uniform(0.3, 0.5))
    membrane += m * np.float32(rng.uniform(0.0, 0.015))
    canvas_e[fy, fx] += membrane
    bank = _flat_bank(rng, 12, (9.0, 15.0), (2.2, 3.5))
    for ay, ax, by, bx in ((0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 1, 1), (0, 1, 1, 0)):
        py = (sy[ay : ny - 1 + ay, ax : nx - 1 + ax] + sy[by : ny - 1 + by, bx : nx - 1 + bx]) / 2
        px = (sx[ay : ny - 1 + ay, ax : nx - 1 + ax] + sx[by : ny - 1 + by, bx : nx - 1 + bx]) / 2
        ang = np.arctan2(
            sy[by : ny - 1 + by, bx : nx - 1 + bx] - sy[ay : ny - 1 + ay, ax : nx - 1 + ax],
            sx[by : ny - 1 + by, bx : nx - 1 + bx] - sx[ay : ny - 1 + ay, ax : nx - 1 + ax],
        )
        for y, x, a in zip(py.ravel(), px.ravel(), ang.ravel(), strict=True):
            if rng.random() > 0.2:
                continue
            ky = int(np.clip((y - fy.start - 1.5) / 4, 0, qh - 1))
            kx = int(np.clip((x - fx.start - 1.5) / 4, 0, qw - 1))
            y, x = y - float(warp_y[ky, kx]), x - float(warp_x[ky, kx])  # undo the warp (first order)
            ly, lx = round(y) - fy.start, round(x) - fx.start
            if not (0 <= ly < hh and 0 <= lx < ww) or m[ly, lx] < 0.6 or gap[ly, lx] > width + 2:
                continue
            stamp(canvas_h, canvas_e, bank[_angle_index(float(a) + np.pi / 2, 12)], x, y, mode="max")


def upsample4(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear 4× upsampling of a quarter-resolution field, cropped to ``shape``.

    Examples:
        >>> upsample4(np.ones((3, 3), np.float32), (10, 11)).shape
        (10, 11)
    """
    from PIL import Image

    big = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F").resize(
        (a.shape[1] * 4, a.shape[0] * 4), Image.Resampling.BILINEAR
    )
    return np.asarray(big, dtype=np.float32)[: shape[0], : shape[1]].copy()


def paint_collagen(
    rng: np.random.Generator, canvas_h: np.ndarray, canvas_e: np.ndarray, zone: np.ndarray, style: DomainStyle
) -> None:
    """Dense, hyalinised dermal collagen: thick wavy eosin bundles, thin clefts, sparse wavy spindles."""
    box = zone_box(zone, canvas_h.shape)
    if box is None:
        return
    (hy, hx), (fy, fx), m = box
    half = (hy.stop - hy.start, hx.stop - hx.start)
    yy = np.arange(hy.start, hy.stop, dtype=np.float32)[:, None]
    xx = np.arange(hx.start, hx.stop, dtype=np.float32)[None, :]
    theta = float(rng.uniform(0, np.pi))
    # two interwoven bundle systems, each bent, crimped and cut into clefts of varying length
    pick = np.clip(smooth_field(rng, half, 50.0) * 3.0 + 0.5, 0.0, 1.0)
    systems = []
    for t in (theta, theta + float(rng.uniform(0.6, 1.4))):
        ct, st = np.float32(np.cos(t)), np.float32(np.sin(t))
        across = xx * ct + yy * st + 18.0 * smooth_field(rng, half, 60.0)
        crimp = float(rng.uniform(30.0, 70.0))
        amp = float(rng.uniform(1.5, 5.0)) * (1.0 + 0.5 * smooth_field(rng, half, 40.0))
        across += amp * np.sin(
            (yy * ct - xx * st) * np.float32(2 * np.pi / crimp) + 3.0 * smooth_field(rng, half, 80.0)
        )
        phase = across * np.float32(2 * np.pi / float(rng.uniform(14.0, 30.0)))
        gate = np.clip(smooth_field(rng, half, 12.0) * 1.5 + 0.8, 0.0, 1.0)
        systems.append((across, np.clip((np.cos(phase) - 0.75) * 6.0, 0.0, 1.0) * gate, phase))
    (across, c1, p1), (across2, c2, p2) = systems
    cleft = c1 * pick + c2 * (1.0 - pick)
    fibril = 0.03 * np.cos(3.0 * np.where(pick > 0.5, p1, p2))
    level = float(rng.uniform(0.55, 0.8)) * (1.0 + 0.08 * smooth_field(rng, half, 30.0) + fibril)
    e = level * (1.0 - 0.85 * cleft)
    across = np.where(pick > 0.5, across, across2)
    canvas_e[fy, fx] += m * upsample2(e.astype(np.float32), m.shape)
    canvas_h[fy, fx] += m * np.float32(0.025)
    bank = [_wavy_spindle(rng, k * np.pi / 12) for k in range(12)]
    grad_y, grad_x = (np.asarray(g) for g in np.gradient(across))
    sp = 70.0
    gy, gx = np.mgrid[fy.start : fy.stop : sp, fx.start : fx.stop : sp]
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1) + rng.uniform(-0.4 * sp, 0.4 * sp, (gx.size, 2))
    for x, y in pts[rng.random(len(pts)) < 0.35]:
        ly, lx = int(y) - fy.start, int(x) - fx.start
        if not (0 <= ly < m.shape[0] and 0 <= lx < m.shape[1]) or m[ly, lx] < 0.6:
            continue
        a = float(np.arctan2(grad_y[ly // 2, lx // 2], grad_x[ly // 2, lx // 2])) + np.pi / 2
        stamp(canvas_h, canvas_e, bank[_angle_index(a, 12)], float(x), float(y), mode="max")


def _wavy_spindle(rng: np.random.Generator, angle: float) -> Sprite:
    """A thin, long, wavy fibroblast nucleus along ``angle``."""
    half_len = float(rng.uniform(14.0, 26.0))
    t = np.linspace(-1.0, 1.0, 6, dtype=np.float32)
    u = t * half_len
    v = float(rng.uniform(0.8, 2.0)) * np.sin(
        np.pi * t * float(rng.uniform(0.8, 1.5)) + float(rng.uniform(0, 6.28))
    )
    ca, sa = np.cos(angle), np.sin(angle)
    x, y = u * ca - v * sa, u * sa + v * ca
    rad = float(rng.uniform(1.6, 2.6)) * (1.0 - 0.45 * t * t)
    segs = np.stack([x[:-1], y[:-1], x[1:], y[1:], (rad[:-1] + rad[1:]) / 2], axis=1)
    size = int(2 * half_len + 10) | 1
    m = segments_field(size, segs, soft=0.9)
    h = (m * float(rng.uniform(0.7, 1.05))).astype(np.float32)
    return Sprite(h=h, e=(0.08 * m).astype(np.float32), alpha=m)


def paint_necrosis(
    rng: np.random.Generator, canvas_h: np.ndarray, canvas_e: np.ndarray, zone: np.ndarray, style: DomainStyle
) -> None:
    """Necrosis: pale mottled eosin with a basophilic haze, nuclear dust (karyorrhexis), ghost nuclei."""
    box = zone_box(zone, canvas_h.shape)
    if box is None:
        return
    (hy, hx), (fy, fx), m = box
    half = (hy.stop - hy.start, hx.stop - hx.start)
    e = float(rng.uniform(0.22, 0.38)) * (1.0 + 0.25 * smooth_field(rng, half, 12.0)) + 0.04 * smooth_field(
        rng, half, 2.0
    )
    e = m * upsample2(np.clip(e, 0.02, None).astype(np.float32), m.shape)
    canvas_e[fy, fx] += e
    e *= np.float32(rng.uniform(0.15, 0.4))  # a basophilic haze that follows the debris
    canvas_h[fy, fx] += e
    ghosts = [_ghost(rng, style) for _ in range(8)]
    dust = [_dust(rng) for _ in range(10)]
    pykno = [ellipse(21, r, r * 0.85, 0.0, soft=1.0) for r in rng.uniform(4.5, 8.0, 4)]
    balls = [Sprite(h=(p * float(rng.uniform(0.9, 1.3))).astype(np.float32), e=0 * p, alpha=p) for p in pykno]
    sp = 38.0 * style.nucleus_scale
    gy, gx = np.mgrid[fy.start : fy.stop : sp, fx.start : fx.stop : sp]
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1) + rng.uniform(-0.4 * sp, 0.4 * sp, (gx.size, 2))
    kind = rng.random(len(pts))
    pick = rng.integers(0, 80, len(pts))
    for (x, y), k, p in zip(pts, kind, pick, strict=True):
        ly, lx = int(y) - fy.start, int(x) - fx.start
        if k > 0.68 or not (0 <= ly < m.shape[0] and 0 <= lx < m.shape[1]) or m[ly, lx] < 0.5:
            continue
        bank = ghosts if k < 0.25 else dust if k < 0.63 else balls
        stamp(canvas_h, canvas_e, bank[p % len(bank)], float(x), float(y), mode="max")


def _ghost(rng: np.random.Generator, style: DomainStyle) -> Sprite:
    """A dead cell's ghost: faint nucleus without chromatin in a hypereosinophilic cytoplasm."""
    r = float(rng.uniform(11.0, 18.0)) * style.nucleus_scale
    size = int(3.4 * r + 6) | 1
    harm = np.stack([rng.normal(0, 0.05, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    nuc = ellipse(
        size, r, r * float(rng.uniform(0.75, 1.0)), float(rng.uniform(0, np.pi)), harmonics=harm, soft=1.5
    )
    cell = ellipse(size, 1.6 * r, 1.5 * r, float(rng.uniform(0, np.pi)), harmonics=harm, soft=2.0)
    h = nuc * float(rng.uniform(0.05, 0.14))
    e = ellipse(size, 1.6 * r, 1.5 * r, float(rng.uniform(0, np.pi)), harmonics=harm, soft=4.0) * float(
        rng.uniform(0.3, 0.45)
    )
    return Sprite(h=h.astype(np.float32), e=e.astype(np.float32), alpha=cell)


def _dust(rng: np.random.Generator) -> Sprite:
    """Karyorrhexis: a cluster of small dark nuclear fragments."""
    k = int(rng.integers(3, 13))
    c = np.clip(rng.normal(0.0, float(rng.uniform(4.0, 11.0)), (k, 2)), -16, 16)
    ends = c + rng.normal(0.0, 1.5, (k, 2)) * (rng.random((k, 1)) < 0.4)  # some fragments elongated
    segs = np.concatenate([c, ends, rng.uniform(1.2, 4.0, (k, 1))], axis=1)
    f = segments_field(41, segs, soft=0.8)
    dark = 1.0 - 0.4 * discs_field(41, c, np.full(k, 2.0), soft=6.0) * rng.random()
    return Sprite(h=(f * dark * float(rng.uniform(0.8, 1.4))).astype(np.float32), e=np.zeros_like(f), alpha=f)


def paint_vessels(
    rng: np.random.Generator,
    canvas_h: np.ndarray,
    canvas_e: np.ndarray,
    blood: np.ndarray,
    zone: np.ndarray,
    style: DomainStyle,
    *,
    canvas_r: np.ndarray | None = None,
) -> None:
    """Vessels in loose stroma: lumens lined by flat endothelial nuclei, eosin walls, red blood cells.

    Red cells go into ``blood`` (their own absorber), the rest into the H&E canvases.
    """
    hh, ww = canvas_h.shape
    area = float(zone.sum()) * 4.0
    radii = np.concatenate(
        [
            np.exp(rng.uniform(np.log(35.0), np.log(130.0), rng.poisson(area / 150_000))),
            rng.uniform(10.0, 22.0, rng.poisson(area / 25_000)),
        ]
    )
    endo = _flat_bank(rng, 12, (9.0, 14.0), (2.2, 3.4))
    muscle = _flat_bank(rng, 12, (10.0, 16.0), (2.6, 4.0))
    rbcs = [_rbc(rng) for _ in range(8)]
    placed: list[tuple[float, float, float]] = []
    for r in np.sort(radii)[::-1]:
        for _ in range(30):
            x, y = float(rng.uniform(0, ww)), float(rng.uniform(0, hh))
            ok = all(
                zone[min(max(int(y + dy), 0), hh - 1) // 2, min(max(int(x + dx), 0), ww - 1) // 2] > 0.7
                for dx, dy in ((0, 0), (1.6 * r, 0), (-1.6 * r, 0), (0, 1.6 * r), (0, -1.6 * r))
            )
            if ok and all((x - px) ** 2 + (y - py) ** 2 > (r + pr + 20) ** 2 for px, py, pr in placed):
                _vessel(rng, canvas_h, canvas_e, blood, canvas_r, x, y, float(r), endo, muscle, rbcs)
                placed.append((x, y, float(r)))
                break


def _vessel(
    rng: np.random.Generator,
    canvas_h: np.ndarray,
    canvas_e: np.ndarray,
    blood: np.ndarray,
    canvas_r: np.ndarray | None,
    x: float,
    y: float,
    r: float,
    endo: list[Sprite],
    muscle: list[Sprite],
    rbcs: list[Sprite],
) -> None:
    elong = float(rng.uniform(1.0, 2.2))
    rx, ry = r * np.sqrt(elong), r / np.sqrt(elong)
    ang = float(rng.uniform(0, np.pi))
    harm = np.stack([rng.normal(0, 0.03 + 0.03 * (r > 30), 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
    wall = max(4.0, r * float(rng.uniform(0.1, 0.35))) if r > 30 else float(rng.uniform(3.0, 5.0))
    size = int(2 * (rx + wall) * 1.25 + 8) | 1
    lumen = ellipse(size, rx, ry, ang, harmonics=harm, soft=1.0)
    outer = ellipse(size, rx + wall, ry + wall, ang, harmonics=harm, soft=1.5)
    ring = np.clip(outer - lumen, 0.0, 1.0)
    e = ring * float(rng.uniform(0.6, 0.85)) * (1.0 + 0.08 * texture(rng, size, 2.0)) + lumen * float(
        rng.uniform(0.02, 0.15)
    )
    stamp(
        canvas_h,
        canvas_e,
        Sprite(h=(0.04 * ring).astype(np.float32), e=e.astype(np.float32), alpha=outer),
        x,
        y,
        canvas_r=canvas_r,
    )
    # red cells: a local map clipped to the lumen, max-stamped into the blood canvas
    local = np.zeros((size, size), np.float32)
    c = size // 2
    n = (
        int(rng.poisson(float(rng.uniform(0.05, 1.0)) * rx * ry / 130.0))
        if r > 20
        else int(rng.integers(0, 4))
    )
    for _ in range(min(n, 600)):
        rho, phi = np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        u, v = rho * max(rx - 10, 2) * np.cos(phi), rho * max(ry - 10, 2) * np.sin(phi)
        stamp(
            local,
            local,
            rbcs[int(rng.integers(len(rbcs)))],
            c + u * np.cos(ang) - v * np.sin(ang),
            c + u * np.sin(ang) + v * np.cos(ang),
            mode="max",
        )
    local *= lumen
    stamp(blood, blood, Sprite(h=local, e=local, alpha=local), x, y, mode="max")
    # flat nuclei: endothelium along the lumen, smooth muscle in thick walls
    for bank, count, depth in (
        (endo, 2 * np.pi * r / rng.uniform(40, 80), 0.0),
        (muscle, (wall > 10) * 2 * np.pi * r / 60, 0.5),
    ):
        for _ in range(int(rng.poisson(count))):
            phi = float(rng.uniform(0, 2 * np.pi))
            u, v = rx * np.cos(phi), ry * np.sin(phi)
            px, py = u * np.cos(ang) - v * np.sin(ang), u * np.sin(ang) + v * np.cos(ang)
            rho = float(blob_radius(np.array([px]), np.array([py]), rx, ry, ang, harm)[0])
            scale = (1.0 + (depth * float(rng.uniform(0.4, 1.6)) * wall + 1.0) / r) / max(rho, 1e-3)
            tu, tv = -rx * np.sin(phi), ry * np.cos(phi)
            t_ang = np.arctan2(tu * np.sin(ang) + tv * np.cos(ang), tu * np.cos(ang) - tv * np.sin(ang))
            stamp(
                canvas_h,
                canvas_e,
                bank[_angle_index(float(t_ang), 12)],
                x + px * scale,
                y + py * scale,
                mode="max",
            )


def _rbc(rng: np.random.Generator) -> Sprite:
    """A red blood cell (~7 µm disc, paler centre, no nucleus), as a blood concentration."""
    r = float(rng.uniform(11.0, 14.0))
    m = ellipse(33, r, r * float(rng.uniform(0.75, 1.0)), float(rng.uniform(0, np.pi)), soft=1.0)
    x = np.arange(33, dtype=np.float32) - 16
    dip = 1.0 - float(rng.uniform(0.15, 0.35)) * np.exp(
        -(x[None, :] ** 2 + x[:, None] ** 2) / (0.45 * r) ** 2
    )
    c = (m * dip * float(rng.uniform(0.9, 1.4))).astype(np.float32)
    return Sprite(h=c, e=c, alpha=m)
