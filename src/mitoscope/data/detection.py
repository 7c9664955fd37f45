"""Detection training data: region folders, a crop sampler, a crop Dataset and box-aware transforms.

The flow follows the rest of the package: a **catalog** of points (``slide``, ``x``, ``y``, ``label``
``mitotic figure``/``hard negative``, ``tumor``) → :class:`CropSampler` emits plain :class:`CropRecord`\\ s
(slide path, level-0 top-left, output size, mpp) centred on mitoses (with a random shift), on hard negatives
and at random, in configurable proportions → :class:`DetectionCropDataset` reads each crop with
``Slide.read_rect`` at the model's mpp and returns ``(image tensor, target)``. Transforms work on the figure
*points* (so flips and crops move them exactly); boxes of ``box_um`` µm around each mitosis are made at the end.
Hard negatives are never boxes: they only set the crop's ``foreground`` flag.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mitoscope.io.midogpp import read_midogpp_json
from mitoscope.io.slide_base import Slide
from mitoscope.io.slides import open_slide
from mitoscope.utils.errors import InputError

KINDS = ("mitosis", "hard negative", "random")
MITOSIS = "mitotic figure"
HARD_NEGATIVE = "hard negative"

SlideOpener = Callable[[str], Slide]


@dataclasses.dataclass(frozen=True)
class CropRecord:
    """One training crop: read ``size`` × ``size`` px at ``mpp`` from ``slide`` with level-0 top-left (x, y)."""

    slide: str
    x: int
    y: int
    size: int
    mpp: float
    kind: str
    tumor: int = -1


@dataclasses.dataclass(frozen=True)
class SlideInfo:
    """Level-0 size and mpp of a region or slide."""

    width: int
    height: int
    mpp: float


def default_opener(path: str) -> Slide:
    """Open ``path`` with :func:`mitoscope.io.slides.open_slide`."""
    return open_slide(path)


# --------------------------------------------------------------------------------------------- region folders


def find_annotation_json(folder: str | os.PathLike[str]) -> Path:
    """The MIDOG++-format JSON in ``folder`` (the one with ``images`` and ``annotations``).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "labels.json").write_text('{"images": [], "annotations": []}')
        >>> find_annotation_json(d).name
        'labels.json'
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("data folder not found", path=folder)
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(head, dict) and "images" in head and "annotations" in head:
            found.append(path)
    if not found:
        raise InputError(
            "no MIDOG++-format JSON (with 'images' and 'annotations') in this folder", path=folder
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(f"several annotation JSON files ({names}); keep one per folder", path=folder)
    return found[0]


def read_region_folder(folder: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, SlideInfo]]:
    """Read a folder of regions + one MIDOG++ JSON into ``(catalog, slide infos)``.

    The catalog's ``slide`` column holds absolute paths; images listed in the JSON without annotations are
    still in the slide infos (they are useful background). Sizes come from the JSON when present, mpp from the
    image files.

    Examples:
        >>> import tempfile, pathlib
        >>> from mitoscope.io.tiff_writer import write_tiled_tiff
        >>> from mitoscope.io.midogpp import write_midogpp_json
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_tiled_tiff(d / "r.tiff", np.zeros((256, 256, 3), np.uint8), mpp=0.25)
        >>> _ = write_midogpp_json(d / "a.json", [{"file_name": "r.tiff", "id": 1, "width": 256,
        ...     "height": 256}], [{"x": 100, "y": 100, "label": "mitotic figure", "image_id": 1}])
        >>> cat, infos = read_region_folder(d)
        >>> len(cat), list(infos.values())[0].width
        (1, 256)
    """
    folder = Path(folder).resolve()
    json_path = find_annotation_json(folder)
    catalog = read_midogpp_json(json_path)
    images = dict(catalog.attrs.get("images", {}))
    infos: dict[str, SlideInfo] = {}
    tumors: dict[str, str] = {}
    for name, meta in images.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"image {name!r} listed in {json_path.name} is missing", path=path)
        with default_opener(str(path)) as slide:
            width, height = slide.dimensions
            infos[str(path)] = SlideInfo(int(width), int(height), float(slide.mpp))
        tumors[str(path)] = str(meta.get("tumor") or "")
    if not catalog.empty:
        catalog["slide"] = [str(folder / s) for s in catalog["slide"]]
        catalog["group"] = catalog["slide"]
    catalog.attrs["tumors"] = tumors
    catalog.attrs["images"] = {str(folder / k): v for k, v in images.items()}
    return catalog, infos


