"""Classify patches as normal or atypical with a checkpoint, an ensemble or a training run.

:class:`Classifier` wraps an :class:`~mitoscope.engine.ensemble.Ensemble` (one model is an ensemble of one)
with the preprocessing its contract asks for (size, mpp, mean/std: the same evaluation transform as training)
and optional 8-view dihedral test-time augmentation. Reading and decoding overlap with computing: a background
thread (:func:`mitoscope.inference.base.prefetch`; with ``num_workers > 0`` fed by DataLoader worker processes)
prepares the next batch while the model runs on the current one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from mitoscope.data.datasets import PatchDataset
from mitoscope.data.stain import stain_views
from mitoscope.data.stain_normalization import StainNormalizedTransform
from mitoscope.data.transforms import build_patch_transform, normalize_batch, tta_views
from mitoscope.engine.ensemble import Ensemble, EnsembleOutput, load_ensemble
from mitoscope.inference.base import InferenceModel, fold_batchnorm_for, prefetch
from mitoscope.io.slide_base import Slide, as_rgb_uint8
from mitoscope.models.adapt import adapt_batchnorm
from mitoscope.models.checkpoint import ModelContract
from mitoscope.utils.device import resolve_device
from mitoscope.utils.precision import precision_context

if TYPE_CHECKING:
    from mitoscope.data.stain_normalization import StainNormalizer

READER_NICE = 10  # the patch reader yields to the model's threads (see base.read_ahead)
ADAPT_MAX_PATCHES = 2048  # patches that re-estimate batch-norm statistics (Classifier.adapt_batchnorm)


def resolve_reader_workers(num_workers: int | None, device: torch.device | str) -> int:
    """Reader processes of a run: ``None`` → 0 on the CPU (a background thread reads: the model is the
    bottleneck and worker processes would take its cores) and half the cores, at most 8, on a GPU (one
    thread cannot decode and resize as fast as the GPU classifies); explicit counts are kept.

    Examples:
        >>> resolve_reader_workers(None, "cpu"), resolve_reader_workers(3, "cuda")
        (0, 3)
    """
    if num_workers is not None:
        return int(num_workers)
    if torch.device(device).type == "cpu":
        return 0
    return min(8, max(1, (os.cpu_count() or 2) // 2))


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


class Classifier(InferenceModel):
    """Atypical-vs-normal patch classifier (one checkpoint or an ensemble of fold models).

    Args:
        ensemble: the models.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch device.
        tta: average the 8 dihedral views (rotations × flips).
        stain_tta: also average over re-stained copies of each patch (haematoxylin and eosin each 20 % lighter
            and darker, :data:`mitoscope.data.stain.STAIN_TTA_SCALES`): 5 × the views.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``
            (:func:`~mitoscope.utils.precision.resolve_precision`); the models run in channels-last memory
            format, which the CPU's convolutions prefer.
        fuse_batchnorm: fold batch norms into the convolutions before them (:meth:`fold_batchnorm`).
        stain_normalizer: map every patch onto a reference stain first
            (:class:`mitoscope.data.stain_normalization.StainNormalizer`, fitted).

    Examples:
        >>> from torch import nn
        >>> class Half(nn.Module):
        ...     def forward(self, x):
        ...         return {"prob": torch.full((x.shape[0],), 0.5)}
        >>> c = ModelContract(architecture="x", kwargs={}, task="classification", input_size=32)
        >>> clf = Classifier(Ensemble([Half()], [c]), tta=True)
        >>> clf.predict_arrays([np.zeros((40, 40, 3), np.uint8), np.zeros((32, 32), np.uint8)]).round(3).tolist()
        [0.5, 0.5]
        >>> clf.label_names(np.array([1, 0]))
        ['atypical', 'normal']
    """

    def __init__(
        self,
        ensemble: Ensemble,
        *,
        device: str | torch.device = "cpu",
        tta: bool = False,
        stain_tta: bool = False,
        precision: str = "auto",
        fuse_batchnorm: bool = True,
        stain_normalizer: StainNormalizer | None = None,
    ) -> None:
        super().__init__(device=device, precision=precision)
        self.ensemble = ensemble.to(self.device)
        self.tta = bool(tta)
        self.stain_tta = bool(stain_tta)
        self.reader_nice = READER_NICE
        c = ensemble.contract
        if fuse_batchnorm:
            self.fold_batchnorm()
        for member in self.ensemble.models:
            member.to(memory_format=torch.channels_last)
        # the evaluation transform of training: ``(rgb, mask, rng) -> (tensor, mask)``; batch pipelines read
        # uint8 pixels with the same crop/resize and normalise whole batches (normalize_batch)
        size, mean, std, crop = int(c.input_size), tuple(c.mean), tuple(c.std), _eval_crop(c)
        self._transform: Callable[..., tuple[torch.Tensor, Any]] = build_patch_transform(
            train=False, size=size, mean=mean, std=std, crop=crop
        )
        self._pixels: Callable[..., tuple[torch.Tensor, Any]] = build_patch_transform(
            train=False, size=size, mean=mean, std=std, crop=crop, normalize=False
        )
        self._rng = np.random.default_rng(0)  # the evaluation transform draws nothing
        self.stain_normalizer = stain_normalizer
        if stain_normalizer is not None:
            self._transform = StainNormalizedTransform(stain_normalizer, self._transform)
            self._pixels = StainNormalizedTransform(stain_normalizer, self._pixels)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        tta: bool = False,
        *,
        stain_tta: bool = False,
        rule: str | None = None,
        tta_reduce: str = "logits",
        precision: str = "auto",
        fuse_batchnorm: bool = True,
        threshold: float | None = None,
        stain_normalizer: StainNormalizer | None = None,
    ) -> Classifier:
        """Load from a checkpoint, an ``ensemble.json``, an ensemble directory or a training RUN directory.

        Args:
            path: where the model(s) are.
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch device.
            tta: 8-view test-time augmentation.
            stain_tta: stain test-time augmentation (see the class).
            rule: override the ensemble rule (``"majority"`` or ``"mean"``).
            tta_reduce: merge TTA views by mean ``"logits"`` or mean ``"prob"``.
            precision: see :func:`~mitoscope.utils.precision.resolve_precision`.
            fuse_batchnorm: fold batch norms into the convolutions before them (:meth:`fold_batchnorm`).
            threshold: decide at this P(atypical) instead of the trained threshold(s)
                (:meth:`~mitoscope.engine.ensemble.Ensemble.override_threshold`).
            stain_normalizer: see the class.

        Examples:
            >>> Classifier.from_path("no/such/model.pt")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            mitoscope.utils.errors.InputError: no/such/model.pt: model path not found ...
        """
        device = resolve_device(device)
        ens = load_ensemble(path, device=device, rule=rule, tta_reduce=tta_reduce)
        if threshold is not None:
            ens.override_threshold(threshold)
        return cls(
            ens,
            device=device,
            tta=tta,
            stain_tta=stain_tta,
            precision=precision,
            fuse_batchnorm=fuse_batchnorm,
            stain_normalizer=stain_normalizer,
        )

    def _fold_batchnorm(self) -> None:
        """Every member, checked at the input size."""
        size = self.input_size
        self.ensemble.models = [fold_batchnorm_for(m, size, self.device) for m in self.ensemble.models]

    def adapt_batchnorm(
        self,
        catalog: pd.DataFrame,
        *,
        max_patches: int | None = ADAPT_MAX_PATCHES,
        batch_size: int = 64,
        num_workers: int | None = None,
        source: object = None,
        seed: int = 0,
        include_frozen: bool = False,
        fold: bool = True,
    ) -> int:
        """Re-estimate every member's batch-norm statistics on the patches of ``catalog`` (AdaBN).

        For a set from another lab or scanner (:mod:`mitoscope.models.adapt`): the patches are read like
        :meth:`predict_catalog` reads them, in random order, at most ``max_patches`` of them (a random subset;
        ``None``: all), in float32; ``include_frozen`` as in :func:`~mitoscope.models.adapt.adapt_batchnorm`.
        Call it on a classifier built with ``fuse_batchnorm=False``; afterwards the batch norms are folded as
        usual (``fold=False`` keeps them). A patch's probability then depends on the set it was adapted to.

        Returns:
            The number of patches the statistics came from.

        Raises:
            RuntimeError: the batch norms are already folded.
            ValueError: too few patches (:data:`mitoscope.models.adapt.MIN_PATCHES`).
        """
        if self.batchnorm_folded:
            raise RuntimeError(
                "batch norms are already folded; adapt them before folding (fuse_batchnorm=False)"
            )
        order = np.random.default_rng(seed).permutation(len(catalog))
        if max_patches is not None:
            order = order[:max_patches]
        subset = catalog.iloc[order]
        loader = self._catalog_loader(subset, batch_size=batch_size, num_workers=num_workers, source=source)
        # uint8 batches; kept in memory only when several members need them
        pixels: Iterable[torch.Tensor] = list(loader) if len(self.ensemble) > 1 else loader
        seen = 0
        for member in self.ensemble.models:
            batches = (self._model_input(batch) for batch in pixels)
            seen = adapt_batchnorm(member, batches, include_frozen=include_frozen)
        if fold:
            self.fold_batchnorm()
        return seen

    # ------------------------------------------------------------------ properties
    @property
    def contract(self) -> ModelContract:
        """The contract shared by the ensemble's models."""
        return self.ensemble.contract

    @property
    def threshold(self) -> float:
        """Decision threshold on P(atypical) (the ensemble's; for one model its ``thresholds["default"]``)."""
        return self.ensemble.threshold

    @property
    def input_size(self) -> int:
        """Patch side in pixels the model expects."""
        return int(self.contract.input_size)

    @property
    def mpp(self) -> float:
        """Microns per pixel the model was trained at."""
        return float(self.contract.mpp)

    @property
    def class_names(self) -> tuple[str, ...]:
        """``(negative, positive)`` class names, normally ``("normal", "atypical")``."""
        return tuple(self.contract.class_names)

    def label_names(self, labels: np.ndarray) -> list[str]:
        """Map 0/1 labels to class names (see the class example)."""
        names = self.class_names
        return [names[int(v)] for v in labels]

    # ------------------------------------------------------------------ core
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """One RGB uint8 patch → the normalised ``(3, S, S)`` tensor the model expects."""
        return self._transform(as_rgb_uint8(image), None, self._rng)[0]

    def _patch_pixels(self, image: np.ndarray) -> torch.Tensor:
        """One RGB patch → its cropped/resized uint8 ``(S, S, 3)`` pixels (normalised later, per batch)."""
        return self._pixels(as_rgb_uint8(image), None, self._rng)[0]

    def _model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on the device, normalised if it holds uint8 ``(N, S, S, 3)`` pixels."""
        batch = batch.to(self.device, non_blocking=True)
        if batch.dtype == torch.uint8:
            batch = normalize_batch(batch, self.contract.mean, self.contract.std)
        return batch

    def _views(self, batch: torch.Tensor, dihedral: bool) -> list[torch.Tensor]:
        """The model inputs for one batch: its stain variants (with ``stain_tta``; the unchanged batch first),
        each in its 8 dihedral views when ``dihedral``, in that order (view ``8·s + d``)."""
        if self.stain_tta:
            if batch.dtype != torch.uint8:
                raise ValueError("stain test-time augmentation needs uint8 pixel batches (N, S, S, 3)")
            variants = stain_views(batch.to(self.device, non_blocking=True))
        else:
            variants = [batch]
        inputs = [self._model_input(v) for v in variants]
        return [view for x in inputs for view in tta_views(x)] if dihedral else inputs

    @torch.no_grad()
    def predict_batch(self, batch: torch.Tensor) -> EnsembleOutput:
        """Run the ensemble (with TTA if enabled) on a preprocessed batch: normalised ``(N, 3, S, S)`` or uint8
        ``(N, S, S, 3)`` pixels (stain TTA needs the pixels)."""
        views = self._views(batch, self.tta)
        with precision_context(self.precision, self.device):
            return self.ensemble.predict(views)

    def _run(self, batches: Iterable[torch.Tensor]) -> EnsembleOutput:
        outs = [self.predict_batch(b) for b in prefetch(batches, nice=self.reader_nice)]
        if not outs:
            m = len(self.ensemble)
            empty_f, empty_i = np.zeros(0), np.zeros(0, dtype=np.int64)
            return EnsembleOutput(empty_f, empty_i, np.zeros((0, m)), empty_i)
        return EnsembleOutput(
            prob=np.concatenate([o.prob for o in outs]),
            label=np.concatenate([o.label for o in outs]),
            member_probs=np.concatenate([o.member_probs for o in outs]),
            votes=np.concatenate([o.votes for o in outs]),
        )

    def predict_arrays_full(self, images: Sequence[np.ndarray], *, batch_size: int = 64) -> EnsembleOutput:
        """Like :meth:`predict_arrays` but returns probabilities, labels, member probabilities and votes."""

        def batches() -> Iterator[torch.Tensor]:
            for idx in _chunks(len(images), batch_size):
                yield torch.stack([self._patch_pixels(images[i]) for i in idx])

        return self._run(batches())

    def predict_arrays(self, images: Sequence[np.ndarray], *, batch_size: int = 64) -> np.ndarray:
        """P(atypical) for RGB patches (any size: they are resized/cropped like the evaluation transform does).

        Args:
            images: RGB (or grey/RGBA) uint8 arrays ``(H, W, C)``.
            batch_size: patches per forward pass.

        Returns:
            ``(N,)`` float array of P(atypical) (the ensemble mean).

        Examples:
            >>> clf.predict_arrays([np.zeros((128, 128, 3), np.uint8)])  # doctest: +SKIP
            array([0.42])
        """
        return self.predict_arrays_full(images, batch_size=batch_size).prob

    def predict_catalog(
        self,
        catalog: pd.DataFrame,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        source: object = None,
    ) -> pd.DataFrame:
        """Classify every record of a catalog (patch images, stack pages or slide points).

        Records are read by the training dataset (:class:`mitoscope.data.datasets.PatchDataset`), so the
        pixels the model sees at inference are the pixels it saw in validation.

        Args:
            catalog: a mitoscope catalog (see :mod:`mitoscope.io.catalog`).
            batch_size: patches per forward pass.
            num_workers: DataLoader worker processes for reading (0: a background thread reads; ``None``:
                :func:`resolve_reader_workers` picks by device).
            source: what to name in read errors (e.g. the catalog file).

        Returns:
            A frame aligned with ``catalog`` (same index) with columns ``image, page, slide, x, y``,
            ``p_atypical``, ``label`` (predicted class name), ``votes`` and ``p_model_<k>`` per ensemble member.

        Examples:
            >>> clf.predict_catalog(catalog)[["image", "p_atypical", "label"]]  # doctest: +SKIP
        """
        loader = self._catalog_loader(catalog, batch_size=batch_size, num_workers=num_workers, source=source)
        out = self._run(loader)
        if len(out.prob) != len(catalog):
            raise RuntimeError(f"read {len(out.prob)} patches for {len(catalog)} catalog rows")
        frame = catalog.loc[:, [c for c in ("image", "page", "slide", "x", "y") if c in catalog]].copy()
        frame["p_atypical"] = out.prob
        frame["label"] = self.label_names(out.label)
        frame["votes"] = out.votes
        if len(self.ensemble) > 1:
            for k in range(out.member_probs.shape[1]):
                frame[f"p_model_{k}"] = out.member_probs[:, k]
        return frame

    def _catalog_loader(
        self, catalog: pd.DataFrame, *, batch_size: int, num_workers: int | None, source: object = None
    ) -> Iterable[torch.Tensor]:
        from torch.utils.data import DataLoader

        dataset = PatchDataset(
            catalog,
            transform=self._pixels,
            size=self.input_size,
            mpp=self.mpp,
            targets=("label",),
            source=source,
        )
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=resolve_reader_workers(num_workers, self.device),
            persistent_workers=False,
        )
        return (_images_of(batch) for batch in loader)

    def classify_points(
        self,
        slide: Slide,
        points_df: pd.DataFrame,
        *,
        batch_size: int = 64,
        return_labels: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """P(atypical) of figures at ``(x, y)`` points of a slide (level-0 pixels).

        Each patch is ``input_size`` px at the classifier's mpp, centred on the point
        (``slide.read_centered(x, y, input_size, mpp=contract.mpp)``); reading runs in a background thread.

        Args:
            slide: an open slide.
            points_df: frame with ``x`` and ``y`` columns (level-0 pixels).
            batch_size: patches per forward pass.
            return_labels: also return the ensemble's 0/1 labels.

        Returns:
            ``(N,)`` P(atypical), or ``(probs, labels)`` when ``return_labels``.

        Examples:
            >>> from mitoscope.io.slide_base import ArraySlide
            >>> probs = clf.classify_points(ArraySlide(region), detections)  # doctest: +SKIP
        """
        missing = [c for c in ("x", "y") if c not in points_df.columns]
        if missing:
            raise ValueError(f"points_df lacks column(s) {missing}")
        xs = points_df["x"].to_numpy(dtype=np.float64)
        ys = points_df["y"].to_numpy(dtype=np.float64)
        size, mpp = self.input_size, self.mpp

        def batches() -> Iterator[torch.Tensor]:
            for idx in _chunks(len(xs), batch_size):
                crops = [slide.read_centered(xs[i], ys[i], size, mpp=mpp) for i in idx]
                yield torch.stack([self._patch_pixels(c) for c in crops])

        out = self._run(batches())
        return (out.prob, out.label) if return_labels else out.prob


def _eval_crop(contract: ModelContract) -> int | None:
    """The centre crop the training recipe applied before resizing (``data.augment.crop``), if any."""
    data = (contract.config or {}).get("data") or {}
    augment = data.get("augment") or {}
    crop = augment.get("crop") if isinstance(augment, dict) else None
    return int(crop) if crop else None


def _images_of(batch: Any) -> torch.Tensor:
    """The image tensor of a DataLoader batch (a tensor, an ``(images, targets)`` pair or a dict)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("image", "images"):
            if key in batch:
                return batch[key]
        raise KeyError(f"dataset batch has no 'image' key (keys: {sorted(batch)})")
    if isinstance(batch, list | tuple):
        return batch[0]
    raise TypeError(f"unexpected dataset batch type {type(batch).__name__}")
