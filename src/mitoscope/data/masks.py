"""Masks of mitotic figures from point annotations (the patch centre), a disk cache, and overlay sheets.

:func:`point_mask` segments the figure on the haematoxylin channel (colour deconvolution): smoothing, a local
Otsu threshold in a window around the point (made stricter when the window is mostly dark), the connected
component at / nearest the point, nearby dark fragments (anaphase/telophase halves, scattered chromosomes),
morphological clean-up and hole filling, limited to a disk around the point; a disk of about nucleus size is the
fallback when nothing is found. :func:`nuclick_mask` is an adapter to TIAToolbox's NuClick (optional).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import disk, remove_small_objects

from mitoscope.data.stain import hematoxylin_channel
from mitoscope.utils.atomic import atomic_path, write_bytes_atomic
from mitoscope.utils.optional import optional_import

MASK_METHODS = ("hematoxylin", "nuclick", "disk")


def disk_mask(shape: Sequence[int], point: Sequence[float], radius: float) -> np.ndarray:
    """Boolean disk of ``radius`` px centred on ``point`` = ``(x, y)`` in an image of ``shape`` ``(H, W)``.

    Examples:
        >>> int(disk_mask((9, 9), (4, 4), 2).sum())
        13
    """
    h, w = int(shape[0]), int(shape[1])
    yy, xx = np.mgrid[:h, :w]
    return (xx - point[0]) ** 2 + (yy - point[1]) ** 2 <= radius**2


def _window(shape: tuple[int, int], point: tuple[float, float], half: int) -> tuple[slice, slice]:
    h, w = shape
    x, y = round(point[0]), round(point[1])
    return slice(max(0, y - half), min(h, y + half + 1)), slice(max(0, x - half), min(w, x + half + 1))


def point_mask(
    rgb: np.ndarray,
    point: Sequence[float] | None = None,
    *,
    sigma: float = 1.0,
    window: int = 48,
    search_radius: float = 10.0,
    max_radius: float = 28.0,
    merge_radius: float = 24.0,
    fallback_radius: float = 10.0,
    min_area: int = 20,
) -> np.ndarray:
    """Segment the mitotic figure at ``point`` on the haematoxylin channel.

    Sizes are in pixels at 0.25 µm/px (MIDOG / AMi-Br patches); scale them for other resolutions.

    Args:
        rgb: uint8 RGB ``(H, W, 3)``.
        point: ``(x, y)`` of the figure; the patch centre when ``None``.
        sigma: Gaussian smoothing of the haematoxylin channel.
        window: half-side of the window around the point in which the Otsu threshold is computed.
        search_radius: the component must come within this distance of the point.
        max_radius: the mask is limited to a disk of this radius around the point.
        merge_radius: other dark fragments whose nearest pixel lies within this distance are added.
        fallback_radius: radius of the disk returned when nothing is found.
        min_area: smaller objects are dropped.

    Returns:
        Boolean mask ``(H, W)``; never empty.

    Examples:
        >>> img = np.full((64, 64, 3), 235, np.uint8)
        >>> yy, xx = np.mgrid[:64, :64]
        >>> img[(xx - 32) ** 2 + (yy - 32) ** 2 <= 64] = (70, 40, 120)
        >>> m = point_mask(img)
        >>> bool(m[32, 32]), 150 < int(m.sum()) < 260, bool(m[5, 5])
        (True, True, False)
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"point_mask expects an RGB image (H, W, 3), got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    px, py = (w / 2.0 - 0.5, h / 2.0 - 0.5) if point is None else (float(point[0]), float(point[1]))
    if not (0 <= px < w and 0 <= py < h):
        raise ValueError(f"point ({px}, {py}) lies outside the {w}×{h} image")
    fallback = disk_mask((h, w), (px, py), fallback_radius)
    hema = gaussian(hematoxylin_channel(rgb), sigma=sigma)
    valid = rgb.max(axis=-1) > 0  # black padding at slide borders is not tissue
    win = _window((h, w), (px, py), window)
    values = hema[win][valid[win]]
    if values.size < 16 or float(values.max() - values.min()) < 1e-4:
        return fallback
    thresh = float(threshold_otsu(values))
    fg = (hema > thresh) & valid
    if fg[win].mean() > 0.35:
        # the window is mostly dark (dense tumour): split the dark class once more
        upper = values[values > thresh]
        if upper.size > 16 and float(upper.max() - upper.min()) > 1e-4:
            fg = (hema > float(threshold_otsu(upper))) & valid
    fg = ndi.binary_opening(fg, structure=disk(1))
    fg = remove_small_objects(fg, max_size=min_area - 1) if min_area > 1 else fg
    limit = disk_mask((h, w), (px, py), max_radius)
    fg &= limit
    labels, n = ndi.label(fg)
    if n == 0:
        return fallback
    best = _component_distances(labels, n, (px, py))
    seed = int(np.argmin(best))
    if best[seed] > search_radius:
        # nothing at the point: the point may sit between the halves of an anaphase / telophase figure;
        # take the darkest component within twice the search radius instead
        near = [lab for lab in range(1, n + 1) if best[lab] <= 2.5 * search_radius]
        if not near:
            return fallback
        seed = max(near, key=lambda lab: float(hema[labels == lab].mean()))
    keep = labels == seed
    # fragments near the seed component (e.g. the two halves of an anaphase): by distance to the seed mask
    seed_dist = ndi.distance_transform_edt(~keep)
    seed_level = float(hema[keep].mean())
    seed_area = float(keep.sum())
    for lab in range(1, n + 1):
        if lab == seed:
            continue
        comp = labels == lab
        if comp.sum() < max(2 * min_area, 0.25 * seed_area):
            continue  # slivers and specks
        if float(seed_dist[comp].min()) <= merge_radius and float(hema[comp].mean()) >= 0.8 * seed_level:
            keep |= comp
    keep = ndi.binary_closing(keep, structure=disk(2), border_value=0) & limit
    keep = ndi.binary_fill_holes(keep)
    if keep.sum() < min_area:
        return fallback
    return keep


