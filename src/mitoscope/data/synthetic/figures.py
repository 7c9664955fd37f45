"""Mitotic figures, atypical figures and imposters as small stain sprites.

Chromatin is built from chromosomes (short thick segments) arranged by phase: clumps (prophase,
prometaphase), a plate seen edge-on (metaphase) or face-on (ring), two parallel bars (anaphase),
two compact masses in a pinching cell (telophase). Atypical figures break that structure:
multipolar arrangements, lagging chromosomes / fragments, unequal (asymmetric) bars, chromatin
bridges — the *colour* of normal and atypical figures is drawn from the same distribution.
Imposters are dark and round but not mitosis-shaped: apoptotic bodies, pyknotic nuclei,
lymphocytes and granules.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mitoscope.data.synthetic.domains import DomainStyle
from mitoscope.data.synthetic.sprites import Sprite, discs_field, ellipse, segments_field, texture
from mitoscope.data.synthetic.tissue import nucleus_sprite

NORMAL_KINDS: tuple[str, ...] = ("prophase", "prometaphase", "metaphase", "ring", "anaphase", "telophase")
ATYPICAL_KINDS: tuple[str, ...] = ("multipolar", "lagging", "asymmetric", "bridge")
IMPOSTER_KINDS: tuple[str, ...] = ("apoptotic", "pyknotic", "lymphocyte", "granules")
#: How often each kind is drawn within its class.
NORMAL_WEIGHTS: tuple[float, ...] = (0.1, 0.3, 0.3, 0.08, 0.12, 0.1)
ATYPICAL_WEIGHTS: tuple[float, ...] = (0.3, 0.3, 0.2, 0.2)

#: AMi-Br style subclass names of each kind.
SUBCLASS: dict[str, str] = {
    "prophase": "NMF prophase",
    "prometaphase": "NMF prometaphase",
    "metaphase": "NMF metaphase",
    "ring": "NMF ring shape",
    "anaphase": "NMF anaphase-telophase",
    "telophase": "NMF anaphase-telophase",
    "multipolar": "AMF multipolar",
    "lagging": "AMF segregation",
    "asymmetric": "AMF bipolar assymetric",
    "bridge": "AMF segregation",
}
#: The subclass an expert gives when they disagree with the kind's class.
SUBCLASS_IF_FLIPPED: dict[str, str] = {
    **{k: "AMF other" for k in NORMAL_KINDS},
    "multipolar": "NMF metaphase",
    "lagging": "NMF anaphase-telophase",
    "asymmetric": "NMF anaphase-telophase",
    "bridge": "NMF anaphase-telophase",
}

SPRITE_SIZE = 111


def _rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]], dtype=np.float32)


def _chromosomes(
    rng: np.random.Generator,
    centres: np.ndarray,
    orient: np.ndarray | float,
    *,
    spread: float = 0.45,
    length: tuple[float, float] = (4.0, 9.0),
    radius: tuple[float, float] = (1.7, 2.6),
) -> np.ndarray:
    """Segments of chromosomes at ``centres`` with orientation ``orient`` ± ``spread`` rad.

    Each chromosome is a V of two arms joined at the centromere (bend up to ~35°, so some look
    straight), which gives figures their knobby, hairy outline. Returns (2n, 5) segments.
    """
    n = len(centres)
    ang = np.asarray(orient, dtype=np.float32) + rng.normal(0, spread, n)
    lengths = rng.uniform(*length, n)
    bend = rng.uniform(0.0, 0.6, n)
    rad = rng.uniform(*radius, n)
    c = np.asarray(centres, dtype=np.float32).reshape(-1, 2)
    d = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    vertex = c - 0.4 * lengths[:, None] * d
    segs = []
    for sign in (-1.0, 1.0):
        a = ang + sign * bend
        tip = vertex + 0.8 * lengths[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
        segs.append(np.concatenate([vertex, tip, rad[:, None]], axis=1))
    return np.concatenate(segs, axis=0).astype(np.float32)


def _bar(
    rng: np.random.Generator,
    centre: np.ndarray,
    axis_angle: float,
    length: float,
    n: int,
    *,
    thickness: float = 1.6,
    chrom_orient: float | None = None,
    spread: float = 0.45,
) -> np.ndarray:
    """A plate of ``n`` chromosomes along a line of ``length`` at ``axis_angle`` (seen edge-on)."""
    t = np.sort(rng.uniform(-0.5, 0.5, n)) * length
    perp = rng.normal(0, thickness, n)
    d = np.array([np.cos(axis_angle), np.sin(axis_angle)], np.float32)
    p = np.array([-d[1], d[0]], np.float32)
    centres = centre[None, :] + t[:, None] * d[None, :] + perp[:, None] * p[None, :]
    orient = axis_angle + np.pi / 2 if chrom_orient is None else chrom_orient
    return _chromosomes(rng, centres, orient, spread=spread)


def _clump(
    rng: np.random.Generator, centre: np.ndarray, sx: float, sy: float, angle: float, n: int
) -> np.ndarray:
    pts = rng.normal(0, 1, (n, 2)) * np.array([sx, sy], np.float32)
    pts = pts @ _rot(angle).T + centre[None, :]
    return _chromosomes(rng, pts, rng.uniform(0, np.pi, n), spread=0.0)


def _strays(rng: np.random.Generator, n: int, near: float) -> np.ndarray:
    """Isolated chromosomes ``near`` px from the centre (borderline irregularity / lagging)."""
    if n <= 0:
        return np.zeros((0, 5), np.float32)
    ang = rng.uniform(0, 2 * np.pi, n)
    r = rng.uniform(0.7, 1.1, n) * near
    c = np.stack([np.cos(ang) * r, np.sin(ang) * r], axis=1)
    return _chromosomes(rng, c, rng.uniform(0, np.pi, n), spread=0.0, length=(2.0, 5.0), radius=(1.5, 2.2))


class _Shape:
    """Chromatin segments plus the cell body (one or two ellipses) of a figure."""

    def __init__(self) -> None:
        self.segs: list[np.ndarray] = []
        self.cells: list[tuple[float, float, float, float, float]] = []  # cx, cy, rx, ry, angle
        self.background_h = 0.0
        self.background_r = 0.0

    def chrom(self, segs: np.ndarray) -> None:
        self.segs.append(np.asarray(segs, np.float32).reshape(-1, 5))

    def cell(self, cx: float, cy: float, rx: float, ry: float, angle: float) -> None:
        self.cells.append((cx, cy, rx, ry, angle))


# --- normal figures ----------------------------------------------------------------------------


def _prophase(rng: np.random.Generator, s: _Shape, phi: float, irr: float) -> None:
    rn = rng.uniform(10, 14)
    n = int(rng.integers(32, 48))
    a = rng.uniform(0, 2 * np.pi, n)
    r = np.sqrt(rng.uniform(0, 1, n)) * (rn - 2)
    c = np.stack([np.cos(a) * r, np.sin(a) * r], axis=1)
    s.chrom(_chromosomes(rng, c, rng.uniform(0, np.pi, n), spread=0.0, length=(3, 8), radius=(1.0, 1.6)))
    s.background_h = rn
    s.chrom(_strays(rng, rng.binomial(2, irr), rn + 6))
    rc = rn + rng.uniform(7, 11)
    s.cell(0, 0, rc, rc * rng.uniform(0.85, 1), phi)


def _prometaphase(rng: np.random.Generator, s: _Shape, phi: float, irr: float) -> None:
    n = int(rng.integers(18, 30))
    sx, sy = rng.uniform(4.5, 7), rng.uniform(3, 5)
    s.chrom(_clump(rng, np.zeros(2, np.float32), sx, sy, phi, n))
    s.chrom(_strays(rng, rng.binomial(2, irr), 14))
    rc = rng.uniform(19, 25)
    s.cell(0, 0, rc, rc * rng.uniform(0.8, 1), phi)


def _metaphase(rng: np.random.Generator, s: _Shape, phi: float, irr: float) -> None:
    length = rng.uniform(20, 32)
    s.chrom(_bar(rng, np.zeros(2, np.float32), phi, length, int(rng.integers(14, 22))))
    s.chrom(_strays(rng, rng.binomial(2, irr), 12))
    s.cell(0, 0, length / 2 + rng.uniform(6, 10), rng.uniform(20, 26), phi)


def _ring(rng: np.random.Generator, s: _Shape, phi: float, irr: float) -> None:
    rr = rng.uniform(8.5, 12)
    n = int(rng.integers(14, 22))
    a = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.normal(0, 0.12, n)
    r = rr + rng.normal(0, 0.8, n)
    c = np.stack([np.cos(a) * r, np.sin(a) * r], axis=1)
    s.chrom(_chromosomes(rng, c, a, spread=0.35, length=(4, 7)))
    s.chrom(_strays(rng, rng.binomial(2, irr), rr + 8))
    rc = rr + rng.uniform(10, 14)
    s.cell(0, 0, rc, rc * rng.uniform(0.85, 1), phi)


def _two_bars(
    rng: np.random.Generator,
    s: _Shape,
    phi: float,
    sep: float,
    len1: float,
    len2: float,
    n1: int,
    n2: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Two parallel plates ``sep`` apart along the spindle axis ``phi`` (anaphase)."""
    axis = np.array([np.cos(phi), np.sin(phi)], np.float32)
    c1, c2 = -axis * sep / 2, axis * sep / 2
    plate = phi + np.pi / 2
    s.chrom(_bar(rng, c1, plate, len1, n1, thickness=1.2, chrom_orient=phi, spread=0.35))
    s.chrom(_bar(rng, c2, plate, len2, n2, thickness=1.2, chrom_orient=phi, spread=0.35))
    return c1, c2