# --------------------------------------------------------------------------------------------- the sampler


def points_by_slide(catalog: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per slide, an ``(N, 3)`` float array ``x, y, is_mitosis`` of the labelled figures in ``catalog``."""
    out: dict[str, np.ndarray] = {}
    if catalog.empty:
        return out
    keep = catalog[catalog["label"].isin([MITOSIS, HARD_NEGATIVE])]
    for slide, rows in keep.groupby("slide", sort=False):
        out[str(slide)] = np.stack(
            [
                rows["x"].to_numpy(float),
                rows["y"].to_numpy(float),
                (rows["label"] == MITOSIS).to_numpy(float),
            ],
            axis=1,
        )
    return out


class CropSampler:
    """Draw training crops centred on mitoses, on hard negatives and at random.

    Args:
        catalog: points with ``slide``, ``x``, ``y`` (level 0), ``label``; ``tumor`` names are mapped to indices
            with ``tumor_index``.
        slides: every slide that may be sampled (``slide path → SlideInfo``); random crops are drawn from these.
        size: crop side in output pixels.
        mpp: output microns per pixel.
        proportions: fractions of ``mitosis``, ``hard negative`` and ``random`` crops (normalised); a kind with
            no candidates gives its share to ``random``.
        max_shift: centred crops put the figure anywhere within ``max_shift × size / 2`` px of the crop centre.
        tumor_index: tumour name → class index (unknown names get -1).
        slide_tumors: tumour name of each slide (for random crops and slides without points).

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> cat = make_catalog([{"slide": "s", "x": 500, "y": 500, "label": "mitotic figure"}])
        >>> sampler = CropSampler(cat, {"s": SlideInfo(1000, 1000, 0.25)}, size=128, mpp=0.25)
        >>> recs = sampler.sample(10, seed=0)
        >>> len(recs), recs[0].size
        (10, 128)
    """

    def __init__(
        self,
        catalog: pd.DataFrame,
        slides: Mapping[str, SlideInfo],
        *,
        size: int,
        mpp: float,
        proportions: Sequence[float] = (0.5, 0.25, 0.25),
        max_shift: float = 0.8,
        tumor_index: Mapping[str, int] | None = None,
        slide_tumors: Mapping[str, str] | None = None,
    ) -> None:
        if len(proportions) != 3 or min(proportions) < 0 or sum(proportions) <= 0:
            raise ValueError(
                f"proportions must be 3 non-negative numbers with a positive sum, got {proportions}"
            )
        if not slides:
            raise ValueError("no slides to sample crops from")
        self.slides = dict(slides)
        self.size = int(size)
        self.mpp = float(mpp)
        self.max_shift = float(max_shift)
        self.tumor_index = dict(tumor_index or {})
        self.slide_tumors = dict(slide_tumors or {})
        known = catalog[catalog["slide"].isin(list(self.slides))] if not catalog.empty else catalog
        missing = sorted(set(catalog["slide"]) - set(self.slides)) if not catalog.empty else []
        if missing:
            raise ValueError(f"catalog points on slides that are not in `slides`: {missing[:3]}")
        self._points = {
            kind: known[known["label"] == label][["slide", "x", "y", "tumor"]].reset_index(drop=True)
            if not known.empty
            else pd.DataFrame(columns=["slide", "x", "y", "tumor"])
            for kind, label in (("mitosis", MITOSIS), ("hard negative", HARD_NEGATIVE))
        }
        total = float(sum(proportions))
        self.proportions = dict(zip(KINDS, (p / total for p in proportions), strict=True))

    def counts(self, n: int) -> dict[str, int]:
        """How many crops of each kind ``sample(n)`` draws (rounded; the remainder goes to ``random``)."""
        props = dict(self.proportions)
        for kind in ("mitosis", "hard negative"):
            if self._points[kind].empty:
                props["random"] += props[kind]
                props[kind] = 0.0
        counts = {k: round(props[k] * n) for k in ("mitosis", "hard negative")}
        counts["random"] = n - sum(counts.values())
        return counts

    def _tumor(self, slide: str, name: Any = "") -> int:
        name = str(name or self.slide_tumors.get(slide, ""))
        return int(self.tumor_index.get(name, -1))

    def _record(self, slide: str, cx: float, cy: float, kind: str, tumor: int) -> CropRecord:
        info = self.slides[slide]
        scale = self.mpp / info.mpp  # level-0 px per output px
        extent = self.size * scale
        x = cx - extent / 2.0
        y = cy - extent / 2.0
        # keep the crop inside the slide where the slide is large enough
        x = min(max(x, 0.0), max(info.width - extent, 0.0))
        y = min(max(y, 0.0), max(info.height - extent, 0.0))
        return CropRecord(slide, round(x), round(y), self.size, self.mpp, kind, tumor)

    def sample(self, n: int, *, seed: int = 0) -> list[CropRecord]:
        """Draw ``n`` crop records (deterministic for a ``seed``), shuffled."""
        rng = np.random.default_rng(seed)
        records: list[CropRecord] = []
        counts = self.counts(n)
        for kind in ("mitosis", "hard negative"):
            points = self._points[kind]
            if counts[kind] == 0:
                continue
            picks = rng.integers(0, len(points), counts[kind])
            half = self.max_shift * self.size / 2.0
            for i in picks:
                row = points.iloc[int(i)]
                slide = str(row["slide"])
                scale = self.mpp / self.slides[slide].mpp
                dx, dy = rng.uniform(-half, half, 2) * scale
                records.append(
                    self._record(
                        slide,
                        float(row["x"]) + dx,
                        float(row["y"]) + dy,
                        kind,
                        self._tumor(slide, row["tumor"]),
                    )
                )
        names = list(self.slides)
        areas = np.array([self.slides[s].width * self.slides[s].height for s in names], float)
        for _ in range(counts["random"]):
            slide = names[int(rng.choice(len(names), p=areas / areas.sum()))]
            info = self.slides[slide]
            cx, cy = rng.uniform(0, info.width), rng.uniform(0, info.height)
            records.append(self._record(slide, cx, cy, "random", self._tumor(slide)))
        order = rng.permutation(len(records))
        return [records[i] for i in order]


# --------------------------------------------------------------------------------------------- transforms


def points_to_target(
    points: np.ndarray, *, width: int, height: int, box_px: float, tumor: int = -1
) -> dict[str, torch.Tensor]:
    """Target dict of a crop from its figure points (``x, y, is_mitosis`` in crop pixels).

    Boxes are ``box_px`` squares around each mitosis, clipped to the image; ``foreground`` is 1 when any figure
    (mitosis or hard negative) lies inside the crop.

    Examples:
        >>> t = points_to_target(np.array([[10.0, 30.0, 1.0], [50.0, 50.0, 0.0]]), width=64, height=64, box_px=20)
        >>> t["boxes"].tolist(), t["labels"].tolist(), float(t["foreground"])
        ([[0.0, 20.0, 20.0, 40.0]], [1], 1.0)
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
    pts = pts[inside]
    mit = pts[pts[:, 2] > 0.5]
    half = box_px / 2.0
    boxes = np.stack([mit[:, 0] - half, mit[:, 1] - half, mit[:, 0] + half, mit[:, 1] + half], axis=1)
    boxes = np.clip(boxes, 0, [width, height, width, height]) if len(boxes) else boxes.reshape(0, 4)
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "tumor": torch.tensor(int(tumor), dtype=torch.int64),
        "foreground": torch.tensor(float(len(pts) > 0)),
    }


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror xyxy ``boxes`` left-right in an image ``width`` px wide."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def vflip_boxes(boxes: torch.Tensor, height: int) -> torch.Tensor:
    """Mirror xyxy ``boxes`` top-bottom in an image ``height`` px high."""
    out = boxes.clone()
    out[:, 1] = height - boxes[:, 3]
    out[:, 3] = height - boxes[:, 1]
    return out


