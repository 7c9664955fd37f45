"""Small stain-concentration sprites and how they are stamped into a canvas.

A sprite is a few dozen pixels square: hematoxylin, eosin and pigment concentration maps plus an
``alpha`` that says how much of the background it replaces. Rendering a region is stamping many
sprites into full-size concentration maps, which keeps everything vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sprite:
    """Concentration maps of one object, centred in a square array.

    Attributes:
        h: hematoxylin concentration (float32, SxS).
        e: eosin concentration (float32, SxS).
        alpha: 0–1 coverage; where 1 the sprite replaces the background (``over`` stamping).
        r: optional pigment concentration.
    """

    h: np.ndarray
    e: np.ndarray
    alpha: np.ndarray
    r: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Side length in pixels."""
        return int(self.h.shape[0])


def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of a size×size sprite, origin at its centre.

    Examples:
        >>> x, y = coords(3)
        >>> x.tolist()[0]
        [-1.0, 0.0, 1.0]
    """
    c = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float32) - c
    return np.broadcast_to(ax[None, :], (size, size)), np.broadcast_to(ax[:, None], (size, size))


def smoothstep(edge_distance: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Soft 0→1 ramp of a signed distance (positive inside) over ``width`` pixels.

    Examples:
        >>> smoothstep(np.array([-5.0, 0.0, 5.0])).round(2).tolist()
        [0.0, 0.5, 1.0]
    """
    t = np.clip(0.5 + edge_distance / (2.0 * width), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def blob_radius(
    x: np.ndarray,
    y: np.ndarray,
    rx: float,
    ry: float,
    angle: float,
    harmonics: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised radius of a rotated, wobbly ellipse: <1 inside.

    ``harmonics`` is an (n, 2) array of (amplitude, phase) of boundary wobble for orders 2..n+1.

    Examples:
        >>> x, y = coords(5)
        >>> float(blob_radius(x, y, 2.0, 2.0, 0.0)[2, 2])
        0.0
    """
    ca, sa = np.cos(angle), np.sin(angle)
    u = x * ca + y * sa
    v = -x * sa + y * ca
    rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    if harmonics is not None and len(harmonics):
        # cos(k*theta + phase) through the recurrence of (cos, sin)(k*theta): no arctan2
        r = np.sqrt(u * u + v * v) + 1e-6
        c1, s1 = u / r, v / r
        ck, sk = c1, s1
        wob = np.ones_like(rho)
        for amp, phase in harmonics:
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            wob += amp * (ck * np.cos(phase) - sk * np.sin(phase))
        rho = rho / wob
    return rho.astype(np.float32)


def ellipse(
    size: int,
    rx: float,
    ry: float,
    angle: float = 0.0,
    *,
    harmonics: np.ndarray | None = None,
    soft: float = 1.2,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Soft mask of a (wobbly) ellipse centred in a size×size sprite.

    Examples:
        >>> m = ellipse(21, 6, 6)
        >>> float(m[10, 10]), float(m[0, 0])
        (1.0, 0.0)
    """
    x, y = coords(size)
    rho = blob_radius(x - offset[0], y - offset[1], rx, ry, angle, harmonics)
    r_mean = 0.5 * (rx + ry)
    return smoothstep((1.0 - rho) * r_mean, soft)


def segments_field(size: int, segs: np.ndarray, soft: float = 0.9) -> np.ndarray:
    """Soft union of thick line segments (chromosomes, strands) in a size×size sprite.

    Args:
        size: sprite side.
        segs: (n, 5) array of ``x0, y0, x1, y1, radius`` relative to the sprite centre.
        soft: edge softness in pixels.

    Returns:
        float32 coverage in [0, 1].

    Examples:
        >>> f = segments_field(21, np.array([[-5, 0, 5, 0, 2.0]]))
        >>> float(f[10, 10]) > 0.99, float(f[0, 0]) < 0.01
        (True, True)
    """
    out = np.zeros((size, size), np.float32)
    if len(segs) == 0:
        return out
    segs = np.asarray(segs, dtype=np.float32)
    c = (size - 1) / 2.0
    pad = segs[:, 4].max() + soft + 1.0
    lo = np.floor(np.minimum(segs[:, [0, 1]], segs[:, [2, 3]]).min(0) - pad + c).astype(int)
    hi = np.ceil(np.maximum(segs[:, [0, 1]], segs[:, [2, 3]]).max(0) + pad + c).astype(int) + 1
    x_lo, y_lo = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x_hi, y_hi = min(int(hi[0]), size), min(int(hi[1]), size)
    if x_lo >= x_hi or y_lo >= y_hi:
        return out
    xs = np.arange(x_lo, x_hi, dtype=np.float32) - c
    ys = np.arange(y_lo, y_hi, dtype=np.float32) - c
    px = np.broadcast_to(xs[None, :], (len(ys), len(xs))).reshape(-1)[:, None]
    py = np.broadcast_to(ys[:, None], (len(ys), len(xs))).reshape(-1)[:, None]
    x0, y0, x1, y1, rad = (segs[:, i][None, :] for i in range(5))
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy + 1e-6
    t = np.clip(((px - x0) * dx + (py - y0) * dy) / ll, 0.0, 1.0)
    d = np.sqrt((px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2)
    cover = smoothstep(rad - d, soft)
    union = 1.0 - np.prod(1.0 - cover, axis=1)
    out[y_lo:y_hi, x_lo:x_hi] = union.reshape(len(ys), len(xs))
    return out


def discs_field(size: int, centres: np.ndarray, radii: np.ndarray, soft: float = 0.8) -> np.ndarray:
    """Soft union of discs (fragments, granules) in a size×size sprite.

    Examples:
        >>> f = discs_field(15, np.array([[0.0, 0.0]]), np.array([3.0]))
        >>> float(f[7, 7])
        1.0
    """
    c = np.asarray(centres, dtype=np.float32).reshape(-1, 2)
    segs = np.concatenate([c, c, np.asarray(radii, np.float32).reshape(-1, 1)], axis=1)
    return segments_field(size, segs, soft)


def texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise of a sprite (chromatin / cytoplasm grain).

    Examples:
        >>> t = texture(np.random.default_rng(0), 32, 1.5)
        >>> abs(float(t.mean())) < 1e-3
        True
    """
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    n -= n.mean()
    std = float(n.std())
    return n / std if std > 0 else n


def stamp(
    canvas_h: np.ndarray,
    canvas_e: np.ndarray,
    sprite: Sprite,
    cx: float,
    cy: float,
    *,
    mode: str = "over",
    canvas_r: np.ndarray | None = None,
) -> None:
    """Stamp ``sprite`` centred at (cx, cy) into the canvases, clipped at the borders (in place).

    ``mode="over"`` replaces the background by ``alpha`` (figures, cells over tissue);
    ``mode="max"`` keeps the larger concentration (nuclei packed side by side).
    """
    s = sprite.size
    x0 = round(cx) - s // 2
    y0 = round(cy) - s // 2
    hh, ww = canvas_h.shape
    ax0, ay0 = max(x0, 0), max(y0, 0)
    ax1, ay1 = min(x0 + s, ww), min(y0 + s, hh)
    if ax0 >= ax1 or ay0 >= ay1:
        return
    sl = (slice(ay0, ay1), slice(ax0, ax1))
    ss = (slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))
    if mode == "max":
        np.maximum(canvas_h[sl], sprite.h[ss], out=canvas_h[sl])
        np.maximum(canvas_e[sl], sprite.e[ss], out=canvas_e[sl])
        if canvas_r is not None and sprite.r is not None:
            np.maximum(canvas_r[sl], sprite.r[ss], out=canvas_r[sl])
        return
    if mode != "over":
        raise ValueError(f"unknown stamp mode {mode!r}")
    a = sprite.alpha[ss]
    keep = 1.0 - a
    canvas_h[sl] = canvas_h[sl] * keep + sprite.h[ss]
    canvas_e[sl] = canvas_e[sl] * keep + sprite.e[ss]
    if canvas_r is not None:
        canvas_r[sl] = canvas_r[sl] * keep + (sprite.r[ss] if sprite.r is not None else 0.0)