def _anaphase(rng: np.random.Generator, s: _Shape, phi: float, irr: float) -> None:
    sep = rng.uniform(12, 20)
    ln = rng.uniform(16, 26)
    n = int(rng.integers(10, 16))
    _two_bars(rng, s, phi, sep, ln, ln * rng.uniform(0.9, 1.1), n, n + int(rng.integers(-1, 2)))
    s.chrom(_strays(rng, rng.binomial(1, irr), 4))
    s.cell(0, 0, sep / 2 + rng.uniform(13, 17), ln / 2 + rng.uniform(6, 9), phi)


def _telophase(rng: np.random.Generator, s: _Shape, phi: float, irr: float) -> None:
    sep = rng.uniform(28, 40)
    axis = np.array([np.cos(phi), np.sin(phi)], np.float32)
    for sign in (-1, 1):
        c = axis * sign * sep / 2
        s.chrom(_clump(rng, c, rng.uniform(2.5, 3.5), rng.uniform(4.5, 6.5), phi, int(rng.integers(9, 14))))
        rc = rng.uniform(13, 16)
        s.cell(float(c[0]) * 1.1, float(c[1]) * 1.1, rc, rc * rng.uniform(0.9, 1.1), phi)
    s.chrom(_strays(rng, rng.binomial(1, irr), 3))


