"""Render a synthetic H&E region and the ground truth of every figure in it."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mitoscope.data.synthetic.domains import DomainStyle, get_domain, jitter_style, list_domains
from mitoscope.data.synthetic.experts import FigureSpec, sample_imposter, sample_mitosis
from mitoscope.data.synthetic.figures import figure_sprite
from mitoscope.data.synthetic.nontumour import (
    NonTumour,
    apply_layout,
    defocus_blur,
    forbidden,
    paint_nontumour,
    plan_nontumour,
    sparse_psf,
    tissue_share,
)
from mitoscope.data.synthetic.sprites import stamp
from mitoscope.data.synthetic.stain import od_to_rgb
from mitoscope.data.synthetic.tissue import Layout, background, make_layout, make_room, stamp_cells, upsample2
from mitoscope.utils.errors import InputError

#: Pixel size of everything the generator renders (µm/px).
MPP = 0.25
#: Minimum distance between two annotated figures (px).
MIN_DISTANCE = 64.0
#: Figures keep this far from the region border so their 50×50 box lies inside (px).
BORDER = 32
POINT_COLUMNS = ("x", "y", "label", "atypical", "kind", "experts", "votes", "subclass", "latent")
#: Chance that one expert calls a figure the other class (MIDOG++ ``labels`` votes).
DETECTION_DISSENT = 0.1


@dataclass
class SyntheticRegion:
    """A rendered region and its ground truth.

    Attributes:
        image: HxWx3 uint8 RGB.
        mpp: µm per pixel.
        domain: domain style name.
        tumor: tumour type (MIDOG++ spelling).
        points: one row per figure: ``x, y`` (px), ``label`` (``mitotic figure`` / ``hard negative``),
            ``atypical`` (bool, majority of experts), ``kind``, ``experts`` (tuple of atypical votes,
            1/0; empty for hard negatives), ``votes`` (MIDOG++ category votes of three experts, 1 =
            mitotic figure, 2 = not), ``subclass`` (AMi-Br style, majority), ``latent``.
    """

    image: np.ndarray
    mpp: float
    domain: str
    tumor: str
    points: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(POINT_COLUMNS)))


def psf_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps (3 or 5) of the scanner's point-spread function.

    Examples:
        >>> round(float(psf_taps(0.7).sum()), 6)
        1.0
    """
    half = 1 if sigma <= 0.8 else 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(ax**2) / (2 * sigma * sigma))
    return (g / g.sum()).astype(np.float32)


def finish(
    conc_h: np.ndarray,
    conc_e: np.ndarray,
    style: DomainStyle,
    rng: np.random.Generator,
    conc_r: np.ndarray | None = None,
    *,
    absorbers: list[tuple[np.ndarray, np.ndarray]] | None = None,
    defocus: tuple[np.ndarray, float] | None = None,
) -> np.ndarray:
    """Concentrations → RGB uint8 through the domain's scanner PSF, stains, noise and JPEG.

    The PSF is applied to the concentration maps (separable, 3–5 taps), a cheap approximation of
    blurring the transmitted light. ``conc_*`` are modified in place. ``absorbers`` are further
    (concentration, OD vector) pairs (red cells, ink); ``defocus`` is a half-resolution weight and a
    sigma of extra blur (out-of-focus areas).

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> z = np.zeros((16, 16), np.float32)
        >>> finish(z, z + 0.3, get_domain(0), np.random.default_rng(0)).dtype
        dtype('uint8')
    """
    from PIL import Image
    from scipy.ndimage import correlate1d

    conc_h *= np.float32(style.h_scale)
    conc_e *= np.float32(style.e_scale)
    maps = [m for m in (conc_h, conc_e, conc_r) if m is not None]
    extra = [a for a, _ in absorbers or ()]
    if style.blur_sigma > 0:
        taps = psf_taps(style.blur_sigma)
        for m in maps:
            correlate1d(m, taps, axis=0, output=m, mode="nearest")
            correlate1d(m, taps, axis=1, output=m, mode="nearest")
        for a in extra:
            sparse_psf(a, taps)
    if defocus is not None:
        defocus_blur(maps + extra, *defocus)
    rgb = od_to_rgb(conc_h, conc_e, style.stains, conc_r, absorbers or ())
    if style.noise_sigma > 0:
        noise = rng.standard_normal(rgb.shape[:2], dtype=np.float32)
        noise *= np.float32(style.noise_sigma)
        noise += np.float32(0.5)  # rounding offset for the truncating cast below
        for c in range(3):
            rgb[..., c] += noise
        del noise
    else:
        rgb += np.float32(0.5)
    np.clip(rgb, 0, 255, out=rgb)
    out = rgb.astype(np.uint8)
    del rgb
    if style.jpeg_quality is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(style.jpeg_quality))
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    return np.ascontiguousarray(out)