NUCLICK_WEIGHTS_ENV = "MITOSCOPE_NUCLICK_WEIGHTS"
NUCLICK_MODEL = "nuclick_original-pannuke"
NUCLICK_PATCH = 128  # the input side NuClick was trained on


@functools.lru_cache(maxsize=2)
def _nuclick_model(name: str, weights: str | None) -> Any:
    """TIAToolbox's NuClick, loaded once per process (``weights``: a local file, else TIAToolbox fetches them)."""
    arch = optional_import("tiatoolbox.models.architecture", purpose="NuClick masks")
    model, _ = arch.get_pretrained_model(name, pretrained_weights=weights)
    return model.eval()


def nuclick_mask(
    rgb: np.ndarray,
    point: Sequence[float] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    model_name: str = NUCLICK_MODEL,
    threshold: float = 0.33,
) -> np.ndarray:
    """NuClick (TIAToolbox) interactive segmentation of the nucleus at ``point`` (optional dependency).

    A 128 px window centred on the point (zero-padded at the borders), scaled to [0, 1], with the click as the
    inclusion map and an empty exclusion map; the output above ``threshold`` (TIAToolbox's post-processing
    value), the component at the click kept and its holes filled; a nucleus-sized disk when nothing is found.
    ``weights`` (or the ``MITOSCOPE_NUCLICK_WEIGHTS`` environment variable) names a local weights file, for
    machines without internet; otherwise TIAToolbox downloads them on first use. The model is loaded once per
    process. Raises :class:`~mitoscope.utils.optional.MissingDependencyError` without TIAToolbox.

    Examples:
        >>> try:
        ...     nuclick_mask(np.zeros((128, 128, 3), np.uint8))
        ... except ImportError as exc:
        ...     "tiatoolbox" in str(exc)
        True
    """
    torch = optional_import("torch", purpose="NuClick masks")
    weights = weights or os.environ.get(NUCLICK_WEIGHTS_ENV) or None
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: NuClick weights file not found")
    model = _nuclick_model(model_name, None if weights is None else str(weights))
    rgb = np.asarray(rgb)[..., :3]
    h, w = rgb.shape[:2]
    px, py = (w / 2.0 - 0.5, h / 2.0 - 0.5) if point is None else (float(point[0]), float(point[1]))
    size = NUCLICK_PATCH
    top, left = round(py) - size // 2, round(px) - size // 2
    ys, xs = slice(max(0, top), min(h, top + size)), slice(max(0, left), min(w, left + size))
    inner = (slice(ys.start - top, ys.stop - top), slice(xs.start - left, xs.stop - left))
    x = np.zeros((5, size, size), np.float32)
    x[:3][(slice(None), *inner)] = np.moveaxis(rgb[ys, xs], -1, 0) / 255.0
    x[3, size // 2, size // 2] = 1.0  # inclusion map: the click; channel 4, the exclusion map, stays empty
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(x[None])))[0, 0].numpy()
    window = np.zeros((h, w), np.float32)
    window[ys, xs] = prob[inner]
    component = _component_at(window > threshold, (px, py))
    if component is None:
        return disk_mask((h, w), (px, py), 10.0)
    return ndi.binary_fill_holes(component)