# --- atypical figures ---------------------------------------------------------------------------


def _multipolar(rng: np.random.Generator, s: _Shape, phi: float, sev: float) -> None:
    poles = 3 if rng.random() < 0.7 else 4
    base = phi + np.linspace(0, 2 * np.pi, poles, endpoint=False) + rng.normal(0, 0.2, poles)
    if rng.random() < 0.5:
        # Y / X shaped metaphase plate: arms from the centre
        for k, a in enumerate(base):
            ln = rng.uniform(10, 16) * (0.4 + 0.6 * sev if k == poles - 1 else 1.0)
            mid = np.array([np.cos(a), np.sin(a)], np.float32) * (ln / 2 + 2)
            s.chrom(_bar(rng, mid, float(a), ln, max(3, int(ln / 1.6)), thickness=1.1))
        rc = rng.uniform(22, 27)
        s.cell(0, 0, rc, rc * rng.uniform(0.9, 1), phi)
    else:
        # separated poles: 3–4 short plates around the centre
        dist = rng.uniform(10, 16)
        for k, a in enumerate(base):
            d = dist * (0.55 + 0.45 * sev if k == poles - 1 else 1.0)
            c = np.array([np.cos(a), np.sin(a)], np.float32) * d
            s.chrom(
                _bar(rng, c, float(a + np.pi / 2), rng.uniform(9, 15), int(rng.integers(5, 9)), thickness=1.1)
            )
        rc = dist + rng.uniform(11, 15)
        s.cell(0, 0, rc, rc * rng.uniform(0.9, 1), phi)


