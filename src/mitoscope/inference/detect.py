"""Whole-slide detection: overlapping tiles at the model's mpp, batched, read in parallel with computing.

The slide is cut into a grid of tiles (:mod:`mitoscope.inference.tiling`) at the detector's resolution; tiles
without tissue are skipped (:mod:`mitoscope.data.tissue`). Tiles are read and resampled ahead of the model by
``num_workers`` readers — threads of this process (``reader="thread"``, the default: faster than processes in
``benchmarks/detect_speed.py``) or DataLoader worker processes that each open the slide file themselves
(``reader="process"``) — while the main process runs the model,
so reading never idles the accelerator (``num_workers=0`` reads in the main thread). Only a few batches are in
flight at once: memory stays bounded whatever the slide size.

Each detected box becomes its centre point; a tile keeps only the points inside its *core* (the overlaps are
split between neighbours), and the points of all tiles are then merged by non-maximum suppression on centre
distance (higher score wins within ``merge_radius_um``, the MIDOG radius by default), so a figure on a tile
border is reported once. Points are returned in level-0 pixels of the slide.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mitoscope.data.tissue import slide_tissue_mask
from mitoscope.inference.base import InferenceModel, fold_batchnorm_for, load_checkpoint, read_ahead
from mitoscope.inference.base import find_checkpoint as find_checkpoint  # re-exported: detect's public name
from mitoscope.inference.classify import Classifier
from mitoscope.inference.tiling import Tile, select_tissue_tiles, tile_grid
from mitoscope.inference.verify import verify_candidates
from mitoscope.io.slide_base import ArraySlide
from mitoscope.io.slides import open_slide
from mitoscope.utils.device import resolve_device
from mitoscope.utils.errors import InputError
from mitoscope.utils.precision import precision_context, resolve_precision

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mitoscope.io.slide_base import Slide
    from mitoscope.models.checkpoint import ModelContract

#: Label of a detection at or above the threshold, and of a kept candidate below it (MIDOG output names).
POSITIVE_LABEL = "mitotic figure"
BELOW_THRESHOLD_LABEL = "non-mitotic figure"
DETECTION_COLUMNS = ("x", "y", "score", "label")

ProgressArg = bool | Callable[[int, int], None]


# --------------------------------------------------------------------------------------------- merging


def merge_by_distance(xy: np.ndarray, scores: np.ndarray, radius: float) -> np.ndarray:
    """Non-maximum suppression on centre distance: indices kept, by descending score.

    A point is dropped when a point with a higher score (ties: earlier index) lies within ``radius``
    (inclusive) and was itself kept.

    Examples:
        >>> merge_by_distance(np.array([[0, 0], [10, 0], [100, 0]]), np.array([0.5, 0.9, 0.7]), 20).tolist()
        [1, 2]
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    scores = np.asarray(scores, dtype=float)
    if len(xy) == 0:
        return np.zeros(0, dtype=int)
    from scipy.spatial import cKDTree

    order = np.argsort(-scores, kind="mergesort")
    tree = cKDTree(xy)
    suppressed = np.zeros(len(xy), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[tree.query_ball_point(xy[i], r=radius)] = True
    return np.asarray(keep, dtype=int)


# --------------------------------------------------------------------------------------------- tile reading


class _TileDataset:
    """Map-style dataset of tiles; in worker processes the slide file is opened anew (no shared handles)."""

    def __init__(self, slide: Slide, tiles: Sequence[Tile], *, mpp: float, pad_value: int) -> None:
        self.tiles = list(tiles)
        self.mpp = mpp
        self.pad_value = pad_value
        self._slide: Slide | None = slide
        self._reopen: tuple[str, float] | None = None
        path = getattr(slide, "path", "")
        if not isinstance(slide, ArraySlide) and path and Path(path).is_file():
            self._reopen = (str(path), float(slide.mpp))  # the mpp in use, even when it overrides the file's
        self._owner_pid = os.getpid()

    def slide(self) -> Slide:
        if self._reopen is not None and os.getpid() != self._owner_pid:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._slide = open_slide(self._reopen[0], mpp=self._reopen[1])
            self._owner_pid = os.getpid()
            self._reopen = None
        assert self._slide is not None
        return self._slide

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        t = self.tiles[i]
        arr = self.slide().read_rect(
            t.level0_x, t.level0_y, t.size, t.size, mpp=self.mpp, pad_value=self.pad_value
        )
        # CHW made contiguous by numpy: stacking channel-last views in torch is a slow strided copy
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), i