def _component_distances(labels: np.ndarray, n: int, point: tuple[float, float]) -> np.ndarray:
    """Distance from ``point`` = ``(x, y)`` to the nearest pixel of each of the ``n`` labelled components
    (index = label; index 0, the background, is infinite).

    Examples:
        >>> labels = np.zeros((5, 5), int); labels[0, 0] = 1; labels[4, 4] = 2
        >>> _component_distances(labels, 2, (4.0, 0.0)).round(2).tolist()
        [inf, 4.0, 4.0]
    """
    yy, xx = np.nonzero(labels)
    best = np.full(n + 1, np.inf)
    np.minimum.at(best, labels[yy, xx], np.hypot(xx - point[0], yy - point[1]))
    return best


def _component_at(mask: np.ndarray, point: tuple[float, float], radius: float = 10.0) -> np.ndarray | None:
    """The connected component of ``mask`` nearest ``point`` = ``(x, y)`` (the one under it, if any), or
    ``None`` when none comes within ``radius`` px.

    Examples:
        >>> m = np.zeros((9, 9), bool); m[1:3, 1:3] = True; m[5:8, 5:8] = True
        >>> int(_component_at(m, (6, 6)).sum()), _component_at(m, (0, 8), radius=1) is None
        (9, True)
    """
    labels, n = ndi.label(mask)
    if n == 0:
        return None
    best = _component_distances(labels, n, point)
    seed = int(np.argmin(best))
    return None if best[seed] > radius else np.asarray(labels == seed)


def compute_mask(
    rgb: np.ndarray, method: str = "hematoxylin", point: Sequence[float] | None = None
) -> np.ndarray:
    """Mask of the figure at ``point`` with ``method`` (``hematoxylin``, ``nuclick`` or ``disk``).

    Examples:
        >>> int(compute_mask(np.zeros((9, 9, 3), np.uint8), "disk").sum()) > 0
        True
    """
    if method == "hematoxylin":
        return point_mask(rgb, point)
    if method == "nuclick":
        return nuclick_mask(rgb, point)
    if method == "disk":
        h, w = np.asarray(rgb).shape[:2]
        p = (w / 2.0 - 0.5, h / 2.0 - 0.5) if point is None else point
        return disk_mask((h, w), p, 10.0)
    raise ValueError(f"unknown mask method {method!r}; choose one of {MASK_METHODS}")