def hflip(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an (H, W, C) image and its points (continuous pixel coordinates) left-right."""
    pts = points.copy()
    pts[:, 0] = image.shape[1] - pts[:, 0]
    return image[:, ::-1], pts


def vflip(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror an (H, W, C) image and its points top-bottom."""
    pts = points.copy()
    pts[:, 1] = image.shape[0] - pts[:, 1]
    return image[::-1], pts


def crop(image: np.ndarray, points: np.ndarray, x: int, y: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``size`` × ``size`` px at top-left (x, y); points move with it (those outside are kept, then dropped
    by :func:`points_to_target`)."""
    pts = points.copy()
    pts[:, 0] -= x
    pts[:, 1] -= y
    return image[y : y + size, x : x + size], pts


class DetectionTransform:
    """Training augmentation: random crop to ``size``, flips, 90° rotations and colour jitter.

    Args:
        size: output side (the input may be larger: a random ``size`` window is cut; equal: no crop).
        train: augment (otherwise centre crop only).
        jitter: ``(brightness, contrast, saturation, hue)`` of the colour jitter (Zhang et al.: 0.35, 0.2, 0.1, 0.1).
        flip: random horizontal and vertical flips.

    Examples:
        >>> tf = DetectionTransform(32, train=True, seed=0)
        >>> img, pts = tf(np.zeros((40, 40, 3), np.uint8), np.array([[20.0, 20.0, 1.0]]))
        >>> img.shape, pts.shape
        ((32, 32, 3), (1, 3))
    """

    def __init__(
        self,
        size: int,
        *,
        train: bool = True,
        jitter: Sequence[float] | None = (0.35, 0.2, 0.1, 0.1),
        flip: bool = True,
        seed: int | None = None,
    ) -> None:
        self.size = int(size)
        self.train = train
        self.flip = flip
        self.jitter = tuple(jitter) if jitter else None
        self._rng = np.random.default_rng(seed)
        self._color: Any = None

    def _colour(self, image: np.ndarray) -> np.ndarray:
        if self._color is None:
            from torchvision.transforms import v2

            b, c, s, h = self.jitter  # type: ignore[misc]
            self._color = v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        return self._color(tensor).permute(1, 2, 0).numpy()

    def _worker_rng(self) -> np.random.Generator:
        """A distinct random stream in each DataLoader worker (copies would otherwise repeat each other)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and getattr(self, "_worker_id", None) != info.id:
            self._worker_id = info.id
            self._rng = np.random.default_rng(info.seed)
        return self._rng

    def __call__(self, image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._worker_rng()
        h, w = image.shape[:2]
        if h < self.size or w < self.size:
            raise ValueError(f"image {w}×{h} is smaller than the crop size {self.size}")
        if self.train:
            x = int(self._rng.integers(0, w - self.size + 1))
            y = int(self._rng.integers(0, h - self.size + 1))
        else:
            x, y = (w - self.size) // 2, (h - self.size) // 2
        image, points = crop(image, points, x, y, self.size)
        if self.train and self.flip:
            if self._rng.random() < 0.5:
                image, points = hflip(image, points)
            if self._rng.random() < 0.5:
                image, points = vflip(image, points)
        if self.train and self.jitter is not None:
            image = self._colour(image)
        return np.ascontiguousarray(image), points


# --------------------------------------------------------------------------------------------- the Dataset


class DetectionCropDataset(torch.utils.data.Dataset):
    """Read :class:`CropRecord`\\ s and return ``(image (3, S, S) float in [0, 1], target dict)``.

    Args:
        records: crops to read (see :class:`CropSampler`); replace them with :meth:`set_records`.
        points: per slide path, ``(N, 3)`` arrays ``x, y, is_mitosis`` in level-0 px (:func:`points_by_slide`).
        transform: a :class:`DetectionTransform` (or any ``(image, points) → (image, points)``); ``None`` keeps
            the crop as read.
        pad_value: fill outside the slide (255, white glass, as in sliding-window inference).
        margin: extra output pixels read on each side (room for a random crop back to ``record.size``).
        box_um: side of a mitosis box in µm (12.5 µm = 50 px at 0.25 µm/px).
        opener: ``path → Slide`` (default :func:`default_opener`); opened slides are cached per worker.
        cache: keep each whole region in memory at the crop mpp after its first read (fast for region-sized
            inputs such as synthetic regions and mosaics; do not use on whole-slide images).

    Examples:
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> slide = ArraySlide(np.zeros((200, 200, 3), np.uint8), mpp=0.25)
        >>> ds = DetectionCropDataset([CropRecord("s", 0, 0, 64, 0.5, "mitosis")],
        ...     {"s": np.array([[40.0, 40.0, 1.0]])}, opener=lambda p: slide)
        >>> image, target = ds[0]
        >>> tuple(image.shape), target["boxes"].tolist()
        ((3, 64, 64), [[7.5, 7.5, 32.5, 32.5]])
    """

    def __init__(
        self,
        records: Sequence[CropRecord],
        points: Mapping[str, np.ndarray],
        *,
        transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        margin: int = 0,
        box_um: float = 12.5,
        opener: SlideOpener | None = None,
        cache: bool = False,
        pad_value: int = 255,
    ) -> None:
        self.records = list(records)
        self.cache = bool(cache)
        self.pad_value = int(pad_value)
        self._arrays: dict[tuple[str, float], tuple[np.ndarray, float]] = {}
        self.points = {k: np.asarray(v, float).reshape(-1, 3) for k, v in points.items()}
        self.transform = transform
        self.margin = int(margin)
        self.box_um = float(box_um)
        self.opener = opener or default_opener
        self._slides: dict[str, Slide] = {}

    def set_records(self, records: Sequence[CropRecord]) -> None:
        """Replace the crops (e.g. a fresh draw each epoch)."""
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def _slide(self, path: str) -> Slide:
        if path not in self._slides:
            self._slides[path] = self.opener(path)
        return self._slides[path]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_slides"] = {}  # file handles do not cross process boundaries
        state["_arrays"] = {}
        return state

    def _read_rect(self, record: CropRecord, x0: int, y0: int, side: int) -> np.ndarray:
        slide = self._slide(record.slide)
        if not self.cache:
            return slide.read_rect(x0, y0, side, side, mpp=record.mpp, pad_value=self.pad_value)
        key = (record.slide, record.mpp)
        if key not in self._arrays:
            scale = record.mpp / slide.mpp
            full = _whole_region(slide, scale, record.mpp, self.pad_value)
            self._arrays[key] = (full, scale)
        full, scale = self._arrays[key]
        out = np.full((side, side, 3), self.pad_value, np.uint8)
        ix, iy = round(x0 / scale), round(y0 / scale)
        sx0, sy0 = max(ix, 0), max(iy, 0)
        sx1, sy1 = min(ix + side, full.shape[1]), min(iy + side, full.shape[0])
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - iy : sy1 - iy, sx0 - ix : sx1 - ix] = full[sy0:sy1, sx0:sx1]
        return out

    def read(self, record: CropRecord) -> tuple[np.ndarray, np.ndarray]:
        """The crop (with margin) as an (H, W, 3) uint8 array and its points in crop pixels."""
        slide = self._slide(record.slide)
        scale = record.mpp / slide.mpp  # level-0 px per output px
        side = record.size + 2 * self.margin
        x0 = record.x - self.margin * scale
        y0 = record.y - self.margin * scale
        image = self._read_rect(record, round(x0), round(y0), side)
        pts = self.points.get(record.slide, np.zeros((0, 3)))
        local = pts.copy()
        local[:, 0] = (pts[:, 0] - round(x0)) / scale
        local[:, 1] = (pts[:, 1] - round(y0)) / scale
        keep = (
            (local[:, 0] > -side)
            & (local[:, 0] < 2 * side)
            & (local[:, 1] > -side)
            & (local[:, 1] < 2 * side)
        )
        return image, local[keep]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[index]
        try:
            image, pts = self.read(record)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read crop {record}: {exc}", path=record.slide) from exc
        if self.transform is not None:
            image, pts = self.transform(image, pts)
        elif self.margin:
            image, pts = crop(image, pts, self.margin, self.margin, record.size)
        h, w = image.shape[:2]
        target = points_to_target(pts, width=w, height=h, box_px=self.box_um / record.mpp, tumor=record.tumor)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        return tensor, target


def _whole_region(slide: Slide, scale: float, mpp: float, pad_value: int) -> np.ndarray:
    """The whole region at ``mpp``: a fast block mean for integer downsampling of a level-0 read, else
    ``read_rect``'s resampling."""
    w, h = slide.dimensions
    factor = round(scale)
    if factor >= 1 and abs(scale - factor) < 1e-6:
        base = slide.read_rect(0, 0, w, h, pad_value=pad_value)
        if factor == 1:
            return base
        hh, ww = (h // factor) * factor, (w // factor) * factor
        blocks = base[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor, 3).astype(np.float32)
        return np.clip(np.rint(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)
    return slide.read_rect(
        0, 0, max(1, round(w / scale)), max(1, round(h / scale)), mpp=mpp, pad_value=pad_value
    )


def collate_detection(
    batch: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Collate to ``(list of images, list of target dicts)`` (torchvision detection style).

    Examples:
        >>> imgs, tgts = collate_detection([(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})] * 2)
        >>> len(imgs), len(tgts)
        (2, 2)
    """
    images, targets = zip(*batch, strict=True) if batch else ((), ())
    return list(images), list(targets)