def _collate(items: list[tuple[Any, int]]) -> tuple[Any, list[int]]:
    import torch

    # numpy stacks with a plain single-threaded copy; torch.stack may use intra-op threads, which on an
    # oversubscribed CPU can make this copy 100x slower (measured: 89 ms vs 0.6 ms for 8 tiles of 256 px)
    return torch.from_numpy(np.stack([im.numpy() for im, _ in items])), [i for _, i in items]


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


READERS = ("process", "thread")


def iterate_tile_batches(
    slide: Slide,
    tiles: Sequence[Tile],
    *,
    mpp: float,
    batch_size: int = 8,
    num_workers: int = 2,
    pad_value: int = 255,
    pin_memory: bool = False,
    reader: str = "thread",
) -> Any:
    """Yield ``(uint8 tensor (B, 3, S, S), tile indices)`` batches in tile order.

    ``num_workers=0`` reads in the calling thread (no overlap with computing). Otherwise ``reader="process"``
    reads in ``num_workers`` DataLoader worker processes (each reopens the slide file), ``reader="thread"`` in
    ``num_workers`` threads of this process (no start-up cost; decoding and resampling release the GIL). Either
    way at most a few batches are read ahead, so memory stays bounded.

    Examples:
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> s = ArraySlide(np.zeros((100, 100, 3), np.uint8))
        >>> tiles = tile_grid(s.dimensions, slide_mpp=0.25, tile_size=64, overlap=0)
        >>> [(b.shape[0], idx) for b, idx in iterate_tile_batches(s, tiles, mpp=0.25, batch_size=3, num_workers=0)]
        [(3, [0, 1, 2]), (1, [3])]
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    dataset = _TileDataset(slide, tiles, mpp=mpp, pad_value=pad_value)
    workers = max(0, int(num_workers))
    size = max(1, int(batch_size))
    if workers and reader == "thread":
        chunks = [list(range(i, min(i + size, len(dataset)))) for i in range(0, len(dataset), size)]
        batches = read_ahead(lambda idx: _collate([dataset[i] for i in idx]), chunks, threads=workers)
        if pin_memory:
            batches = ((b.pin_memory(), i) for b, i in batches)
        yield from batches
        return
    from torch.utils.data import DataLoader

    loader: Any = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
    )
    yield from loader


# --------------------------------------------------------------------------------------------- detection


def _progress_callback(
    progress: ProgressArg, total: int
) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return (lambda done, total: None), lambda: None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("tiles", total=total)
    bar.start()
    return (lambda done, total: bar.update(task, completed=done)), bar.stop


def _tiles_for(
    slide: Slide,
    *,
    tile_size: int,
    overlap: int,
    mpp: float,
    region: tuple[int, int, int, int] | None,
    tissue: bool | tuple[np.ndarray, float],
    min_tissue: float,
) -> tuple[list[Tile], int]:
    tiles = tile_grid(
        slide.dimensions, slide_mpp=slide.mpp, mpp=mpp, tile_size=tile_size, overlap=overlap, region=region
    )
    total = len(tiles)
    if tissue is False:
        return tiles, total
    if tissue is True:
        mask, mask_mpp = slide_tissue_mask(slide)
    else:
        mask, mask_mpp = tissue
    origin = (region[0], region[1]) if region is not None else (0, 0)
    kept = select_tissue_tiles(
        tiles, mask, mask_mpp, slide_mpp=slide.mpp, min_tissue=min_tissue, region_origin=origin
    )
    return kept, total


def detect_slide(
    model: nn.Module,
    contract: ModelContract,
    slide: Slide,
    *,
    batch_size: int = 8,
    overlap: int = 64,
    device: str | torch.device = "cpu",
    threshold: float | None = None,
    num_workers: int = 2,
    reader: str = "thread",
    progress: ProgressArg = True,
    tissue: bool | tuple[np.ndarray, float] = True,
    min_tissue: float = 0.01,
    keep_below_threshold: bool = False,
    merge_radius_um: float = 7.5,
    tile_size: int | None = None,
    region: tuple[int, int, int, int] | None = None,
    pad_value: int = 255,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Detect mitotic figures in a whole slide (or a level-0 ``region`` of it).

    Args:
        model: a detector following the torchvision convention: ``model(list of float CHW tensors in [0, 1])``
            → list of ``{"boxes" (K, 4) xyxy in input px, "scores" (K,), "labels" (K,)}``, label 1 = mitosis.
        contract: its :class:`~mitoscope.models.checkpoint.ModelContract` (``mpp``, ``input_size``,
            ``thresholds["default"]``).
        slide: the slide; tiles are read at ``contract.mpp`` (resampled when the slide's mpp differs).
        batch_size: tiles per forward pass.
        overlap: overlap between tiles in model px.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a torch device.
        threshold: score threshold; ``None`` uses ``contract.thresholds["default"]`` (0.5 if absent).
        num_workers: tile readers working ahead of the model (0: read in the main thread, no overlap).
        reader: ``"thread"`` (threads) or ``"process"`` (DataLoader workers, each opening the slide).
        progress: ``True`` shows a transient progress bar, a callable gets ``(tiles_done, tiles_total)``.
        tissue: skip tiles without tissue (``True``: compute the mask; or a precomputed ``(mask, mask_mpp)``).
        min_tissue: least tissue fraction of a tile's core for it to be processed.
        keep_below_threshold: also return candidates below the threshold, labelled ``"non-mitotic figure"``
            (for AP / FROC / threshold tuning).
        merge_radius_um: points closer than this (µm) are merged, keeping the higher score.
        tile_size: tile edge in model px (default ``contract.input_size``).
        region: ``(x, y, width, height)`` in level-0 px to restrict detection to.
        pad_value: fill for areas outside the slide (255: white glass).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` for the model's arithmetic
            (:func:`mitoscope.utils.precision.resolve_precision`); points and scores come back in float32.

    Returns:
        DataFrame with ``x, y`` (level-0 px), ``score`` and ``label``, by descending score.
        ``attrs`` holds ``threshold``, ``tiles_total``, ``tiles_processed``, ``mpp`` (slide) and ``model_mpp``.

    Examples:
        >>> import torch
        >>> from mitoscope.io.slide_base import ArraySlide
        >>> from mitoscope.models.checkpoint import ModelContract
        >>> class Nothing(torch.nn.Module):
        ...     def forward(self, images):
        ...         return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
        ...                 for _ in images]
        >>> c = ModelContract("nothing", {}, "detection", input_size=64)
        >>> detect_slide(Nothing(), c, ArraySlide(np.zeros((100, 100, 3), np.uint8)), overlap=16,
        ...              num_workers=0, progress=False, tissue=False).attrs["tiles_processed"]
        4
    """
    import torch

    dev = resolve_device(device)
    arithmetic = resolve_precision(precision, dev)
    size = int(tile_size or contract.input_size)
    model_mpp = float(contract.mpp)
    thr = float(threshold) if threshold is not None else float(contract.thresholds.get("default", 0.5))
    tiles, total = _tiles_for(
        slide,
        tile_size=size,
        overlap=overlap,
        mpp=model_mpp,
        region=region,
        tissue=tissue,
        min_tissue=min_tissue,
    )
    report, finish = _progress_callback(progress, len(tiles))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ss: list[np.ndarray] = []
    done = 0
    was_training = model.training
    model.eval()
    try:
        report(0, len(tiles))
        batches = iterate_tile_batches(
            slide,
            tiles,
            mpp=model_mpp,
            batch_size=batch_size,
            num_workers=num_workers,
            reader=reader,
            pad_value=pad_value,
            pin_memory=dev.type == "cuda",
        )
        for batch, indices in batches:
            images = batch.to(dev, non_blocking=True).float().div_(255.0)
            with torch.inference_mode(), precision_context(arithmetic, dev):
                outputs = model(list(images.unbind(0)))
            for out, i in zip(outputs, indices, strict=True):
                x, y, s = _points_in_core(out, tiles[i])
                xs.append(x)
                ys.append(y)
                ss.append(s)
            done += len(indices)
            report(done, len(tiles))
    finally:
        finish()
        model.train(was_training)
    x = np.concatenate([*xs, np.empty(0)])
    y = np.concatenate([*ys, np.empty(0)])
    s = np.concatenate([*ss, np.empty(0)])
    keep = merge_by_distance(np.stack([x, y], axis=1), s, merge_radius_um / slide.mpp)
    x, y, s = x[keep], y[keep], s[keep]
    above = s >= thr
    if not keep_below_threshold:
        x, y, s, above = x[above], y[above], s[above], above[above]
    frame = pd.DataFrame(
        {
            "x": x,
            "y": y,
            "score": s,
            "label": np.where(above, POSITIVE_LABEL, BELOW_THRESHOLD_LABEL).astype(object),
        },
        columns=list(DETECTION_COLUMNS),
    )
    frame.attrs.update(
        threshold=thr,
        tiles_total=total,
        tiles_processed=len(tiles),
        mpp=float(slide.mpp),
        model_mpp=model_mpp,
        precision=arithmetic,
    )
    return frame