def render_canvas(
    shape: tuple[int, int],
    style: DomainStyle,
    rng: np.random.Generator,
    objects: list[tuple[float, float, FigureSpec]],
    layout: Layout | None = None,
    *,
    extra: NonTumour | None = None,
) -> np.ndarray:
    """Render tissue of ``shape`` (h, w) with the given figures at their (x, y) centres.

    ``layout`` (lumen / stroma) is drawn from ``rng`` unless given; ``extra`` adds non-tumour tissue
    (see :mod:`.nontumour`), drawn from its own generator.

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> render_canvas((64, 96), get_domain(0), np.random.default_rng(0), []).shape
        (64, 96, 3)
    """
    if layout is None:
        layout = make_layout(rng, shape, style)
    centres = np.array([(x, y) for x, y, _ in objects], np.float32).reshape(-1, 2)
    make_room(layout, centres)
    if extra is not None:
        apply_layout(extra, layout)
    h, e = background(rng, shape, layout)
    keep = upsample2(1.0 - layout.lumen, shape)  # empty (lumen) areas carry no stain
    h *= keep
    e *= keep
    del keep
    r = np.zeros(shape, np.float32) if style.pigment > 0 else None
    stamp_cells(rng, h, e, layout, style, exclude=centres, exclude_radius=26.0, canvas_r=r)
    absorbers = None if extra is None else paint_nontumour(extra, h, e, style, avoid=centres, canvas_r=r)
    for x, y, spec in objects:
        sprite = figure_sprite(rng, spec.kind, style, severity=spec.severity)
        stamp(h, e, sprite, x, y, mode="over", canvas_r=r)
    defocus = None if extra is None or extra.defocus is None else (extra.defocus, extra.defocus_sigma)
    return finish(h, e, style, rng, r, absorbers=absorbers, defocus=defocus)


def _default_count(rng: np.random.Generator, area_px: int, per_mpx: float) -> int:
    activity = float(rng.choice([0.0, 0.4, 1.0, 1.0, 1.8]))
    return int(rng.poisson(per_mpx * activity * area_px / 1e6))


