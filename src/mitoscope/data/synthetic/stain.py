"""Beer–Lambert stain model: hematoxylin and eosin concentrations to RGB.

Every synthetic image is rendered in optical density (OD) space:
``OD = c_H * v_H + c_E * v_E (+ c_R * v_R + ...)`` and ``RGB = white * exp(-OD)``, so a change of stain
vectors or concentrations shifts colours the way a different lab or scanner does. Absorbers other than
H&E (red blood cells, tissue-marking ink) enter as extra (concentration, OD vector) pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Ruifrok & Johnston OD vectors (R, G, B absorbance per unit concentration), normalised.
HEMATOXYLIN: tuple[float, float, float] = (0.650, 0.704, 0.286)
EOSIN: tuple[float, float, float] = (0.072, 0.990, 0.105)
#: A brown residual (melanin / pigment) used for granules.
PIGMENT: tuple[float, float, float] = (0.268, 0.570, 0.776)
#: OD vectors of tissue-marking inks (not stains: near-neutral black, navy blue, green).
INKS: dict[str, tuple[float, float, float]] = {
    "black": (0.60, 0.58, 0.55),
    "blue": (0.86, 0.48, 0.18),
    "green": (0.74, 0.33, 0.58),
}


def unit(vector: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Return ``vector`` scaled to unit length as float32.

    Examples:
        >>> float(np.linalg.norm(unit((3.0, 4.0, 0.0))))
        1.0
    """
    v = np.asarray(vector, dtype=np.float32)
    n = float(np.linalg.norm(v))
    if n <= 0:
        raise ValueError("stain vector must be non-zero")
    return v / n


@dataclass(frozen=True)
class StainMatrix:
    """Optical density vectors of the stains and the white point of the light source.

    Attributes:
        hematoxylin: OD vector of hematoxylin (unit length).
        eosin: OD vector of eosin (unit length).
        residual: OD vector of a third absorber (pigment), unit length.
        white: RGB intensity of the unstained background (0–255).
    """

    hematoxylin: tuple[float, float, float] = HEMATOXYLIN
    eosin: tuple[float, float, float] = EOSIN
    residual: tuple[float, float, float] = PIGMENT
    white: tuple[float, float, float] = (250.0, 250.0, 250.0)

    def vectors(self) -> np.ndarray:
        """The 3×3 matrix of unit OD vectors, rows H, E, residual."""
        return np.stack([unit(self.hematoxylin), unit(self.eosin), unit(self.residual)])

    def blood(self) -> np.ndarray:
        """OD vector of red blood cells: eosin that also absorbs blue (haemoglobin), so red, not pink.

        Examples:
            >>> v = StainMatrix().blood()
            >>> bool(v[2] > 0.4 and v[0] < 0.15)
            True
        """
        return unit(unit(self.eosin) + np.array([0.02, 0.0, 0.55], np.float32))


def od_to_rgb(
    conc_h: np.ndarray,
    conc_e: np.ndarray,
    stains: StainMatrix,
    conc_r: np.ndarray | None = None,
    absorbers: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> np.ndarray:
    """Render concentration maps to a float32 RGB image in [0, 255] (Beer–Lambert).

    Args:
        conc_h: HxW hematoxylin concentration (OD units along the H vector).
        conc_e: HxW eosin concentration.
        stains: stain vectors and white point.
        conc_r: optional HxW residual (pigment) concentration.
        absorbers: further (HxW concentration, 3-vector OD) pairs (red blood cells, ink); only
            their non-zero tiles are visited.

    Returns:
        HxWx3 float32 image (not yet clipped or quantised).

    Examples:
        >>> h = np.zeros((2, 2), np.float32); e = np.ones((2, 2), np.float32)
        >>> rgb = od_to_rgb(h, e, StainMatrix())
        >>> bool(rgb[0, 0, 0] > rgb[0, 0, 1])  # eosin absorbs green: pink
        True
    """
    if conc_h.shape != conc_e.shape:
        raise ValueError(f"concentration maps differ in shape: {conc_h.shape} vs {conc_e.shape}")
    vec = stains.vectors()
    tiles = [(conc, vector, occupied_tiles(conc)) for conc, vector in absorbers]
    out = np.empty((*conc_h.shape, 3), dtype=np.float32)
    od = np.empty(conc_h.shape, dtype=np.float32)
    tmp = np.empty(conc_h.shape, dtype=np.float32)
    for c in range(3):
        np.multiply(conc_h, -vec[0, c], out=od)
        np.multiply(conc_e, -vec[1, c], out=tmp)
        od += tmp
        if conc_r is not None:
            np.multiply(conc_r, -vec[2, c], out=tmp)
            od += tmp
        for conc, vector, boxes in tiles:
            for box in boxes:
                od[box] -= conc[box] * np.float32(vector[c])
        np.exp(od, out=od)
        od *= np.float32(stains.white[c])
        out[..., c] = od
    return out


def occupied_tiles(a: np.ndarray, tile: int = 256, pad: int = 0) -> list[tuple[slice, slice]]:
    """Slices of the ``tile``-square tiles of ``a`` whose ``pad``-grown window holds a non-zero value.

    Sparse maps (red cells, ink specks) are processed tile by tile instead of over the whole canvas.

    Examples:
        >>> a = np.zeros((600, 600), np.float32); a[300, 10] = 1
        >>> occupied_tiles(a)
        [(slice(256, 512, None), slice(0, 256, None))]
    """
    h, w = a.shape
    out = []
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            if a[max(y - pad, 0) : y + tile + pad, max(x - pad, 0) : x + tile + pad].any():
                out.append((slice(y, min(y + tile, h)), slice(x, min(x + tile, w))))
    return out


def rotate_vector(vector: tuple[float, float, float], rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Perturb a stain vector by a random rotation of about ``degrees`` (for per-slide variation).

    Examples:
        >>> v = rotate_vector(HEMATOXYLIN, np.random.default_rng(0), 3.0)
        >>> bool(np.all(v > 0))
        True
    """
    v = unit(vector)
    noise = rng.normal(0.0, np.deg2rad(degrees), size=3).astype(np.float32)
    w = np.abs(v + noise)
    return unit(w)