def _points_in_core(out: dict[str, Any], tile: Tile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = out["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
    scores = out["scores"].detach().float().cpu().numpy().reshape(-1)
    if "labels" in out and len(boxes):
        is_mitosis = out["labels"].detach().cpu().numpy().reshape(-1) == 1
        boxes, scores = boxes[is_mitosis], scores[is_mitosis]
    u = (boxes[:, 0] + boxes[:, 2]) / 2.0
    v = (boxes[:, 1] + boxes[:, 3]) / 2.0
    own = tile.owns(u, v)
    x, y = tile.to_level0(u[own], v[own])
    return x.astype(float), y.astype(float), scores[own].astype(float)


def fold_backbone_batchnorm(model: nn.Module, tile_size: int) -> nn.Module:
    """``model`` with the batch norms of its ``backbone`` (image tensor → feature maps) folded, in place, into the
    convolutions before them (:func:`mitoscope.models.fuse.fold_batchnorm`: the same features, faster); models
    without a ``backbone`` module are returned as they are.

    Examples:
        >>> from torch import nn
        >>> fold_backbone_batchnorm(nn.Identity(), 64)
        Identity()
    """
    from torch import nn

    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        return model
    model.backbone = fold_batchnorm_for(backbone, tile_size, next(model.parameters()).device)
    return model


class Detector(InferenceModel):
    """A detection model with its contract, ready to run on slides; optionally with a verifier.

    With a ``verifier`` (:mod:`mitoscope.inference.verify`) every detection at or above the contract's
    ``candidate`` threshold is read again at the verifier's resolution, and its score becomes the verifier's
    P(mitotic figure), decided at the ``verified`` threshold.

    Examples:
        >>> import torch
        >>> from mitoscope.models.checkpoint import ModelContract
        >>> d = Detector(torch.nn.Identity(), ModelContract("x", {}, "detection", input_size=256,
        ...              thresholds={"default": 0.6}))
        >>> d.threshold, d.tile_size
        (0.6, 256)
    """

    def __init__(
        self,
        model: nn.Module,
        contract: ModelContract,
        *,
        device: str | torch.device = "cpu",
        fuse_batchnorm: bool = True,
        verifier: Classifier | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__(device=device, precision=precision)
        self.model = model.to(self.device).eval()
        self.contract = contract
        if fuse_batchnorm:
            self.fold_batchnorm()
        import torch

        # channels-last: the faster memory layout for these convolutions (as for the classifier)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.verifier = verifier
        self.path: Path | None = None

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        verifier: str | os.PathLike[str] | None = "auto",
        precision: str = "auto",
    ) -> Detector:
        """Load a detector from a bundled name, a checkpoint file or a training run directory.

        ``verifier``: ``"auto"`` loads the verifier a bundled detector names (none for a checkpoint), a path
        or bundled name loads that one, ``None`` runs the detector alone. ``precision`` applies to both models
        (:func:`mitoscope.utils.precision.resolve_precision`).
        """
        dev = resolve_device(device)
        model, contract, ckpt = load_checkpoint(path, task="detection", device=dev)
        if verifier == "auto":
            verifier = contract.config.get("verifier") or None
        checker = Classifier.from_path(verifier, device=dev, precision=precision) if verifier else None
        if checker is not None and tuple(checker.class_names) != ("hard negative", "mitotic figure"):
            raise InputError(
                "the verifier must be a mitotic figure / hard negative classifier", path=verifier
            )
        det = cls(model, contract, device=dev, verifier=checker, precision=precision)
        det.path = ckpt
        return det

    def _fold_batchnorm(self) -> None:
        """The backbone (:func:`fold_backbone_batchnorm`), checked at the tile size."""
        self.model = fold_backbone_batchnorm(self.model, self.tile_size)

    @property
    def candidate_threshold(self) -> float:
        """The detector score a candidate needs before the verifier looks at it."""
        return float(self.contract.thresholds.get("candidate", self.contract.thresholds.get("default", 0.5)))

    @property
    def threshold(self) -> float:
        """The decision threshold: on the verifier's probability when there is one, else on the detector's
        score (from the contract; 0.5 if none)."""
        if self.verifier is not None:
            return float(self.contract.thresholds.get("verified", self.verifier.threshold))
        return float(self.contract.thresholds.get("default", 0.5))

    @property
    def merge_radius_um(self) -> float:
        """Detections closer than this are one figure: the contract's, chosen on validation data, with the
        verifier's own (``verified_merge_radius_um``) when there is one; else the MIDOG hit radius, 7.5 µm.

        Examples:
            >>> import torch
            >>> from mitoscope.models.checkpoint import ModelContract
            >>> contract = ModelContract("x", {}, "detection", input_size=256, mpp=0.5,
            ...                          config={"merge_radius_um": 10.0, "verified_merge_radius_um": 12.5})
            >>> d = Detector(torch.nn.Identity(), contract, precision="fp32")
            >>> d.merge_radius_um
            10.0
            >>> d.verifier = object()  # any verifier
            >>> d.merge_radius_um
            12.5
        """
        alone = float(self.contract.config.get("merge_radius_um", 7.5))
        if self.verifier is None:
            return alone
        return float(self.contract.config.get("verified_merge_radius_um", alone))

    @property
    def tile_size(self) -> int:
        """Tile edge in model px (the contract's input size)."""
        return int(self.contract.input_size)

    def describe(self, threshold: float | None = None) -> str:
        """The detector in one line: its file, device, tiles, precision, decision threshold (``threshold`` when
        given, else its own) and the verification stage.

        Examples:
            >>> import torch
            >>> from mitoscope.models.checkpoint import ModelContract
            >>> d = Detector(torch.nn.Identity(), ModelContract("x", {}, "detection", input_size=256, mpp=0.5),
            ...              precision="fp32")
            >>> d.describe(0.4)
            'detector None on cpu: 256 px tiles at 0.5 µm/px, fp32, threshold 0.400'
        """
        stage = "" if self.verifier is None else f" (verified at {self.verifier.mpp:g} µm/px)"
        chosen = self.threshold if threshold is None else threshold
        return (
            f"detector {self.path} on {self.device}: {self.tile_size} px tiles at {self.contract.mpp:g} µm/px, "
            f"{self.precision}, threshold {chosen:.3f}{stage}"
        )

    def detect(self, slide: Slide, **kwargs: Any) -> pd.DataFrame:
        """:func:`detect_slide` with this model, contract and device, then the verifier when there is one
        (``threshold`` and ``keep_below_threshold`` then apply to the verified score)."""
        kwargs.setdefault("device", self.device)
        kwargs.setdefault("precision", self.precision)
        kwargs.setdefault("merge_radius_um", self.merge_radius_um)
        if self.verifier is None:
            return detect_slide(self.model, self.contract, slide, **kwargs)
        threshold = kwargs.pop("threshold", None)
        keep = bool(kwargs.pop("keep_below_threshold", False))
        found = detect_slide(self.model, self.contract, slide, threshold=self.candidate_threshold, **kwargs)
        return verify_candidates(
            slide,
            found,
            self.verifier,
            threshold=self.threshold if threshold is None else float(threshold),
            keep_below_threshold=keep,
        )


def tiles_per_second(n_tiles: int, seconds: float) -> float:
    """Throughput helper used by benchmarks (NaN for a zero duration)."""
    return n_tiles / seconds if seconds > 0 else math.nan