class MaskCache:
    """Masks cached on disk, keyed by image path (+ page), method and point.

    Files are ``<directory>/<hash[:2]>/<hash>.npy`` (bool arrays), written atomically, so parallel epochs and
    workers never read a half-written mask.

    Examples:
        >>> import tempfile
        >>> cache = MaskCache(tempfile.mkdtemp())
        >>> calls = []
        >>> def compute():
        ...     calls.append(1)
        ...     return np.ones((2, 2), bool)
        >>> _ = cache.get_or_compute("a.png", compute, method="disk")
        >>> cache.get_or_compute("a.png", compute, method="disk").sum(), len(calls)
        (np.int64(4), 1)
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def key(
        self,
        image: str | os.PathLike[str],
        *,
        page: int = 0,
        method: str = "hematoxylin",
        point: Sequence[float] | None = None,
    ) -> str:
        """Hash of (absolute image path — or the string itself when it is not a file —, page, method, point)."""
        name = str(image)
        if name and Path(name).exists():
            name = str(Path(name).resolve())
        ident = json.dumps(
            [name, int(page), method, None if point is None else [round(float(v), 2) for v in point]]
        )
        return hashlib.sha1(ident.encode()).hexdigest()

    def path(self, image: str | os.PathLike[str], **kw: Any) -> Path:
        """Where the mask of ``image`` is (or would be) stored."""
        k = self.key(image, **kw)
        return self.directory / k[:2] / f"{k}.npy"

    def get(self, image: str | os.PathLike[str], **kw: Any) -> np.ndarray | None:
        """The cached mask, or ``None``."""
        path = self.path(image, **kw)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False).astype(bool)
        except (OSError, ValueError):  # unreadable file: recompute
            return None

    def put(self, image: str | os.PathLike[str], mask: np.ndarray, **kw: Any) -> Path:
        """Store ``mask`` atomically and return its path."""
        buf = io.BytesIO()
        np.save(buf, np.asarray(mask, dtype=bool), allow_pickle=False)
        return write_bytes_atomic(self.path(image, **kw), buf.getvalue())

    def get_or_compute(
        self, image: str | os.PathLike[str], compute: Callable[[], np.ndarray], **kw: Any
    ) -> np.ndarray:
        """The cached mask, computing and storing it with ``compute()`` on a miss."""
        mask = self.get(image, **kw)
        if mask is None:
            mask = np.asarray(compute(), dtype=bool)
            self.put(image, mask, **kw)
        return mask


class CachedMask:
    """Picklable ``rgb -> mask`` function that caches on disk, keyed by the patch content (for Dataset workers).

    Use it as the ``mask_fn`` of a dataset so that masks are computed once, not every epoch; the key is a hash
    of the pixels (and shape) plus the method, so it needs no path.

    Args:
        directory: cache folder (see :class:`MaskCache`).
        method: ``hematoxylin``, ``nuclick`` or ``disk``.

    Examples:
        >>> import tempfile
        >>> fn = CachedMask(tempfile.mkdtemp())
        >>> img = np.full((32, 32, 3), 230, np.uint8)
        >>> bool((fn(img) == fn(img)).all()), len(list(fn.cache.directory.rglob("*.npy")))
        (True, 1)
    """

    def __init__(self, directory: str | os.PathLike[str], method: str = "hematoxylin") -> None:
        if method not in MASK_METHODS:
            raise ValueError(f"unknown mask method {method!r}; choose one of {MASK_METHODS}")
        self.cache = MaskCache(directory)
        self.method = method

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """The mask of the figure at the centre of ``rgb`` (cached)."""
        arr = np.ascontiguousarray(rgb)
        digest = hashlib.sha1(arr.tobytes() + repr((arr.shape, str(arr.dtype))).encode()).hexdigest()
        return self.cache.get_or_compute(
            f"sha1:{digest}", lambda: compute_mask(arr, self.method), method=self.method
        )


def overlay(
    image: np.ndarray, mask: np.ndarray, *, color: Sequence[int] = (0, 255, 0), alpha: float = 0.25
) -> np.ndarray:
    """``image`` with ``mask`` tinted and its outline drawn (uint8 RGB).

    Examples:
        >>> overlay(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool)).shape
        (4, 4, 3)
    """
    out = np.asarray(image, dtype=np.float32).copy()
    m = np.asarray(mask, dtype=bool)
    col = np.asarray(color, dtype=np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * col
    edge = m & ~ndi.binary_erosion(m)
    out[edge] = col
    return np.clip(out, 0, 255).astype(np.uint8)


def mask_overlay_sheet(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    path: str | os.PathLike[str],
    *,
    ncols: int = 8,
    scale: int = 2,
    titles: Sequence[str] | None = None,
) -> Path:
    """Write a PNG grid of the images with the masks outlined, for looking at masks.

    Each cell shows the image with the mask tinted and outlined (green) and the centre marked (red dot);
    cells are ``scale``× enlarged. Written atomically.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "sheet.png"
        >>> img = np.zeros((8, 8, 3), np.uint8)
        >>> mask_overlay_sheet([img] * 3, [np.ones((8, 8), bool)] * 3, out, ncols=2).is_file()
        True
    """
    from PIL import Image, ImageDraw

    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    if not images:
        raise ValueError("no images to draw")
    cell = max(max(np.asarray(i).shape[0], np.asarray(i).shape[1]) for i in images) * scale
    pad = 2
    ncols = max(1, min(ncols, len(images)))
    nrows = (len(images) + ncols - 1) // ncols
    sheet = Image.new("RGB", (ncols * (cell + pad) + pad, nrows * (cell + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (img, m) in enumerate(zip(images, masks, strict=True)):
        tile = Image.fromarray(overlay(np.asarray(img)[..., :3], m))
        tile = tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)
        x0 = pad + (i % ncols) * (cell + pad)
        y0 = pad + (i // ncols) * (cell + pad)
        sheet.paste(tile, (x0, y0))
        cx, cy = x0 + tile.width // 2, y0 + tile.height // 2
        draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=(255, 0, 0))
        if titles is not None and i < len(titles):
            draw.text((x0 + 3, y0 + 2), str(titles[i]), fill=(255, 255, 0))
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)