def _lagging(rng: np.random.Generator, s: _Shape, phi: float, sev: float) -> None:
    axis = np.array([np.cos(phi), np.sin(phi)], np.float32)
    perp = np.array([-axis[1], axis[0]], np.float32)
    if rng.random() < 0.6:
        sep = rng.uniform(18, 26)
        ln = rng.uniform(16, 24)
        n = int(rng.integers(9, 14))
        _two_bars(rng, s, phi, sep, ln, ln * rng.uniform(0.9, 1.1), n, n)
        k = 1 + round(2.5 * sev + rng.uniform(0, 1))
        t = rng.uniform(-0.3, 0.3, k) * sep
        o = rng.normal(0, ln / 3, k)
        c = t[:, None] * axis[None, :] + o[:, None] * perp[None, :]
        s.chrom(_chromosomes(rng, c, rng.uniform(0, np.pi, k), spread=0.0, length=(3, 7), radius=(1.6, 2.4)))
        s.cell(0, 0, sep / 2 + rng.uniform(12, 16), ln / 2 + rng.uniform(6, 9), phi)
    else:
        # metaphase with chromosomes left off the plate
        length = rng.uniform(20, 30)
        s.chrom(_bar(rng, np.zeros(2, np.float32), phi + np.pi / 2, length, int(rng.integers(13, 19))))
        k = 2 + round(2.5 * sev + rng.uniform(0, 1))
        t = rng.choice([-1.0, 1.0], k) * rng.uniform(8, 13 + 4 * sev, k)
        o = rng.uniform(-0.5, 0.5, k) * length
        c = t[:, None] * axis[None, :] + o[:, None] * perp[None, :]
        s.chrom(_chromosomes(rng, c, rng.uniform(0, np.pi, k), spread=0.0, length=(3, 7), radius=(1.7, 2.5)))
        s.cell(0, 0, rng.uniform(20, 25), length / 2 + rng.uniform(6, 10), phi)


def _asymmetric(rng: np.random.Generator, s: _Shape, phi: float, sev: float) -> None:
    sep = rng.uniform(14, 22)
    ln = rng.uniform(20, 28)
    ratio = 1.0 - (0.25 + 0.45 * sev)
    n = int(rng.integers(13, 18))
    _two_bars(rng, s, phi, sep, ln, ln * ratio, n, max(3, int(n * ratio)))
    s.cell(0, 0, sep / 2 + rng.uniform(13, 17), ln / 2 + rng.uniform(6, 9), phi)


def _bridge(rng: np.random.Generator, s: _Shape, phi: float, sev: float) -> None:
    sep = rng.uniform(18, 32)
    ln = rng.uniform(14, 22)
    n = int(rng.integers(9, 14))
    c1, c2 = _two_bars(rng, s, phi, sep, ln, ln * rng.uniform(0.9, 1.1), n, n)
    axis = np.array([np.cos(phi), np.sin(phi)], np.float32)
    perp = np.array([-axis[1], axis[0]], np.float32)
    for _ in range(1 + int(rng.random() < sev)):
        o1, o2 = rng.normal(0, ln / 5, 2)
        p1, p2 = c1 + perp * o1, c2 + perp * o2
        mid = (p1 + p2) / 2 + perp * rng.normal(0, 2.5)
        w = rng.uniform(1.0, 1.3 + 0.5 * sev)
        s.chrom(np.array([[*p1, *mid, w], [*mid, *p2, w]], np.float32))
    s.cell(0, 0, sep / 2 + rng.uniform(12, 16), ln / 2 + rng.uniform(6, 9), phi)


