"""Domain styles: the scanner / lab / tumour looks the synthetic generator can render.

A style shifts the stain vectors and concentrations, the scanner's blur (PSF), noise and JPEG
artefacts, the background brightness, the cell density and the tissue layout. Styles are plain
frozen dataclasses in a fixed order, so ``--domains K`` always means the same first K.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mitoscope.data.synthetic.stain import StainMatrix, rotate_vector
from mitoscope.utils.errors import InputError


@dataclass(frozen=True)
class DomainStyle:
    """How one synthetic domain looks.

    Attributes:
        name: short key (``breast_xr``).
        tumor: tumour type written into annotations (MIDOG++ spelling).
        scanner: scanner name (informational).
        species: ``human`` or ``canine``.
        stains: stain vectors and white point.
        h_scale: multiplier of hematoxylin concentrations.
        e_scale: multiplier of eosin concentrations.
        blur_sigma: Gaussian PSF sigma in pixels.
        noise_sigma: sensor noise (RGB units).
        jpeg_quality: JPEG quality of the scanner's compression, ``None`` for none.
        density: nuclei per tumour area (1.0 = breast carcinoma).
        lumen_fraction: fraction of the area that is empty (white) background.
        stroma_fraction: fraction of tissue that is stroma rather than tumour cells.
        nucleus_scale: multiplier of nucleus size.
        elongation: how spindle-shaped nuclei are (1.0 = round-ish).
        pigment: amount of brown pigment granules (melanoma).
    """

    name: str
    tumor: str
    scanner: str
    species: str
    stains: StainMatrix
    h_scale: float = 1.0
    e_scale: float = 1.0
    blur_sigma: float = 0.6
    noise_sigma: float = 2.0
    jpeg_quality: int | None = 85
    density: float = 1.0
    lumen_fraction: float = 0.08
    stroma_fraction: float = 0.35
    nucleus_scale: float = 1.0
    elongation: float = 1.0
    pigment: float = 0.0


_STYLES: tuple[DomainStyle, ...] = (
    DomainStyle(
        name="breast_xr",
        tumor="human breast cancer",
        scanner="Hamamatsu XR",
        species="human",
        stains=StainMatrix((0.62, 0.73, 0.29), (0.09, 0.98, 0.16), white=(246.0, 244.0, 248.0)),
        h_scale=1.0,
        e_scale=1.0,
        blur_sigma=0.7,
        noise_sigma=2.0,
        jpeg_quality=80,
    ),
    DomainStyle(
        name="breast_s360",
        tumor="human breast cancer",
        scanner="Hamamatsu S360",
        species="human",
        stains=StainMatrix((0.78, 0.61, 0.15), (0.03, 0.99, 0.12), white=(252.0, 250.0, 253.0)),
        h_scale=1.2,
        e_scale=0.75,
        blur_sigma=0.4,
        noise_sigma=1.5,
        jpeg_quality=90,
        density=1.1,
    ),
    DomainStyle(
        name="lymphoma_cs2",
        tumor="canine lymphosarcoma",
        scanner="Aperio CS2",
        species="canine",
        stains=StainMatrix((0.55, 0.75, 0.37), (0.12, 0.96, 0.25), white=(240.0, 236.0, 242.0)),
        h_scale=1.15,
        e_scale=0.9,
        blur_sigma=0.9,
        noise_sigma=3.0,
        jpeg_quality=65,
        density=1.6,
        lumen_fraction=0.02,
        stroma_fraction=0.08,
        nucleus_scale=0.8,
    ),
    DomainStyle(
        name="mast_cell_gt450",
        tumor="canine cutaneous mast cell tumor",
        scanner="Leica GT450",
        species="canine",
        stains=StainMatrix((0.58, 0.76, 0.30), (0.0, 0.97, 0.24), white=(253.0, 248.0, 240.0)),
        h_scale=0.75,
        e_scale=0.65,
        blur_sigma=1.1,
        noise_sigma=1.5,
        jpeg_quality=85,
        density=0.9,
        lumen_fraction=0.12,
        stroma_fraction=0.45,
    ),
    DomainStyle(
        name="neuroendocrine_3dh",
        tumor="human neuroendocrine tumor",
        scanner="3DHistech Pannoramic",
        species="human",
        stains=StainMatrix((0.50, 0.78, 0.37), (0.30, 0.94, 0.05), white=(250.0, 246.0, 240.0)),
        h_scale=0.85,
        e_scale=1.5,
        blur_sigma=0.6,
        noise_sigma=4.0,
        jpeg_quality=75,
        density=1.2,
        lumen_fraction=0.05,
        stroma_fraction=0.25,
        nucleus_scale=0.9,
    ),
    DomainStyle(
        name="melanoma_xr",
        tumor="human melanoma",
        scanner="Hamamatsu XR",
        species="human",
        stains=StainMatrix((0.56, 0.69, 0.46), (0.16, 0.95, 0.27), white=(238.0, 238.0, 236.0)),
        h_scale=1.05,
        e_scale=0.85,
        blur_sigma=0.8,
        noise_sigma=2.5,
        jpeg_quality=80,
        density=0.95,
        nucleus_scale=1.1,
        pigment=1.0,
    ),
    DomainStyle(
        name="lung_gt450",
        tumor="canine lung cancer",
        scanner="Leica GT450",
        species="canine",
        stains=StainMatrix((0.72, 0.67, 0.18), (0.16, 0.98, 0.0), white=(246.0, 250.0, 255.0)),
        h_scale=0.9,
        e_scale=0.9,
        blur_sigma=0.5,
        noise_sigma=2.0,
        jpeg_quality=90,
        density=0.85,
        lumen_fraction=0.3,
        stroma_fraction=0.3,
    ),
    DomainStyle(
        name="sarcoma_cs2",
        tumor="canine soft tissue sarcoma",
        scanner="Aperio CS2",
        species="canine",
        stains=StainMatrix((0.50, 0.72, 0.48), (0.10, 0.95, 0.30), white=(244.0, 238.0, 236.0)),
        h_scale=1.0,
        e_scale=1.15,
        blur_sigma=0.8,
        noise_sigma=2.5,
        jpeg_quality=70,
        density=0.9,
        lumen_fraction=0.04,
        stroma_fraction=0.55,
        elongation=2.0,
    ),
)


def list_domains() -> list[str]:
    """Names of the built-in domain styles, in their fixed order.

    Examples:
        >>> list_domains()[:2]
        ['breast_xr', 'breast_s360']
        >>> len(list_domains()) >= 6
        True
    """
    return [s.name for s in _STYLES]


def get_domain(domain: int | str) -> DomainStyle:
    """The style for a domain index or name.

    Raises:
        InputError: the index is out of range or the name unknown.

    Examples:
        >>> get_domain(0).tumor
        'human breast cancer'
        >>> get_domain("lung_gt450").scanner
        'Leica GT450'
    """
    if isinstance(domain, bool):
        raise InputError(f"domain must be an index or a name, not {domain!r}")
    if isinstance(domain, (int, np.integer)):
        if not 0 <= int(domain) < len(_STYLES):
            raise InputError(f"domain index {domain} out of range 0..{len(_STYLES) - 1}")
        return _STYLES[int(domain)]
    for style in _STYLES:
        if style.name == domain:
            return style
    raise InputError(f"unknown domain {domain!r}; available: {', '.join(list_domains())}")


def select_domains(domains: int | str | list[str] | tuple[str, ...]) -> list[DomainStyle]:
    """Resolve ``domains``: a count K (the first K styles), one name, or a list of names.

    Raises:
        InputError: K < 1, K larger than the number of styles, or an unknown name.

    Examples:
        >>> [s.name for s in select_domains(2)]
        ['breast_xr', 'breast_s360']
    """
    if isinstance(domains, bool):
        raise InputError(f"domains must be a count or names, not {domains!r}")
    if isinstance(domains, (int, np.integer)):
        k = int(domains)
        if k < 1:
            raise InputError(f"--domains must be at least 1, got {k}")
        if k > len(_STYLES):
            raise InputError(f"--domains {k} is more than the {len(_STYLES)} built-in domains")
        return list(_STYLES[:k])
    names = [domains] if isinstance(domains, str) else list(domains)
    if not names:
        raise InputError("no domains given")
    return [get_domain(n) for n in names]


def jitter_style(style: DomainStyle, rng: np.random.Generator) -> DomainStyle:
    """A per-slide variant of ``style``: small random stain-vector and concentration changes.

    Examples:
        >>> s = jitter_style(get_domain(0), np.random.default_rng(1))
        >>> s.name
        'breast_xr'
    """
    h = rotate_vector(style.stains.hematoxylin, rng, 1.5)
    e = rotate_vector(style.stains.eosin, rng, 1.5)
    white = tuple(float(np.clip(w + rng.normal(0, 2.0), 200, 255)) for w in style.stains.white)
    stains = replace(
        style.stains,
        hematoxylin=(float(h[0]), float(h[1]), float(h[2])),
        eosin=(float(e[0]), float(e[1]), float(e[2])),
        white=white,  # type: ignore[arg-type]
    )
    return replace(
        style,
        stains=stains,
        h_scale=style.h_scale * float(np.exp(rng.normal(0, 0.06))),
        e_scale=style.e_scale * float(np.exp(rng.normal(0, 0.08))),
    )
