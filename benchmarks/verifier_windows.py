"""The verifier's real training windows (benchmarks/README.md, rule 29): each real figure patch gives its figure
and the non-figure nuclei around it, every window centred on a nucleus.

A real patch (128 px at 0.25 µm/px) is centred on a mitotic figure; the other nuclei in it are real non-figure
tissue of the patch's tumour, stroma and inflammation. Nuclei are the maxima of the smoothed haematoxylin channel;
those far enough from the centre become negatives, the darkest first (lymphocytes, pyknotic and hyperchromatic
nuclei: the figure's look-alikes). A window centred on such a nucleus reaches past the patch, so its missing
strips are mirrored from inside; each figure window gets mirrored strips of the same sides and widths as a
negative drawn at random, so a mirrored edge says nothing about the class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

WINDOW = 64  # px at 0.25 µm/px (16 µm); data.size of make_models.NUCLEI_VERIFIER_OVERRIDES
FIGURE_SHIFT = 6  # px: each figure also as a copy shifted by up to this much, as the detector places them
NUCLEUS_SIGMA = 3.0  # px: smoothing of the haematoxylin channel before its maxima are taken
NUCLEUS_SPACING = 14  # px (3.5 µm): nuclei at least this far apart
FIGURE_CLEARANCE = 36  # px (9 µm): nuclei nearer the patch centre may be part of the figure
NEGATIVES_PER_PATCH = 3
MAX_MIRROR = 16  # px: a nucleus nearer the patch edge than this is mirrored into a double and not used

Margins = tuple[int, int, int, int]  # top, bottom, left, right strips mirrored from inside


def nuclei(image: np.ndarray) -> pd.DataFrame:
    """Nucleus centres of an RGB patch: ``x, y, darkness`` (smoothed haematoxylin at the centre), darkest first.

    Examples:
        >>> img = np.full((64, 64, 3), 235, np.uint8); img[28:36, 10:18] = (60, 40, 120)
        >>> nuclei(img)[["x", "y"]].round().astype(int).values.tolist()
        [[14, 31]]
    """
    from scipy.ndimage import gaussian_filter
    from skimage.color import rgb2hed
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu

    h = gaussian_filter(rgb2hed(image[..., :3])[..., 0], NUCLEUS_SIGMA)
    level = threshold_otsu(h) if np.ptp(h) > 0 else np.inf
    peaks = peak_local_max(h, min_distance=NUCLEUS_SPACING, threshold_abs=level, exclude_border=4)
    found = pd.DataFrame({"x": peaks[:, 1].astype(float), "y": peaks[:, 0].astype(float)})
    found["darkness"] = h[peaks[:, 0], peaks[:, 1]] if len(peaks) else np.zeros(0)
    return found.sort_values("darkness", ascending=False, ignore_index=True)


def window(image: np.ndarray, cy: int, cx: int) -> tuple[np.ndarray, Margins]:
    """The :data:`WINDOW` px window centred on ``(cy, cx)``, parts past the image mirrored from inside."""
    half = WINDOW // 2
    h, w = image.shape[:2]
    top, left = cy - half, cx - half
    margins = (max(0, -top), max(0, top + WINDOW - h), max(0, -left), max(0, left + WINDOW - w))
    inside = image[max(0, top) : min(h, top + WINDOW), max(0, left) : min(w, left + WINDOW)]
    return mirror_pad(inside, margins), margins


def mirror_pad(inside: np.ndarray, margins: Margins) -> np.ndarray:
    """``inside`` padded by mirroring (numpy ``reflect``) to :data:`WINDOW` px on each side."""
    t, b, left, r = margins
    return np.pad(inside, ((t, b), (left, r), (0, 0)), mode="reflect")


def mirror_margins(crop: np.ndarray, margins: Margins) -> np.ndarray:
    """Replace the ``margins`` strips of a full window by mirrors of its inside, as :func:`window` does past an
    image's edge."""
    t, b, left, r = margins
    return mirror_pad(crop[t : WINDOW - b, left : WINDOW - r], margins)


def patch_windows(
    image: np.ndarray, rng: np.random.Generator, limit: int | None = NEGATIVES_PER_PATCH
) -> tuple[list[np.ndarray], list[np.ndarray], list[Margins]]:
    """A real figure patch → (the figure's window and a shifted copy, unmirrored; the windows of its ``limit``
    (all if None) darkest nuclei at least :data:`FIGURE_CLEARANCE` px from the centre and mirrored
    by at most :data:`MAX_MIRROR` px; their margins)."""
    h, w = image.shape[:2]
    if min(h, w) < WINDOW + 2 * FIGURE_SHIFT:
        raise ValueError(f"patch of {w}×{h} px is smaller than a verifier window ({WINDOW} px) and its shift")
    cy, cx = h // 2, w // 2
    dy, dx = (int(v) for v in rng.integers(-FIGURE_SHIFT, FIGURE_SHIFT + 1, size=2))
    figures = [window(image, cy, cx)[0], window(image, cy + dy, cx + dx)[0]]
    found = nuclei(image)
    half = WINDOW // 2
    inner = found["x"].between(half - MAX_MIRROR, w - half + MAX_MIRROR - 1) & found["y"].between(
        half - MAX_MIRROR, h - half + MAX_MIRROR - 1
    )
    clear = np.hypot(found["x"] - cx, found["y"] - cy) >= FIGURE_CLEARANCE
    away = found[inner & clear]
    away = away if limit is None else away.head(limit)
    negatives = [window(image, int(y), int(x)) for x, y in away[["x", "y"]].to_numpy()]
    return figures, [n for n, _ in negatives], [m for _, m in negatives]


def real_windows(catalog: pd.DataFrame, out: Path, seed: int = 0) -> pd.DataFrame:
    """Write the windows of the real figure patches in ``catalog`` (``image, group, split``) under ``out`` and
    return their catalog (with ``split``; figures ``mitotic figure``, nuclei ``hard
    negative``). Cached in ``out/windows.csv``."""
    from PIL import Image

    from mitoscope.io.catalog import make_catalog

    index = out / "windows.csv"
    if index.is_file():
        return pd.read_csv(index)
    rng = np.random.default_rng(seed)
    per_patch = [
        (row, *patch_windows(np.asarray(Image.open(row.image).convert("RGB")), rng))
        for row in catalog.itertuples(index=False)
    ]
    pool = [m for *_, margins in per_patch for m in margins]
    rows = []
    for i, (row, figures, negatives, _) in enumerate(per_patch):
        figures = [mirror_margins(f, pool[int(rng.integers(len(pool)))]) for f in figures]
        for kind, label, crops in (("f", "mitotic figure", figures), ("n", "hard negative", negatives)):
            for k, crop in enumerate(crops):
                path = out / row.split / f"{i:05d}_{kind}{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(crop)).save(path)
                rows.append({"image": str(path), "label": label, "group": str(row.group), "split": row.split})
    frame = make_catalog([{k: v for k, v in r.items() if k != "split"} for r in rows])
    frame["split"] = [r["split"] for r in rows]
    frame.to_csv(index, index=False)
    return frame


def centre_window(source: Path, target: Path) -> Path:
    """Write the centre :data:`WINDOW` px of the image ``source`` to ``target`` (kept if there) and return it."""
    from PIL import Image

    from mitoscope.data.transforms import center_crop

    if not target.is_file():
        crop = center_crop(np.asarray(Image.open(source).convert("RGB")), WINDOW)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop)).save(target)
    return target