_BUILDERS: dict[str, Callable[[np.random.Generator, _Shape, float, float], None]] = {
    "prophase": _prophase,
    "prometaphase": _prometaphase,
    "metaphase": _metaphase,
    "ring": _ring,
    "anaphase": _anaphase,
    "telophase": _telophase,
    "multipolar": _multipolar,
    "lagging": _lagging,
    "asymmetric": _asymmetric,
    "bridge": _bridge,
}


def _cells_mask(
    size: int, cells: list[tuple[float, float, float, float, float]], rng: np.random.Generator
) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    for cx, cy, rx, ry, ang in cells:
        harm = np.stack([rng.normal(0, 0.05, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
        mask = np.maximum(mask, ellipse(size, rx, ry, ang, harmonics=harm, soft=1.8, offset=(cx, cy)))
    return mask


def mitotic_figure(
    rng: np.random.Generator,
    kind: str,
    style: DomainStyle,
    *,
    severity: float = 0.5,
    size: int = SPRITE_SIZE,
) -> Sprite:
    """Render a normal or atypical mitotic figure in its (pale, often clear) cell.

    Args:
        rng: random generator.
        kind: one of :data:`NORMAL_KINDS` or :data:`ATYPICAL_KINDS`.
        style: domain style (pigment etc.; stain scaling happens later).
        severity: for atypical kinds how far from a normal figure (0–1); for normal kinds the
            chance of a stray chromosome (borderline irregularity).
        size: sprite side in pixels.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> s = mitotic_figure(np.random.default_rng(0), "metaphase", get_domain(0))
        >>> float(s.h.max()) > 1.2
        True
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown figure kind {kind!r}; expected one of {sorted(_BUILDERS)}")
    shape = _Shape()
    phi = float(rng.uniform(0, np.pi))
    _BUILDERS[kind](rng, shape, phi, float(np.clip(severity, 0.0, 1.0)))
    segs = np.concatenate(shape.segs, axis=0) if shape.segs else np.zeros((0, 5), np.float32)
    scale = float(rng.uniform(1.15, 1.45))
    segs[:, :4] *= scale
    segs[:, 4] *= np.sqrt(scale)
    cells = [(cx * scale, cy * scale, rx * scale, ry * scale, a) for cx, cy, rx, ry, a in shape.cells]
    chrom = segments_field(size, segs, soft=1.0)
    from scipy.ndimage import gaussian_filter

    fuzz = gaussian_filter(chrom, 1.8)
    dens = float(rng.uniform(1.5, 2.1))
    h = dens * np.clip(0.6 * chrom + 0.7 * fuzz, 0, 1.1) * (1.0 + 0.12 * texture(rng, size, 1.0))
    if shape.background_h:
        rb = shape.background_h * scale
        h = np.maximum(h, 0.35 * ellipse(size, rb, rb * 0.9, phi))
    cell = _cells_mask(size, cells, rng)
    inner = _cells_mask(size, [(cx, cy, rx - 2.5, ry - 2.5, a) for cx, cy, rx, ry, a in cells], rng)
    clear = float(rng.uniform(0.12, 0.38))
    e = cell * clear * (1.0 + 0.25 * texture(rng, size, 2.0)) + 0.25 * np.clip(cell - inner, 0, 1)
    e = e + 0.3 * chrom
    h = h + 0.04 * cell
    return Sprite(h=h.astype(np.float32), e=e.astype(np.float32), alpha=cell.astype(np.float32))


def imposter(rng: np.random.Generator, kind: str, style: DomainStyle, *, size: int = 61) -> Sprite:
    """Render a hard negative: apoptotic body, pyknotic nucleus, lymphocyte or granules.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> s = imposter(np.random.default_rng(0), "pyknotic", get_domain(0))
        >>> float(s.h.max()) > 1.5
        True
    """
    r_map = None
    if kind == "apoptotic":
        rb = rng.uniform(9, 15)
        body = ellipse(size, rb, rb * rng.uniform(0.85, 1), rng.uniform(0, np.pi), soft=1.0)
        halo_r = rb + rng.uniform(3, 7)
        halo = ellipse(size, halo_r, halo_r, 0.0, soft=1.5)
        k = int(rng.integers(2, 6))
        ang = rng.uniform(0, 2 * np.pi, k)
        rad = np.sqrt(rng.uniform(0, 1, k)) * rb * 0.55
        frag = discs_field(size, np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1), rng.uniform(2, 4.5, k))
        h = rng.uniform(1.8, 2.4) * frag + 0.06 * body
        e = body * rng.uniform(0.9, 1.3) * (1 + 0.08 * texture(rng, size, 1.5)) + 0.05 * halo
        alpha = halo
    elif kind == "pyknotic":
        rp = rng.uniform(5, 9)
        nuc = ellipse(size, rp, rp * rng.uniform(0.85, 1), rng.uniform(0, np.pi), soft=0.9)
        rc = rp + rng.uniform(3, 6)
        cell = ellipse(size, rc, rc * rng.uniform(0.85, 1), rng.uniform(0, np.pi), soft=1.3)
        h = rng.uniform(2.0, 2.6) * nuc * (1 + 0.03 * texture(rng, size, 2.0))
        e = cell * rng.uniform(0.5, 0.8) + 0.2 * nuc
        alpha = cell
    elif kind == "lymphocyte":
        rl = rng.uniform(8, 12)
        nuc = ellipse(size, rl, rl * rng.uniform(0.88, 1), rng.uniform(0, np.pi), soft=1.0)
        rc = rl + rng.uniform(1.5, 3)
        cell = ellipse(size, rc, rc, 0.0, soft=1.2)
        h = nuc * rng.uniform(1.1, 1.5) * (1 + 0.15 * texture(rng, size, 1.8))
        e = cell * rng.uniform(0.2, 0.35) + 0.1 * nuc
        alpha = cell
    elif kind == "granules":
        rc = rng.uniform(14, 18)
        cell = ellipse(size, rc, rc * rng.uniform(0.8, 1), rng.uniform(0, np.pi), soft=1.5)
        k = int(rng.integers(6, 16))
        pts = rng.normal(0, rng.uniform(4, 7), (k, 2))
        gran = discs_field(size, pts, rng.uniform(1.2, 2.8, k))
        dens = rng.uniform(1.4, 2.0) * gran
        e = cell * rng.uniform(0.2, 0.35)
        if style.pigment > 0:
            h = 0.04 * cell + 0.2 * gran
            r_map = dens.astype(np.float32)
        else:
            h = 0.04 * cell + dens
        alpha = cell
    else:
        raise ValueError(f"unknown imposter kind {kind!r}; expected one of {list(IMPOSTER_KINDS)}")
    return Sprite(
        h=np.asarray(h, np.float32), e=np.asarray(e, np.float32), alpha=np.asarray(alpha, np.float32), r=r_map
    )


def figure_sprite(
    rng: np.random.Generator, kind: str, style: DomainStyle, *, severity: float = 0.5
) -> Sprite:
    """Any kind: mitotic (normal / atypical), imposter, or ``"nucleus"`` (plain interphase cell).

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> figure_sprite(np.random.default_rng(0), "lymphocyte", get_domain(1)).size
        61
    """
    if kind in IMPOSTER_KINDS:
        return imposter(rng, kind, style)
    if kind == "nucleus":
        return nucleus_sprite(rng, style)
    return mitotic_figure(rng, kind, style, severity=severity)
