"""Torch datasets over catalog records: read, (cache,) mask, transform — nothing else.

A record (one catalog row) is either a patch image file (``image``), a page of a multi-page TIFF stack
(``image`` + ``page`` ≥ 0, as in MIDOG 2025 Track 2), or a point on a slide (``slide`` + ``x``, ``y``; read
centred at the model's mpp). The sampler decides which records are drawn; the transform (augmentation,
normalisation, resizing) is passed in (MONAI ``PatchWSIDataset`` / timm ``ImageDataset`` style).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mitoscope.data.patch_cache import PatchCache
from mitoscope.io.catalog import validate_catalog
from mitoscope.io.image_slide import read_image
from mitoscope.io.slide_base import as_rgb_uint8
from mitoscope.io.slides import open_slide
from mitoscope.utils.errors import InputError

#: ``transform(rgb_uint8 (H, W, 3), mask (H, W) bool or None, rng) -> (image tensor, mask tensor or None)``
PatchTransform = Callable[[np.ndarray, np.ndarray | None, np.random.Generator], tuple[torch.Tensor, Any]]
#: ``hard_fn(expert votes, label) -> int`` hardness class of a record
HardFn = Callable[[Sequence[Any], float], int]

KNOWN_TARGETS = frozenset({"label", "mask", "experts", "hard"})


def identity_transform(rgb: Any, mask: Any = None, rng: Any = None) -> tuple[Any, Any]:
    """The no-op transform, for a :class:`PatchDataset` that is only read with :meth:`PatchDataset.load_rgb`."""
    return rgb, mask


def read_stack_page(path: str | os.PathLike[str], page: int) -> np.ndarray:
    """Page ``page`` of a multi-page TIFF as RGB uint8.

    Examples:
        >>> import tempfile, pathlib, tifffile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.tiff"
        >>> tifffile.imwrite(p, np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(3)]))
        >>> int(read_stack_page(p, 2)[0, 0, 0])
        2
    """
    import tifffile

    if not os.path.isfile(path):
        raise InputError("TIFF stack not found", path=path)
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) == 1 and tif.series and tif.series[0].ndim == 4:
                series = tif.series[0].asarray()  # one page holding an (N, H, W, C) array
                if page >= series.shape[0]:
                    raise IndexError(page)
                arr = series[page]
            else:
                if page >= len(tif.pages):
                    raise IndexError(page)
                arr = tif.pages[page].asarray()
    except IndexError:
        raise InputError(f"page {page} does not exist", path=path) from None
    except Exception as exc:
        raise InputError(f"cannot read TIFF page {page} ({exc})", path=path) from exc
    return as_rgb_uint8(arr, source=path)


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def expert_matrix(experts: Iterable[Sequence[Any]], n_experts: int | None = None) -> np.ndarray:
    """Votes as a float matrix ``(N, E)``: 1 positive, 0 negative, -1 missing.

    Examples:
        >>> expert_matrix([(1, 0, None), (1,)]).tolist()
        [[1.0, 0.0, -1.0], [1.0, -1.0, -1.0]]
    """
    rows = [tuple(v) if isinstance(v, list | tuple | np.ndarray) else () for v in experts]
    width = max((len(r) for r in rows), default=0) if n_experts is None else n_experts
    out = np.full((len(rows), width), -1.0, dtype=np.float32)
    for i, row in enumerate(rows):
        for j, v in enumerate(row[:width]):
            f = _float_or_nan(v)
            if not math.isnan(f) and f >= 0:
                out[i, j] = 1.0 if f >= 0.5 else 0.0
    return out


class PatchDataset(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """Catalog records as ``(image_tensor, targets)`` pairs for a classifier.

    Args:
        catalog: a catalog DataFrame (see :mod:`mitoscope.io.catalog`); the index is kept for error messages.
        transform: ``(rgb, mask, rng) -> (tensor, mask_tensor)``, e.g. ``build_patch_transform(...)``.
        size: patch side in output pixels for records read from slides (patch files are read whole and the
            transform resizes or crops them).
        mpp: resolution at which slide points are read (default: the slide's own).
        targets: which targets to return, a subset of ``{"label", "mask", "experts", "hard"}``.
        mask_fn: ``rgb -> bool mask`` (e.g. ``mitoscope.data.masks.point_mask``) when ``"mask"`` is requested.
        cache: a :class:`PatchCache` for decoded patches (each worker process keeps its own copy).
        rng_seed: base seed of the per-sample augmentation RNG, derived from ``(seed, epoch, index)``.
        hard_fn: ``(votes, label) -> class`` for the ``"hard"`` target (default: the catalog's ``hard`` column).
        n_experts: width of the ``"experts"`` target (default: the most votes of any record).
        root: directory that relative ``image``/``slide`` paths are resolved against.

    Targets: ``label`` float (1 atypical, 0 normal, -1 unlabelled), ``mask`` from the transform, ``experts``
    float ``(E,)`` with -1 for a missing vote, ``hard`` int64.

    Examples:
        >>> from mitoscope.io.catalog import make_catalog
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> slide = ArraySlide(np.zeros((64, 64, 3), np.uint8), mpp=0.25)
        >>> cat = make_catalog([{"slide": "s", "x": 32, "y": 32, "label": "atypical", "experts": (1, 0)}])
        >>> tf = lambda rgb, mask, rng: (torch.from_numpy(rgb).permute(2, 0, 1).float(), None)
        >>> ds = PatchDataset(cat, transform=tf, size=16, targets={"label", "experts"}, slides={"s": slide})
        >>> x, t = ds[0]
        >>> tuple(x.shape), float(t["label"]), t["experts"].tolist()
        ((3, 16, 16), 1.0, [1.0, 0.0])
    """

    def __init__(
        self,
        catalog: pd.DataFrame,
        *,
        transform: PatchTransform,
        size: int,
        mpp: float | None = None,
        targets: Iterable[str] = ("label",),
        mask_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        cache: PatchCache | None = None,
        rng_seed: int = 0,
        hard_fn: HardFn | None = None,
        n_experts: int | None = None,
        root: str | os.PathLike[str] | None = None,
        slides: dict[str, Any] | None = None,
        source: object = None,
    ) -> None:
        validate_catalog(catalog)
        self.targets = set(targets)
        unknown = self.targets - KNOWN_TARGETS
        if unknown:
            raise ValueError(f"unknown targets {sorted(unknown)}; known: {sorted(KNOWN_TARGETS)}")
        if "mask" in self.targets and mask_fn is None:
            raise ValueError("the 'mask' target needs a mask_fn (e.g. mitoscope.data.masks.point_mask)")
        self.catalog = catalog
        self.transform = transform
        self.size = int(size)
        self.mpp = mpp
        self.mask_fn = mask_fn
        self.cache = cache
        self.rng_seed = int(rng_seed)
        self.epoch = 0
        self.root = Path(root) if root is not None else None
        self.source = source
        self._slides: dict[str, Any] = dict(slides or {})
        self._given_slides = set(self._slides)
        self.labels = catalog["target"].to_numpy(dtype=np.float32)
        # plain per-record columns: ``catalog.iloc[i]`` would build a pandas Series per read (twice with a cache)
        self._images = [str(v or "") for v in catalog["image"]]
        self._pages = catalog["page"].to_numpy(dtype=np.int64)
        self._slide_keys = [str(v or "") for v in catalog["slide"]]
        self._xs = catalog["x"].to_numpy(dtype=np.float64)
        self._ys = catalog["y"].to_numpy(dtype=np.float64)
        self.experts = expert_matrix(catalog["experts"], n_experts)
        if hard_fn is None:
            self.hard = catalog["hard"].to_numpy(dtype=np.int64)
        else:
            self.hard = np.array(
                [
                    hard_fn(tuple(v), float(lab))
                    for v, lab in zip(catalog["experts"], self.labels, strict=True)
                ],
                dtype=np.int64,
            )

    def __len__(self) -> int:
        return len(self.catalog)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` for plain integer indices.

        DataLoader workers hold copies of the dataset: with persistent workers they do not see this call, so
        the training loader uses :class:`~mitoscope.data.samplers.EpochTaggedSampler`, whose ``(index, epoch)``
        items carry the epoch to every worker.
        """
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # open slides hold file handles: each worker opens its own
        state["_slides"] = {k: v for k, v in self._slides.items() if k in self._given_slides}
        return state

    # ----------------------------------------------------------------------------------------------------------

    def _path(self, value: str) -> Path:
        p = Path(value)
        if self.root is not None and not p.is_absolute():
            p = self.root / p
        return p

    def _row(self, index: int) -> int:
        row_id = self.catalog.index[index]
        return int(row_id) if isinstance(row_id, int | np.integer) else int(index)

    def _open_slide(self, key: str) -> Any:
        slide = self._slides.get(key)
        if slide is None:
            slide = open_slide(self._path(key))
            self._slides[key] = slide
        return slide

    def _read(self, index: int) -> np.ndarray:
        image, page = self._images[index], int(self._pages[index])
        if image:
            path = self._path(image)
            if page >= 0:
                return read_stack_page(path, page)
            return read_image(path)
        slide = self._slide_keys[index]
        x, y = float(self._xs[index]), float(self._ys[index])
        if not slide or math.isnan(x) or math.isnan(y):
            raise ValueError("record has neither an image file nor a slide point (slide, x, y)")
        sl = self._open_slide(slide)
        return np.ascontiguousarray(sl.read_centered(x, y, self.size, mpp=self.mpp))

    def _key(self, index: int) -> Hashable:
        # a string: NaN coordinates would make tuple keys unequal to themselves
        return (
            f"{self._images[index]}|{int(self._pages[index])}|{self._slide_keys[index]}|"
            f"{float(self._xs[index])!r}|{float(self._ys[index])!r}|{self.size}|{self.mpp}"
        )

    def load_rgb(self, index: int) -> np.ndarray:
        """The decoded RGB uint8 patch of record ``index`` (through the cache).

        Raises:
            InputError: the record cannot be read; the message names the file and the catalog row.
        """
        try:
            if self.cache is None:
                return self._read(index)
            # a copy: the cached array stays read-only whatever the transform does in place
            return self.cache.get_or_load(self._key(index), lambda: self._read(index)).copy()
        except Exception as exc:
            rec = self.catalog.iloc[index]
            what = rec["image"] or rec["slide"] or "record"
            msg = str(exc) if isinstance(exc, InputError) else f"cannot read {what!s} ({exc})"
            raise InputError(msg, path=self.source or "catalog", row=self._row(index)) from exc

    def _mask(self, index: int, rgb: np.ndarray) -> np.ndarray:
        assert self.mask_fn is not None
        if self.cache is None:
            return np.asarray(self.mask_fn(rgb), dtype=bool)
        key = f"{self._key(index)}|mask"
        return self.cache.get_or_load(key, lambda: np.asarray(self.mask_fn(rgb), dtype=bool)).copy()  # type: ignore[misc]

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The augmentation RNG of sample ``index`` in ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.rng_seed & 0xFFFFFFFF, epoch, int(index)])

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sample ``item``: an index, or ``(index, epoch)`` as :class:`~mitoscope.data.samplers.EpochTaggedSampler`
        yields."""
        if isinstance(item, tuple):
            index, epoch = int(item[0]), int(item[1])
        else:
            index, epoch = int(item), self.epoch
        rgb = self.load_rgb(index)
        mask = None
        if "mask" in self.targets:
            mask = self._mask(index, rgb)
        image, mask_t = self.transform(rgb, mask, self.rng(index, epoch))
        targets: dict[str, torch.Tensor] = {}
        if "label" in self.targets:
            targets["label"] = torch.tensor(self.labels[index], dtype=torch.float32)
        if "experts" in self.targets:
            targets["experts"] = torch.from_numpy(self.experts[index].copy())
        if "hard" in self.targets:
            targets["hard"] = torch.tensor(self.hard[index], dtype=torch.int64)
        if "mask" in self.targets:
            if mask_t is None:
                raise ValueError("the transform returned no mask although the 'mask' target is requested")
            targets["mask"] = torch.as_tensor(mask_t)
        return image, targets