def _place(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int],
    layout_lumen: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``n`` centres at least :data:`MIN_DISTANCE` apart, inside the border (rejection sampling)."""
    w, h = size
    pts: list[tuple[float, float]] = []
    tries = 0
    while len(pts) < n and tries < 200 * max(n, 1):
        tries += 1
        x = float(rng.uniform(BORDER, w - BORDER))
        y = float(rng.uniform(BORDER, h - BORDER))
        if layout_lumen is not None and layout_lumen[int(y) // 2, int(x) // 2] > 0.2:
            continue
        if pts:
            a = np.asarray(pts)
            if np.min((a[:, 0] - x) ** 2 + (a[:, 1] - y) ** 2) < MIN_DISTANCE**2:
                continue
        pts.append((round(x, 1), round(y, 1)))
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (width, height), got {size!r}") from None
    if w < 2 * BORDER + 1 or h < 2 * BORDER + 1:
        raise InputError(f"region size must be at least {2 * BORDER + 1}×{2 * BORDER + 1} px, got {w}×{h}")
    return w, h


def render_region(
    size: tuple[int, int] = (1024, 1024),
    *,
    domain: int | str,
    seed: int,
    n_mitoses: int | None = None,
    n_imposters: int | None = None,
    atypical_fraction: float = 0.3,
    extra_tissue: float = 0.0,
) -> SyntheticRegion:
    """Render one synthetic H&E region at 0.25 µm/px with mitoses and imposters, and its ground truth.

    Args:
        size: (width, height) in pixels.
        domain: domain index or name (see :func:`list_domains`).
        seed: random seed; the same seed, size and domain give identical output.
        n_mitoses: number of mitotic figures; ``None`` draws a count (some regions have none).
        n_imposters: number of hard negatives; ``None`` draws a count.
        atypical_fraction: probability that a mitosis is drawn from an atypical kind.
        extra_tissue: share of the canvas given to unlabelled non-tumour tissue (fat, vessels with
            red cells, necrosis, dense collagen) plus marking ink and out-of-focus patches; figures
            stay out of it and drawn counts shrink with the tumour area. 0 renders none.

    Returns:
        A :class:`SyntheticRegion`. If the tissue cannot hold all figures ``MIN_DISTANCE`` apart,
        fewer are placed (``points`` lists those actually drawn).

    Raises:
        InputError: bad size, counts, fractions or domain.

    Examples:
        >>> reg = render_region((256, 256), domain=0, seed=1, n_mitoses=1, n_imposters=1)
        >>> reg.image.shape, len(reg.points)
        ((256, 256, 3), 2)
    """
    w, h = _check_size(size)
    style = get_domain(domain)
    for name, val in (("n_mitoses", n_mitoses), ("n_imposters", n_imposters)):
        if val is not None and int(val) < 0:
            raise InputError(f"{name} must be >= 0, got {val}")
    if not 0.0 <= float(atypical_fraction) <= 1.0:
        raise InputError(f"atypical_fraction must be in [0, 1], got {atypical_fraction}")
    if not 0.0 <= float(extra_tissue) <= 1.0:
        raise InputError(f"extra_tissue must be in [0, 1], got {extra_tissue}")
    dom_idx = list_domains().index(style.name)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), dom_idx, w, h]))
    style = jitter_style(style, rng)
    nm = _default_count(rng, w * h, 3.0) if n_mitoses is None else int(n_mitoses)
    ni = _default_count(rng, w * h, 4.0) if n_imposters is None else int(n_imposters)
    layout = make_layout(rng, (h, w), style)
    extra, free = None, layout.lumen
    if extra_tissue > 0:  # from its own generator: at 0, rng draws exactly what it always drew
        xrng = np.random.default_rng(np.random.SeedSequence([int(seed), dom_idx, w, h, 0x6E74]))
        extra = plan_nontumour(xrng, (h, w), layout, float(extra_tissue))
        free = forbidden(extra, layout)
        keep = tissue_share(extra, layout)
        nm = int(xrng.binomial(nm, keep)) if n_mitoses is None else nm
        ni = int(xrng.binomial(ni, keep)) if n_imposters is None else ni
    pts = _place(rng, nm + ni, (w, h), free)
    order = rng.permutation(len(pts))
    specs: list[FigureSpec] = []
    for i in range(len(pts)):
        specs.append(sample_mitosis(rng, atypical_fraction) if order[i] < nm else sample_imposter(rng))
    objects = [(float(p[0]), float(p[1]), s) for p, s in zip(pts, specs, strict=True)]
    image = render_canvas((h, w), style, rng, objects, layout, extra=extra)
    votes = []
    for _, _, spec in objects:
        cat = 1 if spec.mitotic else 2
        v = [cat, cat, cat]
        if rng.random() < DETECTION_DISSENT:
            v[int(rng.integers(3))] = 3 - cat
        votes.append(tuple(v))
    rows = [
        {
            "x": x,
            "y": y,
            "label": "mitotic figure" if s.mitotic else "hard negative",
            "atypical": bool(s.atypical),
            "kind": s.kind,
            "experts": s.votes,
            "votes": v,
            "subclass": _majority_subclass(s),
            "latent": round(float(s.latent), 4),
        }
        for (x, y, s), v in zip(objects, votes, strict=True)
    ]
    points = pd.DataFrame(rows, columns=list(POINT_COLUMNS))
    return SyntheticRegion(image=image, mpp=MPP, domain=style.name, tumor=style.tumor, points=points)


def _majority_subclass(spec: FigureSpec) -> str:
    if not spec.subclasses:
        return ""
    want = "AMF" if spec.atypical else "NMF"
    for s in spec.subclasses:
        if s.startswith(want):
            return s
    return spec.subclasses[0]
